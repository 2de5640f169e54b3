"""API failures as exceptions, each mapping one-to-one onto an error envelope (contract §4)."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error the simulated server answers with `{"status": "error", "error": {...}}`."""

    status = 500
    code = "INTERNAL_SERVER_ERROR"

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            error["details"] = self.details
        return {"status": "error", "error": error}


class InvalidParameter(ApiError):
    status = 400
    code = "INVALID_PARAMETER"

    def __init__(self, parameter: str, value: object, expected: str, **more: object) -> None:
        super().__init__(
            f"Invalid value for parameter '{parameter}'",
            {"parameter": parameter, "value": value, "expected": expected, **more},
        )


class GatewayTimeout(ApiError):
    """A page too large for the upstream to produce in time."""

    status = 504
    code = "GATEWAY_TIMEOUT"

    def __init__(self) -> None:
        super().__init__("upstream timeout")


class Unauthenticated(ApiError):
    status = 401
    code = "AUTHENTICATION_ERROR"

    def __init__(self) -> None:
        super().__init__("Invalid or expired API key")


class Forbidden(ApiError):
    status = 403
    code = "FORBIDDEN"

    def __init__(self, required: str, provided: list[str]) -> None:
        super().__init__(
            f"Insufficient scopes. Required: {required}",
            {"required": [required], "provided": provided},
        )


class NotFound(ApiError):
    status = 404
    code = "NOT_FOUND"


class RateLimited(ApiError):
    status = 429
    code = "RATE_LIMIT_EXCEEDED"

    def __init__(self, retry_after: int, headers: dict[str, str] | None = None) -> None:
        super().__init__(
            f"Rate limit exceeded. Retry after {retry_after} seconds.",
            {"retryAfter": retry_after},
        )
        self.retry_after = retry_after
        self.headers = headers or {}
