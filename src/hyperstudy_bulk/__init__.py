"""hyperstudy-bulk: archive whole HyperStudy experiments, fast and resumably."""

__version__ = "0.1.0"
