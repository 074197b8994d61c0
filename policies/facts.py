"""What policy code sees of the world: ``RequestFacts`` (one request) and
``BackendLoad`` (one backend's load right now). Frozen data, built by the router;
policy code never reads a request, a clock or a socket itself.

Must not import ``router`` or ``backends``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

__all__ = ["BackendLoad", "Endpoint", "RequestFacts"]

#: The API a request came in on: OpenAI's chat, completions and embeddings, Anthropic's
#: Messages (``messages``) and OpenAI's Responses (``responses``); the last two reach
#: backends as chat completions.
Endpoint = Literal["chat", "completions", "embeddings", "messages", "responses"]


@dataclass(frozen=True, slots=True)
class RequestFacts:
    model: str
    endpoint: Endpoint = "chat"
    stream: bool = False
    team: str | None = None
    sensitivity: str = "public"
    detectors: frozenset[str] = frozenset()  # names of the detectors that fired
    input_tokens: int = 0  # estimate
    max_tokens: int | None = None
    choices: int = 1  # answers asked for (n / best_of, × a completions batch): output estimates scale with it
    tools: bool = False
    tags: frozenset[str] = frozenset()
    metadata: Mapping[str, str] = field(default_factory=dict)
    now: datetime | None = None  # UTC; given by the caller (policy code reads no clock)
    budget_remaining: float | None = None  # fraction 0..1 of the team's tightest budget, if known


@dataclass(frozen=True, slots=True)
class BackendLoad:
    """A self-hosted backend's load: from its own ``/metrics`` (queue = requests waiting,
    running = requests being served, kv_cache = 0..1) plus the gateway's in-flight count.
    ``None`` where unknown (no metrics, stale sample)."""

    queue: float | None = None
    running: float | None = None
    kv_cache: float | None = None
    in_flight: int = 0
    scrape_ok: bool = True
    ttft_ewma_s: float | None = None  # gateway-measured time to first token
    #: requests in the server now (waiting + running): the last sample corrected by what this
    #: gateway sent or saw end since (scrapes lag; the gateway knows what it just sent).
    #: ``None`` without a fresh sample (then only ``in_flight`` is known)
    busy: float | None = None
    #: the gateway's own observations of this backend (moving averages; ``None`` until seen)
    prefill_tps: float | None = None  # prompt tokens per second of a request that did not wait
    decode_tps: float | None = None  # output tokens per second of one streamed answer
    mean_input_tokens: float | None = None
    mean_output_tokens: float | None = None
    replicas: int = 1  # servers behind the backend (a pool's available replicas)

    @property
    def pressure(self) -> float:
        """One number for least-loaded ordering: waiting + running + our in-flight."""
        return (self.queue or 0.0) + (self.running or 0.0) + self.in_flight
