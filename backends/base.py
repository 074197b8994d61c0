"""The ``Backend`` protocol: the one shape every upstream adapter has.

Must not import ``router`` or ``policies``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from backends.metrics import LoadSample
from backends.types import BackendRequest, BackendResponse, BackendStream, Health

__all__ = ["Backend", "BackendConfig", "TimeLimits"]


@dataclass(frozen=True, slots=True)
class TimeLimits:
    """Time limits of one backend, in seconds."""

    connect_s: float = 5.0
    first_token_s: float = 30.0
    idle_s: float = 30.0
    total_s: float = 600.0


@dataclass(frozen=True, slots=True)
class BackendConfig:
    """Everything an adapter needs to reach one upstream (built by the router from policy)."""

    name: str
    kind: str
    model: str
    base_url: str | None = None
    api_key: str | None = None
    self_hosted: bool = True
    supports_prefill: bool = False
    limits: TimeLimits = TimeLimits()
    headers: tuple[tuple[str, str], ...] = ()


class Backend(Protocol):
    """One upstream model. Errors are raised as ``backends.errors.BackendError``."""

    name: str
    #: True when requests reach a server we run (no per-token bill, data stays home).
    self_hosted: bool

    async def complete(self, request: BackendRequest) -> BackendResponse:
        """Send a non-streaming request and return the whole answer."""
        ...

    async def open_stream(self, request: BackendRequest) -> BackendStream:
        """Start a streaming request; returns once the upstream accepted it (status 200)."""
        ...

    async def health(self) -> Health:
        """Probe the upstream (cheap, bounded by the connect timeout)."""
        ...

    async def load(self) -> LoadSample | None:
        """Scrape the upstream's own load metrics; ``None`` when it has none."""
        ...

    async def close(self) -> None:
        """Release resources owned by this backend (not shared sessions)."""
        ...
