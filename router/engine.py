"""The attempt loop: the only module that meets both ``policies`` and ``backends``.

Given a ``Plan``, try its targets in order and never anything outside it:

- a target whose circuit is open is skipped without being touched;
- each target gets retries with backoff (``router.retry``) for failures that may pass;
- a retryable failure that persists moves on to the next target (failover);
- a request the upstream rejected is returned at once, except a context-length error,
  which moves on only to targets configured with a larger ``context_window``.

Streams fail over invisibly until their first event is read here; after that,
``recover`` continues a broken stream on another allowed target that can take the
partial answer as a prefill.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from backends import Backend, BackendError, BackendRequest, BackendResponse, BackendStream
from backends.errors import ContextLengthExceeded, UpstreamProtocolError
from policies import BackendSpec, Plan
from policies.sensitivity import Scan, redact
from router.chunks import ChunkTracker
from router.errors import AllBackendsFailed, NoBackendAvailable, PolicyDenied
from router.health import Circuits
from router.load import LoadMonitor
from router.record import RequestRecord
from router.retry import retry_same_backend
from router.runtime import Runtime
from router.telemetry import Telemetry

__all__ = ["Answer", "Engine", "StreamAnswer"]

T = TypeVar("T")
Failures = list[tuple[str, BackendError]]


@dataclass(slots=True)
class Answer:
    backend: str
    response: BackendResponse
    failures: Failures = field(default_factory=list)
    upstream_s: float = 0.0  # time spent in attempts (retries and failovers included)


@dataclass(slots=True)
class StreamAnswer:
    backend: str
    stream: BackendStream
    events: AsyncIterator[bytes]
    first: bytes
    failures: Failures = field(default_factory=list)
    upstream_s: float = 0.0  # time spent in attempts, up to and including the first event


class Engine:
    def __init__(self, runtime: Runtime, circuits: Circuits, load: LoadMonitor,
                 telemetry: Telemetry | None = None) -> None:
        self.runtime = runtime
        self.circuits = circuits
        self.load = load
        self.telemetry = telemetry  # spans for attempts of traced requests (None: never traced)

    def spec(self, name: str) -> BackendSpec:
        return self.runtime.loaded.policy.backends[name]

    async def complete(self, plan: Plan, request: BackendRequest, scan: Scan | None = None,
                       record: RequestRecord | None = None) -> Answer:
        run = _Run(self, plan, request, scan, record)
        for name, backend in run.candidates():
            try:
                response = await run.attempt(name, run.request_for(name), lambda r, b=backend: b.complete(r))
            except BackendError as exc:
                run.after_failure(name, exc)
                continue
            return Answer(name, response, run.failures, run.upstream_s)
        raise run.exhausted()

    async def open_stream(self, plan: Plan, request: BackendRequest, scan: Scan | None = None,
                          record: RequestRecord | None = None) -> StreamAnswer:
        run = _Run(self, plan, request, scan, record)
        for name, backend in run.candidates():
            try:
                answer = await run.attempt(name, run.request_for(name),
                                           lambda r, n=name, b=backend: _first_event(n, b, r, run), stream=True)
            except BackendError as exc:
                run.after_failure(name, exc)
                continue
            answer.upstream_s = run.upstream_s
            return answer
        raise run.exhausted()

    async def recover(self, plan: Plan, request: BackendRequest, tracker: ChunkTracker,
                      broken: str, failed: set[str]) -> tuple[StreamAnswer | None, list[str]]:
        """Continue a stream that broke on ``broken`` from another allowed target that
        supports prefill. Returns the continuation, or ``None`` and why each try failed."""
        why = tracker.why_not_continuable() or (None if request.endpoint == "chat"
                                                else "only chat streams can be continued")
        if why:
            return None, [why]
        continuation = _continuation_request(request, tracker.prefill(), tracker.content_events)
        reasons = []
        for name in plan.targets:
            if name in failed or name == broken:
                continue
            if not self.spec(name).can_prefill:
                reasons.append(f"{name}: does not support prefill")
                continue
            circuit = self.circuits[name]
            if not circuit.allow():
                reasons.append(f"{name}: circuit open")
                continue
            self.load.enter(name)
            try:
                stream = await self.runtime.backends[name].open_stream(self._as_seen_by(name, plan, continuation))
            except BackendError as exc:
                self.load.exit(name)
                circuit.failure(exc)
                failed.add(name)
                reasons.append(f"{name}: {exc.message}")
                continue
            except BaseException:
                self.load.exit(name)
                circuit.release()
                raise
            return StreamAnswer(name, stream, aiter(stream), b""), reasons
        return None, reasons or ["no other allowed target"]


    def _as_seen_by(self, name: str, plan: Plan, request: BackendRequest) -> BackendRequest:
        """Redact a continuation for a closed target when the rule says so. The partial answer
        is scanned too: a model may repeat what the prompt carried."""
        if not plan.redact or self.spec(name).is_self_hosted:
            return request
        scan = self.runtime.scanner.scan(request.endpoint, request.body)
        body = redact(request.endpoint, request.body, scan, plan.redact)
        return BackendRequest(request.endpoint, body, True, request.request_id, request.traceparent, prefill=True)


async def _first_event(name: str, backend: Backend, request: BackendRequest, run: _Run) -> StreamAnswer:
    started = asyncio.get_running_loop().time()
    stream = await backend.open_stream(request)
    try:
        events = aiter(stream)
        first = await anext(events, None)
        if first is None:
            raise UpstreamProtocolError(f"{name} sent an empty stream", backend=name)
    except BaseException:
        await stream.aclose()
        raise
    run.engine.load.record_ttft(name, asyncio.get_running_loop().time() - started)
    return StreamAnswer(name, stream, events, first, run.failures)


def _continuation_request(request: BackendRequest, partial: str, tokens_so_far: int) -> BackendRequest:
    body = dict(request.body)
    messages = body.get("messages")
    body["messages"] = [*(messages if isinstance(messages, list) else ()),
                        {"role": "assistant", "content": partial}]
    for key in ("max_tokens", "max_completion_tokens"):
        limit = body.get(key)
        if isinstance(limit, int) and not isinstance(limit, bool):
            body[key] = max(1, limit - tokens_so_far)
    body["stream"] = True
    body["stream_options"] = {"include_usage": True}
    return BackendRequest(request.endpoint, body, True, request.request_id, request.traceparent, prefill=True)


class _Run:
    """The bookkeeping of one request's attempts."""

    def __init__(self, engine: Engine, plan: Plan, request: BackendRequest, scan: Scan | None,
                 record: RequestRecord | None = None) -> None:
        if plan.denied is not None:
            raise PolicyDenied(f"denied by rule {plan.rule!r}: {plan.denied}")
        if plan.unavailable is not None:
            raise NoBackendAvailable(plan.unavailable)
        self.engine = engine
        self.plan = plan
        self.request = request
        self.scan = scan
        self._redacted: BackendRequest | None = None
        self.failures: Failures = []
        self.skipped: list[tuple[str, str]] = list(plan.skipped)
        self.context_floor: int | None = None
        self.record = record
        self.upstream_s = 0.0
        self.attempts = 0

    def request_for(self, name: str) -> BackendRequest:
        """The request as ``name`` may see it: redacted for closed targets when the rule says so."""
        if not self.plan.redact or self.scan is None or self.engine.spec(name).is_self_hosted:
            return self.request
        if self._redacted is None:
            r = self.request
            body = redact(r.endpoint, r.body, self.scan, self.plan.redact)
            self._redacted = BackendRequest(r.endpoint, body, r.stream, r.request_id, r.traceparent, r.prefill)
        return self._redacted

    def candidates(self) -> Iterator[tuple[str, Backend]]:
        for name in self.plan.targets:
            window = self.engine.spec(name).context_window
            if self.context_floor is not None and (window is None or window <= self.context_floor):
                self.skipped.append((name, f"context window not larger than {self.context_floor}"))
                continue
            if not self.engine.circuits[name].allow():
                self.skipped.append((name, "circuit open"))
                continue
            yield name, self.engine.runtime.backends[name]

    async def attempt(self, name: str, request: BackendRequest, call: Callable[[BackendRequest], Awaitable[T]],
                      stream: bool = False) -> T:
        """One target, with its retries (each try is an attempt span, and counts in
        ``upstream_s``). A stream that opens stays counted as in flight until the relay ends
        it (``LoadMonitor.exit``)."""
        engine = self.engine
        circuit, load, spec = engine.circuits[name], engine.load, engine.spec(name)
        loop = asyncio.get_running_loop()

        async def once() -> T:
            self.attempts += 1
            started = loop.time()
            load.enter(name)
            try:
                if engine.telemetry is None or self.record is None or not self.record.traced:
                    result = await call(request)
                else:
                    with engine.telemetry.attempt_span(self.record, name, spec, self.attempts) as traceparent:
                        sent = request if traceparent is None or not spec.direct else \
                            dataclasses.replace(request, traceparent=traceparent)
                        result = await call(sent)
            except BackendError as exc:
                load.exit(name)
                circuit.failure(exc)
                self.failures.append((name, exc))
                raise
            except (asyncio.CancelledError, Exception):
                load.exit(name)
                circuit.release()
                raise
            finally:
                self.upstream_s += loop.time() - started
            if not stream:
                load.exit(name)
            circuit.success()
            return result

        return await retry_same_backend(once, spec.retry, circuit)

    def after_failure(self, name: str, exc: BackendError) -> None:
        """Decide whether failing over can help; re-raise ``exc`` when it cannot."""
        if isinstance(exc, ContextLengthExceeded):
            window = self.engine.spec(name).context_window
            if window is None:
                raise exc
            self.context_floor = max(window, self.context_floor or 0)
        elif not exc.retryable:
            raise exc

    def exhausted(self) -> Exception:
        if not self.failures:
            why = "; ".join(f"{n} ({reason})" for n, reason in self.skipped) or "no targets"
            return NoBackendAvailable(f"no usable backend for model {self.plan.alias!r} under rule "
                                      f"{self.plan.rule!r}: {why}")
        last = self.failures[-1][1]
        if isinstance(last, ContextLengthExceeded):
            return last
        return AllBackendsFailed(self.plan.alias, self.failures, self.skipped, rule=self.plan.rule)
