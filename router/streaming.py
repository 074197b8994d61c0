"""SSE relay from an open backend stream to the client, with mid-stream recovery.

Once the response has started, an error cannot change the status. When the upstream
breaks, stalls past its idle limit or sends an error event, the relay asks the engine
to continue the answer on another allowed target (prefill); the continuation is
stitched into the same client stream (``ChunkTracker``). When nothing can continue it,
the client gets an OpenAI-shaped error event and ``[DONE]``: a truncated answer is
never presented as a clean finish. An answer that is complete (finish reason, and usage
when asked) ends promptly even if the upstream never sends ``[DONE]``. A client that
goes away closes (cancels) the upstream request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import web

from backends import BackendError, BackendRequest
from backends.sse import DONE, error_event
from policies import Plan
from router.chunks import ChunkTracker, Recovery
from router.engine import Engine, StreamAnswer

__all__ = ["StreamOutcome", "relay", "tracker_for"]

log = logging.getLogger("switchyard.stream")


def tracker_for(body: Mapping[str, object]) -> ChunkTracker:
    options = body.get("stream_options")
    want = isinstance(options, Mapping) and options.get("include_usage") is True
    n = body.get("n")
    return ChunkTracker(n=n if isinstance(n, int) and n > 0 else 1, want_usage=want, expect_usage=want)


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


async def relay(request: web.Request, engine: Engine, plan: Plan, breq: BackendRequest,
                answer: StreamAnswer, headers: dict[str, str]) -> tuple[web.StreamResponse, StreamOutcome]:
    response = web.StreamResponse(status=200, headers=headers)
    response.content_type = "text/event-stream"
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    tracker = tracker_for(breq.body)
    failed = {name for name, _ in answer.failures}
    current: StreamAnswer | None = answer
    finished: str | None = None
    try:
        await response.prepare(request)
        await _write(response, tracker, answer.first)
        while current is not None and not (tracker.done or tracker.complete):
            try:
                await _pump(response, engine, tracker, current)
            except BackendError as exc:
                failed.add(current.backend)
                engine.circuits[current.backend].failure(exc)
                engine.circuits[current.backend].streams["broken"] += 1
                current = await _recover(response, engine, plan, breq, tracker, current, exc, failed)
        if not tracker.done:
            await response.write(DONE)
        await response.write_eof()
        finished = current.backend if current is not None else None
        if current is not None and not tracker.done:
            await _drain(current)
    except (ConnectionResetError, ConnectionError):
        log.info("client went away mid-stream; closing the %s upstream", current.backend if current else "-")
    finally:
        if current is not None:
            engine.load.exit(current.backend)
            await current.stream.aclose()
    reason = "; ".join(f"{r.broken}: {r.reason}" for r in tracker.recoveries) or None
    whole = tracker.as_answer() if finished is not None else None
    return response, StreamOutcome(finished, tracker.usage, tracker.content_events, bool(tracker.recoveries), reason,
                                   whole)


async def _drain(current: StreamAnswer, grace_s: float = 0.5) -> None:
    """The client has its complete answer; read what the upstream still sends (usually just
    ``[DONE]``) so its connection goes back to the pool instead of being closed."""
    try:
        async with asyncio.timeout(grace_s):
            async for _ in current.events:
                pass
    except (TimeoutError, BackendError):
        pass  # aclose() closes the connection


async def _write(response: web.StreamResponse, tracker: ChunkTracker, event: bytes) -> None:
    out = tracker.feed(event)
    if out is not None:
        await response.write(out)


async def _pump(response: web.StreamResponse, engine: Engine, tracker: ChunkTracker,
                current: StreamAnswer) -> None:
    """Relay events until ``[DONE]`` or a complete answer; raises ``BackendError`` on a break."""
    malformed = tracker.malformed
    try:
        async for event in current.events:
            await _write(response, tracker, event)
            if tracker.done or tracker.complete:
                return
    finally:
        if tracker.malformed > malformed:
            engine.circuits[current.backend].streams["malformed_events"] += tracker.malformed - malformed


async def _recover(response: web.StreamResponse, engine: Engine, plan: Plan, breq: BackendRequest,
                   tracker: ChunkTracker, broken: StreamAnswer, exc: BackendError,
                   failed: set[str]) -> StreamAnswer | None:
    engine.load.exit(broken.backend)
    await broken.stream.aclose()
    log.warning("stream from %s broke after it started: %s", broken.backend, exc.message)
    continuation, reasons = await engine.recover(plan, breq, tracker, broken.backend, failed)
    if continuation is None:
        message = f"{exc.message}; the answer could not be continued ({'; '.join(reasons)})"
        await response.write(error_event(message, exc.error_type, exc.code))
        await response.write(DONE)
        tracker.done = True
        return None
    log.warning("continuing the stream of %s on %s", broken.backend, continuation.backend)
    engine.circuits[continuation.backend].streams["continued"] += 1
    tracker.continue_with(Recovery(broken.backend, continuation.backend, exc.message))
    return continuation
