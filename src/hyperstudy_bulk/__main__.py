"""`python -m hyperstudy_bulk` is the `hyperstudy-bulk` command."""

from hyperstudy_bulk.cli import entry

raise SystemExit(entry())
