"""One exception tree for the whole library.

Every failure a user can see is a `HyperStudyBulkError`; the CLI maps the subclasses to exit
codes. No class here imports aiohttp: transport failures are translated in `client.py`.
Messages never contain the API key (`client.py` redacts server-supplied text before it gets here).
"""

from __future__ import annotations


class HyperStudyBulkError(Exception):
    """Base class: a failure with a message fit to show a user as one line."""


class ConfigError(HyperStudyBulkError):
    """A bad flag, environment variable, config file value or output folder (exit code 2)."""


class ApiError(HyperStudyBulkError):
    """The API answered with an error status.

    `status` is the HTTP status; `code` and `details` come from the contract's error envelope
    when the body had one. `retry_after` (seconds) is set when the server sent Retry-After.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int,
        code: str | None = None,
        details: object = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.details = details
        self.retry_after = retry_after

    @property
    def transient(self) -> bool:
        """429 and 5xx may succeed when repeated; every other status is the final answer."""
        return self.status == 429 or self.status >= 500


class AuthError(ApiError):
    """401 (the key is wrong, expired or revoked) or 403 (the key lacks a scope or access)."""


class TransportError(HyperStudyBulkError):
    """No usable response: connection refused or reset, timeout, truncated or undecodable body.

    Always worth retrying; `cause` is a short stable label used in retry counters.
    """

    def __init__(self, message: str, *, cause: str) -> None:
        super().__init__(message)
        self.cause = cause


class ContractError(HyperStudyBulkError):
    """A response that breaks the API contract (e.g. `data` not a list, nextOffset going
    backwards). Ends the stream: retrying would not make the archive right."""


class StorageError(HyperStudyBulkError):
    """The archive could not be written (disk full, file too large, permissions). Ends the
    run: every stream would fail the same way. What is on disk stays consistent."""

    @classmethod
    def from_os_error(cls, error: OSError) -> StorageError:
        where = f" {error.filename}" if error.filename else ""
        return cls(
            f"cannot write{where}: {error.strerror or error}; free some space (or choose another "
            "--out) and run the same command again to resume"
        )


class LocksUnavailable(StorageError):
    """The file system refuses file locks (ENOLCK, EOPNOTSUPP, ENOSYS: some NFS and FUSE
    mounts). Callers that can work without the lock say so and carry on."""


class BusyError(HyperStudyBulkError):
    """Another run (process or thread) is writing the same archive right now (exit code 5).
    Nothing was read or written: the other run's work is safe."""


class TlsError(HyperStudyBulkError):
    """The server's TLS certificate could not be verified. Ends the run: it is the base URL
    (or the network in between) that is wrong, and verification is never switched off."""


def ends_run(error: BaseException) -> bool:
    """Failures that stop every stream, not just the one that met them."""
    if isinstance(error, AuthError):
        return error.status == 401
    return isinstance(error, StorageError | TlsError)


def is_transient(error: BaseException) -> bool:
    """Whether repeating the request may help."""
    if isinstance(error, TransportError):
        return True
    return isinstance(error, ApiError) and error.transient


def retry_cause(error: BaseException) -> str:
    """A short label for counters: 'http-503', 'rate-limited', 'timeout', 'reset', ..."""
    if isinstance(error, ApiError):
        return "rate-limited" if error.status == 429 else f"http-{error.status}"
    if isinstance(error, TransportError):
        return error.cause
    return type(error).__name__
