"""Fault script shared by every fake upstream.

This module owns *what* goes wrong: the `Fault` value describing one misbehaviour and
the `FaultScript` queue that hands one fault to each incoming request. It also owns
the release latch that frees hanging/stalled handlers when a fake server closes.
*How* a fault is rendered on the wire (status codes, error bodies, SSE cuts) belongs
to `tests.fakes.base` and the provider modules.

Stream-only fields (`headers_then_stall_s`, `cut_after_chunks`, `stall_after_chunks`,
`malformed_after_chunks`, `no_done`) have no effect on non-streaming replies.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class Fault:
    """One scripted misbehaviour, applied to exactly one request (or every one, see `always`)."""

    status: int | None = None
    error_type: str | None = None
    message: str = "injected fault"
    retry_after: float | None = None
    hang: bool = False
    reset: bool = False
    headers_then_stall_s: float | None = None
    cut_after_chunks: int | None = None
    stall_after_chunks: int | None = None
    malformed_after_chunks: int | None = None
    no_done: bool = False
    linger: bool = False               # streaming: after the last event, keep the connection open (until close())
    delay_s: float = 0.0

    @property
    def is_error(self) -> bool:
        """True when the reply is an HTTP error (explicit status or a provider error type)."""
        return self.status is not None or self.error_type is not None

    @property
    def has_default_message(self) -> bool:
        """True when the caller did not choose a message (fakes then use a realistic one)."""
        return self.message == DEFAULT_MESSAGE


DEFAULT_MESSAGE = Fault.__dataclass_fields__["message"].default


class FaultScript:
    """FIFO of faults, one per incoming request; `always` covers requests once it is empty."""

    def __init__(self) -> None:
        self._queue: deque[Fault] = deque()
        self._always: Fault | None = None
        self._released = asyncio.Event()

    def push(self, *faults: Fault) -> FaultScript:
        """Queue faults; each incoming request consumes the oldest one."""
        self._queue.extend(faults)
        return self

    def always(self, fault: Fault | None) -> FaultScript:
        """Apply `fault` to every request while the queue is empty (`None` clears it)."""
        self._always = fault
        return self

    def clear(self) -> None:
        """Drop queued faults and the `always` fault."""
        self._queue.clear()
        self._always = None

    @property
    def pending(self) -> int:
        """Number of queued (not yet consumed) faults."""
        return len(self._queue)

    def next(self) -> Fault | None:
        """Fault for the request being handled now, or None for normal behaviour."""
        if self._queue:
            return self._queue.popleft()
        return self._always

    # -- release latch: lets close() free handlers that hang or stall on purpose --------

    @property
    def released(self) -> bool:
        return self._released.is_set()

    def release(self) -> None:
        """Wake every handler blocked in `hold()` / `pause()`; called by the server's close()."""
        self._released.set()

    async def hold(self) -> None:
        """Block until `release()` (used by hang and stall faults)."""
        await self._released.wait()

    async def pause(self, seconds: float) -> bool:
        """Sleep up to `seconds`, returning early (True) if released meanwhile."""
        if seconds <= 0:
            return self.released
        try:
            await asyncio.wait_for(self._released.wait(), timeout=seconds)
        except TimeoutError:
            return False
        return True
