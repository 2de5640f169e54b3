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
    "load_manifest",
    "load_settings",
]
