"""Retries on one backend, with backoff (tenacity). The only module that decides whether
and when to try the same backend again; failing over to the next target is the
engine's job.

- A request the upstream *rejected* (4xx) is never retried: it would fail again.
- A *silent* backend (timeout) is not retried on itself: fail over instead.
- 429 with ``Retry-After``: wait that long, unless it exceeds ``max_retry_after_s``
  (then fail over at once). Never sooner than the upstream asked.
- 429 without it, 5xx, connection errors: exponential backoff with jitter,
  ``backoff_base_s · 2^n`` (+ up to ``backoff_base_s`` jitter), capped at ``backoff_max_s``.
- At most ``attempts`` tries in all, and never while the circuit is open.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_exponential_jitter

from backends import BackendError
from backends.errors import UpstreamAuthError, UpstreamRateLimited, UpstreamTimeout
from policies import RetrySpec
from router.health import Circuit

__all__ = ["retry_same_backend", "should_retry"]

T = TypeVar("T")


def should_retry(exc: BaseException, spec: RetrySpec) -> bool:
    if not isinstance(exc, BackendError) or not exc.retryable:
        return False
    if isinstance(exc, UpstreamTimeout | UpstreamAuthError):
        return False
    if isinstance(exc, UpstreamRateLimited) and exc.retry_after is not None:
        return exc.retry_after <= spec.max_retry_after_s
    return True


class _Wait:
    """Retry-After when the upstream gave one, else exponential backoff with jitter.
    ``done`` tries happened before tenacity took over (it counts from 1 again)."""

    def __init__(self, spec: RetrySpec, done: int = 0) -> None:
        self._backoff = wait_exponential_jitter(initial=spec.backoff_base_s * 2**done, max=spec.backoff_max_s,
                                                jitter=spec.backoff_base_s)

    def __call__(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, BackendError) and exc.retry_after is not None:
            return exc.retry_after
        return float(self._backoff(state))


async def retry_same_backend(call: Callable[[], Awaitable[T]], spec: RetrySpec, circuit: Circuit) -> T:
    """Run ``call`` until it succeeds or retrying the same backend is pointless; the last
    error is re-raised. ``call`` is responsible for recording each failure.

    The first try runs without tenacity (the common case costs nothing extra); only a
    failure worth retrying builds the retry machinery."""
    try:
        return await call()
    except BackendError as exc:
        if spec.attempts == 1 or not (should_retry(exc, spec) and circuit.closed):
            raise
        first = exc
    await asyncio.sleep(_Wait(spec)(_state_after(first)))
    retrying = AsyncRetrying(
        stop=stop_after_attempt(spec.attempts - 1),
        retry=retry_if_exception(lambda e: should_retry(e, spec) and circuit.closed),
        wait=_Wait(spec, done=1),
        reraise=True,
    )
    return await retrying(call)


def _state_after(exc: BaseException) -> RetryCallState:
    """A tenacity call state for "attempt 1 failed with ``exc``" (to compute the first wait)."""
    state = RetryCallState(retry_object=AsyncRetrying(), fn=None, args=(), kwargs={})
    state.set_exception((type(exc), exc, exc.__traceback__))
    return state
