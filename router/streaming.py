"""SSE relay from an open backend stream to a ``Sink`` (the surface's writer), with
mid-stream recovery.

Once the response has started, an error cannot change the status. When the upstream
breaks, stalls past its idle limit or sends an error event, the relay asks the engine
to continue the answer on another allowed target (prefill); the continuation is
stitched into the same client stream (``ChunkTracker``). When nothing can continue it,
the client gets an OpenAI-shaped error event and ``[DONE]``: a truncated answer is
never presented as a clean finish. An answer that is complete (finish reason, and usage
when asked) ends promptly even if the upstream never sends ``[DONE]``. A client that
goes away (the sink raises ``ConnectionError``, or the server cancels the handler when the
connection closes: curl closes it right after ``[DONE]``) closes (cancels) the upstream
request; the relay still reports what was delivered and produced, so it can be settled.

Events are OpenAI chat/completions chunks; a surface with another wire format translates
them in its sink. Must not import aiohttp: the pipeline is testable without a server.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Protocol

from backends import BackendError, BackendRequest, stream_ready
from backends.errors import UpstreamProtocolError
from backends.sse import DONE, error_event
from policies import Plan
from policies.sensitivity import Scan
from router.chunks import ChunkTracker, Recovery
from router.engine import Engine, StreamAnswer
from router.native import NativeTracker
from router.record import RequestRecord

__all__ = ["Sink", "StreamJob", "StreamOutcome", "absorb_cancellation", "relay", "relay_native", "tracker_for"]

log = logging.getLogger("switchyard.stream")

#: What a stream cut at the process's drain deadline ends with (``router.deadline``).
_SHUT_DOWN = error_event("the gateway is shutting down: this answer was cut short at its drain deadline; retry "
                         "the request", "service_unavailable", "shutting_down")


class Sink(Protocol):
    """Where a stream's events go: the surface's response. ``write`` raises
    ``ConnectionError`` when the client has gone."""

    async def open(self, headers: Mapping[str, str]) -> None:
        """Start the response (status 200) with ``headers``."""
        ...

    async def write(self, event: bytes) -> None:
        """One complete SSE event (``data: …\\n\\n``) in OpenAI's chunk format."""
        ...

    async def write_many(self, events: list[bytes]) -> None:
        """Several complete events that arrived together, in one write to the client."""
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
    """How a relayed stream ended.

    ``delivered``: the whole answer and ``[DONE]`` were written to the client (whatever the
    client did with its connection afterwards). ``backend``: the backend whose tokens were
    relayed last. ``usage``: what the upstream reported
    (``None``: nothing), ``produced_tokens``: completion tokens relayed, counted from the
    content when there is no usage. ``client_gone``: the client went away (its connection
    closed, or the handler was cancelled because of it) before the relay was over."""

    delivered: bool
    backend: str
    usage: Mapping[str, object] | None
    produced_tokens: int
    client_gone: bool = False
    broken: bool = False  # it ended with an error event: it broke and could not be continued
    recovered: bool = False  # it broke and was continued on another backend
    reason: str | None = None  # why (each break: backend and error)
    answer: dict[str, object] | None = None  # a clean chat stream as its JSON answer (for the cache)


async def relay(sink: Sink, job: StreamJob, answer: StreamAnswer, headers: Mapping[str, str]) -> StreamOutcome:
    """Relay ``answer`` (and its continuations) into ``sink``; owns ``answer`` from here on:
    every stream it opened is closed (and its lease ended) when this returns. Always returns
    an outcome: a client that goes away — the sink raises ``ConnectionError``, or the server
    cancels the handler because the connection closed — ends the relay, and the cancellation
    is absorbed (what was produced is still to be settled by the caller)."""
    tracker = tracker_for(job.request.body)
    failed = {name for name, _ in answer.failures}
    current: StreamAnswer | None = answer
    producer, delivered, gone = answer.backend, False, False
    try:
        await sink.open(headers)
        try:
            while current is not None and not (tracker.done or tracker.complete):
                producer = current.backend
                try:
                    with job.engine.deadline.cuttable():
                        await _pump(sink, tracker, current)
                except BackendError as exc:
                    current = await _recover(sink, job, tracker, current, exc, failed)
        except asyncio.CancelledError:
            if not job.engine.deadline.absorb():
                raise
            await _cut_at_deadline(sink, tracker, current)
            current = None
        if not tracker.done:
            await sink.write(DONE)
        delivered = current is not None  # else the client got an error event (and [DONE])
        await sink.close()
        if current is not None:  # also after [DONE]: the upstream's generators end here, not in the GC
            await _drain(current)
    except (ConnectionError, asyncio.CancelledError) as exc:
        gone = True
        if isinstance(exc, asyncio.CancelledError):
            absorb_cancellation()
        if not delivered:
            log.info("client went away mid-stream; closing the %s upstream", current.backend if current else "-")
    finally:
        if current is not None:
            gone = not await _closed(current) or gone
    reason = "; ".join(f"{r.broken}: {r.reason}" for r in tracker.recoveries) or None
    return StreamOutcome(delivered, producer, tracker.usage, tracker.produced_tokens, gone, current is None,
                         bool(tracker.recoveries), reason, tracker.as_answer() if delivered else None)


async def relay_native(sink: Sink, engine: Engine, answer: StreamAnswer, headers: Mapping[str, str]
                       ) -> StreamOutcome:
    """Relay a stream in an agent API the backend serves natively (``answer.api``: messages,
    responses) event by event, unchanged; owns ``answer`` as ``relay`` does. Such a stream is
    not continued elsewhere when it breaks (a continuation would be in another format): the
    sink gets a chat-shaped error event, which the surface writes in its own format, and the
    answer is never presented as complete. What was produced is reported for settlement."""
    tracker = NativeTracker(answer.api)
    delivered = gone = broken = False
    reason = None
    try:
        await sink.open(headers)
        try:
            with engine.deadline.cuttable():
                await _pump_native(sink, tracker, answer)
        except BackendError as exc:
            broken, reason = True, f"{answer.backend}: {exc.error_type}"
            answer.lease.broke(exc)
            log.warning("native stream from %s broke after it started: %s", answer.backend, exc.message)
            await sink.write(error_event(f"{exc.message}; a native stream is not continued elsewhere",
                                         exc.error_type, exc.code))
        except asyncio.CancelledError:
            if not engine.deadline.absorb():
                raise
            broken = True
            await sink.write(_SHUT_DOWN)
        delivered = not broken
        await sink.close()
        if delivered:
            await _drain(answer)
    except (ConnectionError, asyncio.CancelledError) as exc:
        gone = True
        if isinstance(exc, asyncio.CancelledError):
            absorb_cancellation()
        if not delivered:
            log.info("client went away mid-stream; closing the %s upstream", answer.backend)
    finally:
        gone = not await _closed(answer) or gone
    return StreamOutcome(delivered, answer.backend, tracker.usage, tracker.produced_tokens, gone, broken,
                         False, reason, None)


async def _pump_native(sink: Sink, tracker: NativeTracker, current: StreamAnswer) -> None:
    """Relay until the answer's last event; the gateway's own end-of-stream sentinel (the
    adapter's ``[DONE]``) is not part of these APIs and is not relayed. Events that arrived
    together are written together, as in ``_pump``."""
    event, events, ready = current.first, current.events, stream_ready(current.stream)
    batch: list[bytes] = []
    try:
        while True:
            if event != DONE:
                tracker.feed(event)
                batch.append(event)
            if tracker.complete or event == DONE:
                break
            if batch and not ready():
                await _flush(sink, batch)
                batch = []
            next_event = await anext(events, None)
            if next_event is None:
                break
            event = next_event
    except BackendError:
        if batch:
            await _flush(sink, batch)
        raise
    if batch:
        await _flush(sink, batch)
    if not tracker.complete:
        raise UpstreamProtocolError(f"{current.backend} ended its stream before its last event",
                                    backend=current.backend)


def absorb_cancellation() -> None:
    """After catching the ``CancelledError`` the server raises in a handler whose client went
    away, when the handler turns it into an outcome: the task is no longer being cancelled."""
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()


async def _closed(current: StreamAnswer) -> bool:
    """Close ``current``; ``False`` when a cancellation arrived meanwhile (absorbed)."""
    try:
        await current.close()
    except asyncio.CancelledError:
        absorb_cancellation()
        return False
    return True


async def _cut_at_deadline(sink: Sink, tracker: ChunkTracker, current: StreamAnswer | None) -> None:
    """The process's drain deadline passed mid-stream (``router.deadline``): the client gets
    an error event and ``[DONE]``, never a cut mid-chunk; what was produced is settled."""
    if current is not None:
        await current.close()
    await sink.write(_SHUT_DOWN)
    await sink.write(DONE)
    tracker.done = True


async def _drain(current: StreamAnswer, grace_s: float = 0.5) -> None:
    """The client has its complete answer; read what the upstream still sends (usually just
    ``[DONE]``) so its connection goes back to the pool instead of being closed."""
    try:
        async with asyncio.timeout(grace_s):
            async for _ in current.events:
                pass
    except (TimeoutError, BackendError):
        pass  # close() closes the connection


async def _pump(sink: Sink, tracker: ChunkTracker, current: StreamAnswer) -> None:
    """Relay the first event, then the rest until ``[DONE]`` or a complete answer; raises
    ``BackendError`` on a break. Events that arrived together (``backends.stream_ready``) are
    written to the client in one write; every event the tracker has seen is written before
    this returns or raises (a continuation is stitched after them)."""
    malformed = tracker.malformed
    ready, events, feed = stream_ready(current.stream), current.events, tracker.feed
    batch: list[bytes] = []
    event = current.first
    try:
        while True:
            out = feed(event)
            if out is not None:
                batch.append(out)
            if tracker.done:
                break
            if tracker.complete:  # the answer is whole: [DONE] goes out with its last events
                batch.append(DONE)
                tracker.done = True
                break
            if batch and not ready():
                await _flush(sink, batch)
                batch = []
            try:
                event = await anext(events)
            except StopAsyncIteration:
                raise UpstreamProtocolError(f"{current.backend} ended its stream before [DONE]",
                                            backend=current.backend) from None
    except BackendError:
        if batch:
            await _flush(sink, batch)
        raise
    finally:
        current.lease.malformed(tracker.malformed - malformed)
    if batch:
        await _flush(sink, batch)


def _flush(sink: Sink, batch: list[bytes]) -> Awaitable[None]:
    return sink.write(batch[0]) if len(batch) == 1 else sink.write_many(batch)


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
