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
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from backends import Backend, BackendError, BackendRequest, BackendResponse, BackendStream
from backends.errors import ContextLengthExceeded, UpstreamProtocolError
from policies import BackendSpec, Plan
from router.chunks import ChunkTracker
from router.errors import AllBackendsFailed, NoBackendAvailable
from router.health import Circuits
from router.retry import retry_same_backend
from router.runtime import Runtime

__all__ = ["Answer", "Engine", "StreamAnswer"]

T = TypeVar("T")
Failures = list[tuple[str, BackendError]]


@dataclass(slots=True)
class Answer:
    backend: str
    response: BackendResponse
    failures: Failures = field(default_factory=list)


@dataclass(slots=True)
class StreamAnswer:
    backend: str
    stream: BackendStream
    events: AsyncIterator[bytes]
    first: bytes
    failures: Failures = field(default_factory=list)


class Engine:
    def __init__(self, runtime: Runtime, circuits: Circuits) -> None:
        self.runtime = runtime
        self.circuits = circuits

    def spec(self, name: str) -> BackendSpec:
        return self.runtime.loaded.policy.backends[name]

    async def complete(self, plan: Plan, request: BackendRequest) -> Answer:
        run = _Run(self, plan)
        for name, backend in run.candidates():
            try:
                response = await run.attempt(name, lambda b=backend: b.complete(request))
            except BackendError as exc:
                run.after_failure(name, exc)
                continue
            return Answer(name, response, run.failures)
        raise run.exhausted()

    async def open_stream(self, plan: Plan, request: BackendRequest) -> StreamAnswer:
        run = _Run(self, plan)
        for name, backend in run.candidates():
            try:
                return await run.attempt(name, lambda n=name, b=backend: _first_event(n, b, request, run))
            except BackendError as exc:
                run.after_failure(name, exc)
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
            try:
                stream = await self.runtime.backends[name].open_stream(continuation)
            except BackendError as exc:
                circuit.failure(exc)
                failed.add(name)
                reasons.append(f"{name}: {exc.message}")
                continue
            except BaseException:
                circuit.release()
                raise
            return StreamAnswer(name, stream, aiter(stream), b""), reasons
        return None, reasons or ["no other allowed target"]


async def _first_event(name: str, backend: Backend, request: BackendRequest, run: _Run) -> StreamAnswer:
    stream = await backend.open_stream(request)
    try:
        events = aiter(stream)
        first = await anext(events, None)
        if first is None:
            raise UpstreamProtocolError(f"{name} sent an empty stream", backend=name)
    except BaseException:
        await stream.aclose()
        raise
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

    def __init__(self, engine: Engine, plan: Plan) -> None:
        self.engine = engine
        self.plan = plan
        self.failures: Failures = []
        self.skipped: list[tuple[str, str]] = list(plan.skipped)
        self.context_floor: int | None = None

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

    async def attempt(self, name: str, call: Callable[[], Awaitable[T]]) -> T:
        circuit = self.engine.circuits[name]

        async def once() -> T:
            try:
                result = await call()
            except BackendError as exc:
                circuit.failure(exc)
                self.failures.append((name, exc))
                raise
            except (asyncio.CancelledError, Exception):
                circuit.release()
                raise
            circuit.success()
            return result

        return await retry_same_backend(once, self.engine.spec(name).retry, circuit)

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
            return NoBackendAvailable(f"no usable backend for model {self.plan.alias!r}: {why}")
        last = self.failures[-1][1]
        if isinstance(last, ContextLengthExceeded):
            return last
        return AllBackendsFailed(self.plan.alias, self.failures, self.skipped)
