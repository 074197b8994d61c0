"""Circuit breakers and per-backend attempt statistics (the only owner of circuit state).

A circuit is *closed* while its backend works. ``failures`` failures within ``window_s``
open it: requests skip the backend without touching it. After ``cooldown_s`` it is
*half-open*: exactly one request at a time is let through as a probe; success closes
the circuit, failure opens it for another cooldown. Only failures that say the backend
is unwell count (connect errors, timeouts, 5xx, broken streams, refused credentials);
rate limits and rejected requests do not.

State is per process for now; the shared-state work can publish hints through Redis.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from backends import BackendError
from backends.errors import UpstreamRateLimited, UpstreamRejected
from policies import CircuitSpec

__all__ = ["Circuit", "CircuitState", "Circuits", "counts_against"]

Clock = Callable[[], float]


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


def counts_against(exc: BackendError) -> bool:
    """Whether a failure says the backend is unwell (and so counts toward opening)."""
    return not isinstance(exc, UpstreamRateLimited | UpstreamRejected)


@dataclass
class Circuit:
    spec: CircuitSpec
    clock: Clock = time.monotonic
    state: CircuitState = CircuitState.CLOSED
    opened_at: float = 0.0
    probing: bool = False
    recent: deque[float] = field(default_factory=deque)
    # statistics, for /admin/backends
    successes: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    skipped: int = 0
    opened: int = 0
    last_error: str | None = None
    streams: Counter[str] = field(default_factory=Counter)  # broken / continued / malformed_events


    @property
    def closed(self) -> bool:
        return self.state is CircuitState.CLOSED

    def allow(self) -> bool:
        """May a request go to this backend now? (Takes the probe slot when half-open.)"""
        if self.state is CircuitState.CLOSED:
            return True
        if self.state is CircuitState.OPEN and self.clock() - self.opened_at >= self.spec.cooldown_s:
            self.state, self.probing = CircuitState.HALF_OPEN, False
        if self.state is CircuitState.HALF_OPEN and not self.probing:
            self.probing = True
            return True
        self.skipped += 1
        return False

    def release(self) -> None:
        """An attempt ended without a verdict (the client went away): free the probe slot."""
        self.probing = False

    def success(self) -> None:
        self.successes += 1
        self.state, self.probing = CircuitState.CLOSED, False
        self.recent.clear()

    def failure(self, exc: BackendError) -> None:
        self.errors[exc.error_type] += 1
        self.last_error = exc.message[:300]
        if not counts_against(exc):
            if self.state is CircuitState.HALF_OPEN:
                self.success()  # it answered: alive
            return
        now = self.clock()
        if self.state is CircuitState.HALF_OPEN:
            self._open(now)
            return
        self.recent.append(now)
        while self.recent and now - self.recent[0] > self.spec.window_s:
            self.recent.popleft()
        if len(self.recent) >= self.spec.failures:
            self._open(now)

    def _open(self, now: float) -> None:
        self.state, self.opened_at, self.probing = CircuitState.OPEN, now, False
        self.opened += 1
        self.recent.clear()

    def snapshot(self) -> dict[str, object]:
        retry_in = None
        if self.state is CircuitState.OPEN:
            retry_in = round(max(0.0, self.opened_at + self.spec.cooldown_s - self.clock()), 3)
        return {"state": self.state.value, "recent_failures": len(self.recent), "probe_in_s": retry_in,
                "successes": self.successes, "errors": dict(self.errors), "skipped": self.skipped,
                "times_opened": self.opened, "last_error": self.last_error, "streams": dict(self.streams)}


class Circuits:
    """One circuit per backend name."""

    def __init__(self, specs: dict[str, CircuitSpec], clock: Clock = time.monotonic,
                 carry: Circuits | None = None) -> None:
        """``carry``: circuits of the previous policy; a backend whose circuit settings are
        unchanged keeps its state across a reload."""
        old: dict[str, Circuit] = carry._circuits if carry is not None else {}
        self._circuits: dict[str, Circuit] = {
            name: old[name] if name in old and old[name].spec == spec else Circuit(spec, clock)
            for name, spec in specs.items()}

    def __getitem__(self, name: str) -> Circuit:
        return self._circuits[name]

    def snapshot(self) -> dict[str, dict[str, object]]:
        return {name: c.snapshot() for name, c in self._circuits.items()}
