"""Reading an archive for analysis: DataFrames, Parquet/CSV export, the HTML report.

The only package that imports pandas, pyarrow or matplotlib; each is imported by the module
that needs it, so the downloader never pays for them.
"""
