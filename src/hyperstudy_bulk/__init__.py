"""hyperstudy-bulk: archive whole HyperStudy experiments, fast and resumably."""

from hyperstudy_bulk._version import __version__
from hyperstudy_bulk.api import Downloader, download
from hyperstudy_bulk.config import ApiKey, Granularity, Settings, load_settings
from hyperstudy_bulk.errors import (
    ApiError,
    AuthError,
    ConfigError,
    ContractError,
    HyperStudyBulkError,
    TransportError,
)
from hyperstudy_bulk.manifest import Manifest, load_manifest

_ANALYSIS = ("iter_frames", "load")
"""Re-exported lazily: they import pandas, which the downloader does not need."""


def __getattr__(name: str) -> object:
    if name in _ANALYSIS:
        from hyperstudy_bulk.analysis import frames

        return getattr(frames, name)
    raise AttributeError(f"module 'hyperstudy_bulk' has no attribute {name!r}")


__all__ = [
    "ApiError",
    "ApiKey",
    "AuthError",
    "ConfigError",
    "ContractError",
    "Downloader",
    "Granularity",
    "HyperStudyBulkError",
    "Manifest",
    "Settings",
    "TransportError",
    "__version__",
    "download",
    "iter_frames",
    "load",
    "load_manifest",
    "load_settings",
]
