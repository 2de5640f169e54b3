"""The retry policy (tenacity): which failures are retried, how long to wait, when to give up.

Transient failures (429, 5xx, timeouts, resets, truncated or undecodable bodies) are retried
with exponential backoff and full jitter; a server's Retry-After replaces the backoff. A 429 is
the server pacing us, not failing, so it does not use up an attempt; every retry, 429 or not,
counts against the total time allowed (`max_seconds`), and no wait runs past it: a backoff is
cut short at the deadline, and a wait the server sets (Retry-After, or the customary wait after
a 429 without one) that does not fit ends the request at once, its error saying why.
400/401/403/404 and contract violations are final.
A fresh `AsyncRetrying` is made per request: tenacity keeps attempt state on the instance.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    wait_random_exponential,
)

from hyperstudy_bulk.config import Settings
from hyperstudy_bulk.errors import ApiError, is_transient, retry_cause

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8
    """Failed attempts (429s excluded) before the error is raised."""
    max_seconds: float = 3600.0
    """Time one request may spend across attempts and waits."""
    backoff_base: float = 0.5
    backoff_max: float = 60.0
    rate_limited_wait: float = 60.0
    """Wait after a 429 that carries no Retry-After (what the API's own guides assume)."""

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            max_attempts=settings.max_attempts,
            max_seconds=settings.max_retry_seconds,
            backoff_base=settings.retry_backoff,
            backoff_max=settings.retry_backoff_max,
        )


def _retry_after(state: RetryCallState) -> float | None:
    error = state.outcome.exception() if state.outcome else None
    return error.retry_after if isinstance(error, ApiError) else None


def _was_rate_limited(state: RetryCallState) -> bool:
    error = state.outcome.exception() if state.outcome else None
    return isinstance(error, ApiError) and error.status == 429


async def call_with_retries(
    attempt: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    on_retry: Callable[[str, float], None] = lambda cause, wait: None,
) -> T:
    """Run `attempt` until it succeeds or the policy gives up (then its last error is raised).

    `on_retry(cause, seconds)` is told of each retry before its wait.
    """
    failures = 0
    planned = 0.0
    refused: tuple[BaseException, float, float] | None = None
    backoff = wait_random_exponential(multiplier=policy.backoff_base, max=policy.backoff_max)

    def stop(state: RetryCallState) -> bool:
        nonlocal failures, planned, refused
        if not _was_rate_limited(state):
            failures += 1
        left = policy.max_seconds - (state.seconds_since_start or 0.0)
        if failures >= policy.max_attempts or left <= 0:
            return True
        asked = _server_wait(state, policy)
        if asked is None:
            planned = min(float(backoff(state)), left)
        elif asked <= left:
            planned = asked
        else:
            error = state.outcome.exception() if state.outcome else None
            refused = (error, asked, left) if error is not None else None
            return True
        return False

    def wait(state: RetryCallState) -> float:
        return planned

    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        if error is not None and state.next_action is not None:
            on_retry(retry_cause(error), state.next_action.sleep)

    retrying = AsyncRetrying(
        retry=retry_if_exception(is_transient),
        wait=wait,
        stop=stop,
        before_sleep=before_sleep,
        reraise=True,
    )
    try:
        return await retrying(attempt)
    except ApiError as error:
        if refused is not None and refused[0] is error:
            _, asked, left = refused
            error.args = (
                f"{error}; retrying means waiting {asked:g} s ({_why(error)}), more than the "
                f"{left:.0f} s left of --max-retry-seconds {policy.max_seconds:g}: run the same "
                "command again later (or raise --max-retry-seconds)",
            )
        raise


def _server_wait(state: RetryCallState, policy: RetryPolicy) -> float | None:
    """The wait the server set for this retry: its Retry-After, or a 429's customary wait."""
    retry_after = _retry_after(state)
    if retry_after is not None:
        return retry_after
    return policy.rate_limited_wait if _was_rate_limited(state) else None


def _why(error: ApiError) -> str:
    return "its Retry-After" if error.retry_after is not None else "a 429 without Retry-After"
