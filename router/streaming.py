"""SSE relay from an open backend stream to a ``Sink`` (the surface's writer), with
mid-stream recovery.

Once the response has started, an error cannot change the status. When the upstream
breaks, stalls past its idle limit or sends an error event, the relay asks the engine
to continue the answer on another allowed target (prefill); the continuation is
stitched into the same client stream (``ChunkTracker``). When nothing can continue it,
the client gets an OpenAI-shaped error event and ``[DONE]``: a truncated answer is
never presented as a clean finish. An answer that is complete (finish reason, and usage
when asked) ends promptly even if the upstream never sends ``[DONE]``. A client that
goes away (the sink raises ``ConnectionError``) closes (cancels) the upstream request.

Events are OpenAI chat/completions chunks; a surface with another wire format translates
them in its sink. Must not import aiohttp: the pipeline is testable without a server.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from backends import BackendError, BackendRequest
from backends.errors import UpstreamProtocolError
from backends.sse import DONE, error_event
from policies import Plan
from policies.sensitivity import Scan
from router.chunks import ChunkTracker, Recovery
from router.engine import Engine, StreamAnswer
from router.record import RequestRecord

__all__ = ["Sink", "StreamJob", "StreamOutcome", "relay", "tracker_for"]

log = logging.getLogger("switchyard.stream")


class Sink(Protocol):
    """Where a stream's events go: the surface's response. ``write`` raises
    ``ConnectionError`` when the client has gone."""

    async def open(self, headers: Mapping[str, str]) -> None:
        """Start the response (status 200) with ``headers``."""
        ...

    async def write(self, event: bytes) -> None:
        """One complete SSE event (``data: …\\n\\n``) in OpenAI's chunk format."""
        ...

    async def close(self) -> None:
        """The stream is over (after ``[DONE]`` or an error event)."""
        ...


def tracker_for(body: Mapping[str, object]) -> ChunkTracker:
    options = body.get("stream_options")
    want = isinstance(options, Mapping) and options.get("include_usage") is True
    n = body.get("n")
    return ChunkTracker(n=n if isinstance(n, int) and n > 0 else 1, want_usage=want, expect_usage=want)


@dataclass(frozen=True, slots=True)
class StreamJob:
    """What a relay needs to recover a broken stream: the request's plan, request and scan."""

    engine: Engine
    plan: Plan
    request: BackendRequest
    scan: Scan
    record: RequestRecord | None = None


@dataclass(frozen=True, slots=True)
class StreamOutcome:
    """How a relayed stream ended: ``backend`` that finished it (``None``: it did not finish —
    error event or client gone), the usage it reported (or ``None``) and the content events seen."""

    backend: str | None
    usage: Mapping[str, object] | None
    content_events: int
    recovered: bool = False  # it broke and was continued on another backend
    reason: str | None = None  # why (each break: backend and error)
    answer: dict[str, object] | None = None  # a clean chat stream as its JSON answer (for the cache)


async def relay(sink: Sink, job: StreamJob, answer: StreamAnswer, headers: Mapping[str, str]) -> StreamOutcome:
    """Relay ``answer`` (and its continuations) into ``sink``; owns ``answer`` from here on:
    every stream it opened is closed (and its lease ended) when this returns or raises."""
    tracker = tracker_for(job.request.body)
    failed = {name for name, _ in answer.failures}
    current: StreamAnswer | None = answer
    finished: str | None = None
    try:
        await sink.open(headers)
        while current is not None and not (tracker.done or tracker.complete):
            try:
                await _pump(sink, tracker, current)
            except BackendError as exc:
                current = await _recover(sink, job, tracker, current, exc, failed)
        if not tracker.done:
            await sink.write(DONE)
        await sink.close()
        finished = current.backend if current is not None else None
        if current is not None and not tracker.done:
            await _drain(current)
    except ConnectionError:
        log.info("client went away mid-stream; closing the %s upstream", current.backend if current else "-")
    finally:
        if current is not None:
            await current.close()
    reason = "; ".join(f"{r.broken}: {r.reason}" for r in tracker.recoveries) or None
    whole = tracker.as_answer() if finished is not None else None
    return StreamOutcome(finished, tracker.usage, tracker.content_events, bool(tracker.recoveries), reason, whole)


async def _drain(current: StreamAnswer, grace_s: float = 0.5) -> None:
    """The client has its complete answer; read what the upstream still sends (usually just
    ``[DONE]``) so its connection goes back to the pool instead of being closed."""
    try:
        async with asyncio.timeout(grace_s):
            async for _ in current.events:
                pass
    except (TimeoutError, BackendError):
        pass  # close() closes the connection


async def _write(sink: Sink, tracker: ChunkTracker, event: bytes) -> None:
    out = tracker.feed(event)
    if out is not None:
        await sink.write(out)


async def _pump(sink: Sink, tracker: ChunkTracker, current: StreamAnswer) -> None:
    """Relay the first event, then the rest until ``[DONE]`` or a complete answer; raises
    ``BackendError`` on a break."""
    malformed = tracker.malformed
    try:
        await _write(sink, tracker, current.first)
        if tracker.done or tracker.complete:
            return
        async for event in current.events:
            await _write(sink, tracker, event)
            if tracker.done or tracker.complete:
                return
        raise UpstreamProtocolError(f"{current.backend} ended its stream before [DONE]", backend=current.backend)
    finally:
        current.lease.malformed(tracker.malformed - malformed)


async def _recover(sink: Sink, job: StreamJob, tracker: ChunkTracker, broken: StreamAnswer, exc: BackendError,
                   failed: set[str]) -> StreamAnswer | None:
    failed.add(broken.backend)
    broken.lease.broke(exc)
    await broken.close()
    log.warning("stream from %s broke after it started: %s", broken.backend, exc.message)
    continuation, reasons = await job.engine.recover(job.plan, job.request, job.scan, tracker, failed, job.record)
    if continuation is None:
        message = f"{exc.message}; the answer could not be continued ({'; '.join(reasons)})"
        await sink.write(error_event(message, exc.error_type, exc.code))
        await sink.write(DONE)
        tracker.done = True
        return None
    log.warning("continuing the stream of %s on %s", broken.backend, continuation.backend)
    tracker.continue_with(Recovery(broken.backend, continuation.backend, exc.message))
    return continuation
