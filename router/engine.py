"""The attempt loop: the only module that meets both ``policies`` and ``backends``.

Given a ``Plan``, try its targets in order and never anything outside it:

- a target whose circuit is open is skipped without being touched;
- each target gets retries with backoff (``router.retry``) for failures that may pass;
- a retryable failure that persists moves on to the next target (failover);
- a request the upstream rejected is returned at once, except a context-length error,
  which moves on only to targets configured with a larger ``context_window``, and a
  request an adapter refused before sending it (``UnsupportedInput``: say, an image URL
  the gateway would have to fetch), which moves on to the next target; it is the answer
  (a 400) only when every target refused it.

Every try at a backend holds one ``Lease``: it counts the try in the backend's in-flight
load from the moment it starts until it ends, and tells the backend's circuit how it went.
A stream's lease travels on its ``StreamAnswer`` and ends when the relay is done with it.

With ``hedge`` (opt-in, a request that may leave): when the running attempt has produced
nothing — a stream's first event, a whole answer otherwise — ``after_s`` in, the next target
starts *in parallel*; the first to produce wins, the others are cancelled (their leases
abandoned, their connections closed). The cancelled attempts' input tokens are billed as a
provider bills them (``Hedged.cost_usd``, on the answer). Hedges only ever start plan targets.

Streams fail over invisibly until their first event is read here; after that,
``recover`` continues a broken stream on another allowed target that can take the
partial answer as a prefill — through the same attempt path (retries, spans, TTFT).
Redaction for closed targets depends on the request's sensitivity ``Scan``, so every
entry point takes one.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from backends import Api, Backend, BackendError, BackendRequest, BackendResponse, BackendStream
from backends.errors import ContextLengthExceeded, UnsupportedInput, UpstreamProtocolError
from policies import BackendSpec, Plan, cost
from policies.sensitivity import Scan, redact
from router.chunks import ChunkTracker
from router.deadline import Deadline
from router.errors import AllBackendsFailed, NoBackendAvailable, PolicyDenied
from router.health import Circuit, Circuits
from router.load import LoadMonitor
from router.record import RequestRecord
from router.retry import retry_same_backend
from router.runtime import Runtime
from router.telemetry import Telemetry

__all__ = ["Answer", "Engine", "Hedged", "Lease", "StreamAnswer"]

T = TypeVar("T")
Failures = list[tuple[str, BackendError]]


class Lease:
    """One try at one backend: in flight from creation until ``end`` (exactly once), and the
    only voice of that try in the backend's circuit."""

    __slots__ = ("backend", "_circuit", "_load", "_ended")

    def __init__(self, backend: str, circuit: Circuit, load: LoadMonitor) -> None:
        self.backend, self._circuit, self._load, self._ended = backend, circuit, load, False
        load.enter(backend)

    def succeeded(self) -> None:
        """The backend answered (a stream: its first event); a stream stays in flight."""
        self._circuit.success()

    def failed(self, exc: BackendError) -> None:
        self._circuit.failure(exc)
        self.end()

    def abandoned(self) -> None:
        """Ended without a verdict (cancelled, or a bug of ours): frees a half-open probe slot."""
        self._circuit.release()
        self.end()

    def broke(self, exc: BackendError) -> None:
        """A stream that had started failed mid-way."""
        self._circuit.streams["broken"] += 1
        self.failed(exc)

    def continued(self) -> None:
        """This stream continues another one that broke."""
        self._circuit.streams["continued"] += 1

    def malformed(self, events: int) -> None:
        if events:
            self._circuit.streams["malformed_events"] += events

    def end(self) -> None:
        if not self._ended:
            self._ended = True
            self._load.exit(self.backend)


@dataclass(slots=True)
class Answer:
    backend: str
    response: BackendResponse
    failures: Failures = field(default_factory=list)
    upstream_s: float = 0.0  # time spent in attempts (retries and failovers included)
    api: Api = "chat"  # the API the body is in: the request's, or its native one (``speaks``)
    hedge: Hedged | None = None


@dataclass(frozen=True, slots=True)
class Hedged:
    """A request that was hedged: the targets started in parallel and what the cancelled ones cost."""

    started: tuple[str, ...]  # every target that ran, in start order (the winner among them)
    winner: str
    cost_usd: float = 0.0  # the cancelled attempts' input tokens, at their targets' prices


@dataclass(slots=True)
class StreamAnswer:
    backend: str
    stream: BackendStream
    events: AsyncIterator[bytes]
    first: bytes
    lease: Lease
    failures: Failures = field(default_factory=list)
    upstream_s: float = 0.0  # time spent in attempts, up to and including the first event
    api: Api = "chat"  # the API of its events (see ``Answer.api``)
    hedge: Hedged | None = None

    async def close(self) -> None:
        """Done with this stream: it leaves the backend's in-flight count, its connection closes."""
        self.lease.end()
        await self.stream.aclose()


class Engine:
    def __init__(self, runtime: Runtime, circuits: Circuits, load: LoadMonitor,
                 telemetry: Telemetry | None = None, deadline: Deadline | None = None) -> None:
        self.runtime = runtime
        self.circuits = circuits
        self.load = load
        self.telemetry = telemetry  # spans for attempts of traced requests (None: never traced)
        #: the process's drain deadline: attempts (and the relay, ``router.streaming``) are cut when it passes
        self.deadline = deadline or Deadline()

    def spec(self, name: str) -> BackendSpec:
        return self.runtime.loaded.policy.backends[name]

    def lease(self, name: str) -> Lease:
        return Lease(name, self.circuits[name], self.load)

    async def complete(self, plan: Plan, request: BackendRequest, scan: Scan,
                       record: RequestRecord | None = None) -> Answer:
        run = _Run(self, plan, request, scan, record)
        if plan.hedge is not None:
            with self.deadline.cuttable():
                name, response, hedged = await run.hedged(lambda n, b: _completer(b), stream=False)
            return Answer(name, response, run.failures, run.upstream_s, run.request_for(name).endpoint, hedged)
        with self.deadline.cuttable():
            for name, backend in run.candidates():
                try:
                    response = await run.attempt(name, _completer(backend))
                except BackendError as exc:
                    run.after_failure(name, exc)
                    continue
                return Answer(name, response, run.failures, run.upstream_s, run.request_for(name).endpoint)
        raise run.exhausted()

    async def open_stream(self, plan: Plan, request: BackendRequest, scan: Scan,
                          record: RequestRecord | None = None) -> StreamAnswer:
        run = _Run(self, plan, request, scan, record)
        if plan.hedge is not None:
            with self.deadline.cuttable():
                _, answer, hedged = await run.hedged(lambda n, b: _opener(n, b, run), stream=True)
            answer.upstream_s, answer.hedge = run.upstream_s, hedged
            return answer
        with self.deadline.cuttable():
            for name, backend in run.candidates():
                try:
                    answer = await run.attempt(name, _opener(name, backend, run), stream=True)
                except BackendError as exc:
                    run.after_failure(name, exc)
                    continue
                answer.upstream_s = run.upstream_s
                return answer
        raise run.exhausted()

    async def recover(self, plan: Plan, request: BackendRequest, scan: Scan, tracker: ChunkTracker,
                      failed: set[str], record: RequestRecord | None = None
                      ) -> tuple[StreamAnswer | None, list[str]]:
        """Continue a stream that broke (its backend is in ``failed``) on another allowed
        target that supports prefill, through the normal attempt path. Returns the
        continuation (its first event read), or ``None`` and why each try failed."""
        why = tracker.why_not_continuable() or (None if request.endpoint == "chat"
                                                else "only chat streams can be continued")
        if why:
            return None, [why]
        continuation = _continuation_request(request, tracker.prefill(), tracker.content_events)
        if plan.redact:  # the partial answer is scanned too: a model may repeat what the prompt carried
            scan = self.runtime.scanner.scan(continuation.endpoint, continuation.body, floor=scan.level)
        run = _Run(self, plan, continuation, scan, record, exclude=failed, prefill=True)
        reasons: list[str] = []
        with self.deadline.cuttable():
            for name, backend in run.candidates():
                try:
                    answer = await run.attempt(name, _opener(name, backend, run), stream=True)
                except BackendError as exc:
                    failed.add(name)
                    reasons.append(f"{name}: {exc.message}")
                    continue
                answer.lease.continued()
                return answer, [f"{n}: {why}" for n, why in run.skipped] + reasons
        reasons = [f"{n}: {why}" for n, why in run.skipped] + reasons
        return None, reasons or ["no other allowed target"]


def _completer(backend: Backend) -> Callable[[BackendRequest, Lease], Awaitable[BackendResponse]]:
    def complete(request: BackendRequest, lease: Lease) -> Awaitable[BackendResponse]:
        return backend.complete(request)  # the coroutine itself: no extra frame on the hot path

    return complete


def _opener(name: str, backend: Backend, run: _Run) -> Callable[[BackendRequest, Lease], Awaitable[StreamAnswer]]:
    async def first_event(request: BackendRequest, lease: Lease) -> StreamAnswer:
        loop = asyncio.get_running_loop()
        started = loop.time()
        stream = await backend.open_stream(request)
        try:
            events = aiter(stream)
            first = await anext(events, None)
            if first is None:
                raise UpstreamProtocolError(f"{name} sent an empty stream", backend=name)
        except BaseException:
            await stream.aclose()
            raise
        run.engine.load.record_ttft(name, loop.time() - started)
        return StreamAnswer(name, stream, events, first, lease, run.failures, api=request.endpoint)

    return first_event


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
    """The bookkeeping of one request's attempts (or of one stream recovery's)."""

    def __init__(self, engine: Engine, plan: Plan, request: BackendRequest, scan: Scan,
                 record: RequestRecord | None = None, *, exclude: set[str] | None = None,
                 prefill: bool = False) -> None:
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
        self.skipped: list[tuple[str, str]] = [] if prefill else list(plan.skipped)
        self.exclude = exclude or set()
        self.prefill = prefill  # a continuation: only targets that take a partial answer
        self.context_floor: int | None = None
        self.record = record
        self.upstream_s = 0.0
        self.attempts = 0

    def request_for(self, name: str) -> BackendRequest:
        """The request as ``name`` may see it: in the client's own API when ``name`` serves it
        natively — unless it is a closed target the rule redacts for (redaction works on the
        translation: such a target gets the translation, redacted); else redacted for closed
        targets when the rule says so."""
        spec = self.engine.spec(name)
        native = self.request.native
        if native is not None and native.endpoint in spec.speaks and (spec.is_self_hosted or not self.plan.redact):
            return native
        if not self.plan.redact or spec.is_self_hosted:
            return self.request
        if self._redacted is None:
            r = self.request
            body = redact(r.endpoint, r.body, self.scan, self.plan.redact)
            self._redacted = BackendRequest(r.endpoint, body, r.stream, r.request_id, r.traceparent, r.prefill)
        return self._redacted

    def candidates(self) -> Iterator[tuple[str, Backend]]:
        for name in self.plan.targets:
            why = self._unusable(name)
            if why is not None:
                if why:
                    self.skipped.append((name, why))
                continue
            yield name, self.engine.runtime.backends[name]

    def _unusable(self, name: str) -> str | None:
        """Why ``name`` is not tried now (``""``: silently, it already failed), or ``None``."""
        if name in self.exclude:
            return ""
        spec = self.engine.spec(name)
        if self.prefill and not spec.can_prefill:
            return "does not support prefill"
        window = spec.context_window
        if self.context_floor is not None and (window is None or window <= self.context_floor):
            return f"context window not larger than {self.context_floor}"
        if not self.engine.circuits[name].allow():
            return "circuit open"
        return None

    async def attempt(self, name: str, call: Callable[[BackendRequest, Lease], Awaitable[T]],
                      stream: bool = False) -> T:
        """One target, with its retries: each try holds a ``Lease``, is an attempt span (when
        traced) and counts in ``upstream_s``. A stream's lease is handed to its answer."""
        engine, spec, request = self.engine, self.engine.spec(name), self.request_for(name)
        loop = asyncio.get_running_loop()

        async def once() -> T:
            self.attempts += 1
            started = loop.time()
            lease = engine.lease(name)
            try:
                if engine.telemetry is None or self.record is None or not self.record.traced:
                    result = await call(request, lease)
                else:
                    result = await self._traced(name, spec, request, lease, call)
            except UnsupportedInput as exc:  # refused before sending: no verdict on the backend's health
                lease.abandoned()
                self.failures.append((name, exc))
                raise
            except BackendError as exc:
                lease.failed(exc)
                self.failures.append((name, exc))
                raise
            except (asyncio.CancelledError, Exception):
                lease.abandoned()
                raise
            finally:
                self.upstream_s += loop.time() - started
            if not stream:
                lease.end()
            lease.succeeded()
            return result

        return await retry_same_backend(once, spec.retry, engine.circuits[name])

    async def hedged(self, make: Callable[[str, Backend], Callable[[BackendRequest, Lease], Awaitable[T]]],
                     stream: bool) -> tuple[str, T, Hedged | None]:
        """The targets in order, failing over as ``attempt`` does — but while the running
        attempts have produced nothing ``hedge.after_s`` after the last one started, the next
        target starts alongside (up to ``hedge.max_parallel``). The first result wins; the
        others are cancelled (a stream that also opened is closed) and their input tokens
        billed. Returns (winner, its result, the hedge or ``None`` when only one ran)."""
        hedge = self.plan.hedge
        assert hedge is not None
        candidates = self.candidates()
        running: dict[asyncio.Task[T], str] = {}
        started: list[str] = []
        hedges = 0  # targets started alongside a running one (not a failover after a failure)

        def start_next() -> bool:
            for name, backend in candidates:
                task = asyncio.get_running_loop().create_task(self.attempt(name, make(name, backend), stream=stream))
                running[task] = name
                started.append(name)
                return True
            return False

        more = start_next()
        try:
            while running:
                wait = hedge.after_s if more and len(running) < hedge.max_parallel else None
                done, _ = await asyncio.wait(running, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
                if not done:
                    more = start_next()
                    hedges += more
                    continue
                for task in done:
                    name = running.pop(task)
                    exc = task.exception()
                    if exc is None:
                        others = [t for t in done if t is not task]
                        return name, task.result(), await self._hedged(started, name, others) if hedges else None
                    if not isinstance(exc, BackendError):
                        raise exc
                    self.after_failure(name, exc)  # re-raises what failing over cannot help
                if not running:
                    more = start_next()
        finally:
            for task in running:
                task.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)
        raise self.exhausted()

    async def _hedged(self, started: list[str], winner: str, also_done: list[asyncio.Task[T]]) -> Hedged:
        """What hedging cost: each other target that ran (and did not fail) was cancelled once it
        had the prompt (a provider bills the input tokens it processed); one that also finished
        is closed."""
        for task in also_done:
            if task.exception() is None and isinstance(result := task.result(), StreamAnswer):
                await result.close()
        prices, tokens = self.engine.runtime.planner.prices, self.plan.input_tokens
        losers = [n for n in started if n != winner and n not in {f for f, _ in self.failures}]
        spent = sum(cost(prices[n], tokens, 0) for n in losers if prices[n].source != "unknown")
        return Hedged(tuple(started), winner, spent)

    async def _traced(self, name: str, spec: BackendSpec, request: BackendRequest, lease: Lease,
                      call: Callable[[BackendRequest, Lease], Awaitable[T]]) -> T:
        """The try inside its attempt span (its traceparent goes upstream to direct backends)."""
        telemetry, record = self.engine.telemetry, self.record
        assert telemetry is not None and record is not None
        with telemetry.attempt_span(record, name, spec, self.attempts) as traceparent:
            sent = request if traceparent is None or not spec.direct else \
                dataclasses.replace(request, traceparent=traceparent)
            return await call(sent, lease)

    def after_failure(self, name: str, exc: BackendError) -> None:
        """Decide whether failing over can help; re-raise ``exc`` when it cannot."""
        if isinstance(exc, ContextLengthExceeded):
            window = self.engine.spec(name).context_window
            if window is None:
                raise exc
            self.context_floor = max(window, self.context_floor or 0)
        elif not exc.retryable and not isinstance(exc, UnsupportedInput):
            raise exc

    def exhausted(self) -> Exception:
        if not self.failures:
            why = "; ".join(f"{n} ({reason})" for n, reason in self.skipped) or "no targets"
            return NoBackendAvailable(f"no usable backend for model {self.plan.alias!r} under rule "
                                      f"{self.plan.rule!r}: {why}")
        last = self.failures[-1][1]
        if isinstance(last, ContextLengthExceeded):
            return last
        if all(isinstance(exc, UnsupportedInput) for _, exc in self.failures):
            return self.failures[0][1]  # no target could take the request as it is: the client's to fix
        return AllBackendsFailed(self.plan.alias, self.failures, self.skipped, rule=self.plan.rule)
