"""The request pipeline without a server: a format-neutral ``Call`` in, an ``Outcome`` out,
over scripted in-memory backends and the in-memory store.

Proves what every surface relies on: answers come from the allowed set, a budget
reservation is settled or released exactly once on every path (errors, a client that goes
away, cancellation, a stream that breaks), attempts leave nothing in flight, identical
concurrent misses make one upstream call, and a cached answer costs nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backends import BackendRequest, BackendResponse, Health
from backends.errors import StreamBroken, UpstreamServerError
from policies import Planner, load_policy_text
from policies.sensitivity import Scanner
from router import pipeline
from router.body import parse_body
from router.errors import AllBackendsFailed
from router.gateway import Gateway, build_gateway
from router.record import RequestRecord
from router.runtime import KIND_TABLE, Runtime, build_planner
from router.state.admission import Hold
from router.state.keys import Principal
from router.state.memory_store import MemoryStore

WHO = Principal("t", "k" * 12)
# 1 USD per million tokens in and out: 3 + 5 tokens = 8e-6 USD
POLICY = """
version: 1
backends:
  gpu: {kind: vllm, base_url: 'http://127.0.0.1:9/v1', model: m, price: {input_per_mtok_usd: 1, output_per_mtok_usd: 1},
        retry: {attempts: 1}}
  spare: {kind: llamacpp, base_url: 'http://127.0.0.1:9/v1', model: m,
          price: {input_per_mtok_usd: 1, output_per_mtok_usd: 1}, retry: {attempts: 1}}
models:
  chat: {targets: [gpu, spare]}
teams:
  t: {budget: {daily_usd: 10}}
cache: {mode: '%(cache)s'}
"""
WORDS = ["Hello", " from", " a", " fake."]


def chunk(delta: dict[str, object], finish: str | None = None) -> bytes:
    body = {"id": "c", "object": "chat.completion.chunk", "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + orjson.dumps(body) + b"\n\n"


class Script:
    """What a fake backend does on each call: ok, fail (503), hang, or break after N events."""

    def __init__(self, *steps: str) -> None:
        self.steps, self.calls = list(steps), 0

    def next(self) -> str:
        step = self.steps[min(self.calls, len(self.steps) - 1)]
        self.calls += 1
        return step


class FakeBackend:
    def __init__(self, name: str, script: Script) -> None:
        self.read_to_the_end = 0
        self.name, self.self_hosted, self.script = name, True, script
        self.requests: list[BackendRequest] = []
        self.open_streams = 0
        self.release = asyncio.Event()
        self.entered = asyncio.Event()  # a request is hanging here

    async def _step(self, request: BackendRequest) -> str:
        self.requests.append(request)
        step = self.script.next()
        if step == "fail":
            raise UpstreamServerError("503 from the fake", backend=self.name, status=503)
        if step == "hang":
            self.entered.set()
            await self.release.wait()
        return step

    async def complete(self, request: BackendRequest) -> BackendResponse:
        await self._step(request)
        body = {"id": "x", "object": "chat.completion", "model": "m",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(WORDS)},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}}
        return BackendResponse(orjson.dumps(body))

    async def open_stream(self, request: BackendRequest) -> FakeStream:
        step = await self._step(request)
        events = [chunk({"role": "assistant", "content": ""})] + [chunk({"content": w}) for w in WORDS]
        if step.startswith("break"):
            return FakeStream(self, events[: 1 + int(step.removeprefix("break"))], broken=True)
        usage = b'data: {"id":"c","object":"chat.completion.chunk","model":"m","choices":[],' \
                b'"usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}\n\n'
        if step == "nousage":  # asked for usage, ends with [DONE] without it (the bench mock does)
            return FakeStream(self, [*events, chunk({}, "stop"), b"data: [DONE]\n\n"], broken=False)
        return FakeStream(self, [*events, chunk({}, "stop"), usage, b"data: [DONE]\n\n"], broken=False)

    async def health(self) -> Health:
        return Health(True, "fake")

    async def load(self) -> None:
        return None

    async def close(self) -> None:
        return None


class FakeStream:
    def __init__(self, backend: FakeBackend, events: list[bytes], broken: bool) -> None:
        self._backend, self._events, self._broken = backend, events, broken
        backend.open_streams += 1

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._gen()

    async def _gen(self) -> AsyncIterator[bytes]:
        for item in self._events:
            yield item
        self._backend.read_to_the_end += 1  # not reached when the generator is only closed (or collected)
        if self._broken:
            raise StreamBroken(f"{self._backend.name} stream failed", backend=self._backend.name)

    async def aclose(self) -> None:
        self._backend.open_streams -= 1


class ListSink:
    """A surface's sink that keeps what it is given; ``gone_after``: the client leaves then."""

    def __init__(self, gone_after: int | None = None) -> None:
        self.headers: Mapping[str, str] | None = None
        self.events: list[bytes] = []
        self.closed = False
        self.gone_after = gone_after

    async def open(self, headers: Mapping[str, str]) -> None:
        self.headers = headers

    async def write(self, event: bytes) -> None:
        if self.gone_after is not None and len(self.events) >= self.gone_after:
            raise ConnectionResetError("client went away")
        self.events.append(event)

    async def write_many(self, events: list[bytes]) -> None:
        for event in events:
            await self.write(event)

    async def close(self) -> None:
        self.closed = True

    def text(self) -> str:
        out = []
        for event in self.events:
            data = event.removeprefix(b"data: ").strip()
            if data != b"[DONE]":
                for choice in orjson.loads(data).get("choices", []):
                    out.append(choice.get("delta", {}).get("content") or "")
        return "".join(out)


def gateway_for(scripts: dict[str, Script], cache: str = "off") -> tuple[Gateway, dict[str, FakeBackend], MemoryStore]:
    loaded = load_policy_text(POLICY % {"cache": cache}, {}, kinds=KIND_TABLE)
    backends = {name: FakeBackend(name, script) for name, script in scripts.items()}
    runtime = Runtime(loaded, build_planner(loaded), Scanner(loaded.policy.sensitivity), backends,  # type: ignore[arg-type]
                      b"")
    store = MemoryStore()
    return build_gateway(runtime, store), backends, store


def call(stream: bool = False, content: str = "Say hello.", who: Principal | None = WHO,
         headers: Mapping[str, str] | None = None) -> pipeline.Call:
    raw = orjson.dumps({"model": "chat", "stream": stream, "messages": [{"role": "user", "content": content}],
                        "stream_options": {"include_usage": True} if stream else None})
    return pipeline.Call("chat", parse_body(raw, "chat"), who, "rid", dict(headers or {}),
                         RequestRecord("chat", started=0.0))


async def spent(store: MemoryStore) -> int:
    """The team's day counter, in nano-USD (reservations included)."""
    return (await store.read([f"{{t}}:budget:day:{datetime.now(UTC):%Y-%m-%d}"]))[0]


def in_flight(gateway: Gateway) -> dict[str, int]:
    return {name: load.in_flight for name, load in gateway.load.snapshot().items() if load.in_flight}


async def test_a_json_answer_is_settled_to_its_actual_cost() -> None:
    gateway, backends, store = gateway_for({"gpu": Script("ok"), "spare": Script("ok")})
    c = call()
    outcome = await pipeline.run(gateway, c)
    assert isinstance(outcome, pipeline.Reply) and outcome.status == 200
    assert orjson.loads(outcome.body)["choices"][0]["message"]["content"] == "".join(WORDS)
    assert outcome.headers["x-switchyard-backend"] == "gpu" and outcome.headers["x-switchyard-rule"]
    assert outcome.headers["x-switchyard-cost-usd"] == "0.00000800"
    assert await spent(store) == 8000  # the reservation became the actual cost
    assert (c.record.backend, c.record.input_tokens, c.record.output_tokens) == ("gpu", 3, 5)
    assert in_flight(gateway) == {} and len(backends["spare"].requests) == 0


async def test_failed_attempts_fail_over_and_are_never_billed() -> None:
    gateway, backends, store = gateway_for({"gpu": Script("fail"), "spare": Script("ok")})
    c = call()
    outcome = await pipeline.run(gateway, c)
    assert isinstance(outcome, pipeline.Reply)
    assert outcome.headers["x-switchyard-backend"] == "spare" and outcome.headers["x-switchyard-tried"] == "gpu"
    assert await spent(store) == 8000 and c.record.fallback
    assert in_flight(gateway) == {}


async def test_when_every_target_fails_the_reservation_is_released() -> None:
    gateway, _, store = gateway_for({"gpu": Script("fail"), "spare": Script("fail")})
    with pytest.raises(AllBackendsFailed):
        await pipeline.run(gateway, call())
    assert await spent(store) == 0 and in_flight(gateway) == {}


async def test_cancellation_releases_the_reservation_and_the_lease() -> None:
    gateway, backends, store = gateway_for({"gpu": Script("hang"), "spare": Script("ok")})
    task = asyncio.create_task(pipeline.run(gateway, call()))
    await backends["gpu"].entered.wait()  # the attempt is in flight, its reservation made
    assert await spent(store) > 0 and in_flight(gateway) == {"gpu": 1}
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await spent(store) == 0 and in_flight(gateway) == {}
    assert gateway.engine.circuits["gpu"].snapshot()["state"] == "closed"  # no verdict: not a failure


async def test_a_stream_is_relayed_then_settled() -> None:
    gateway, backends, store = gateway_for({"gpu": Script("ok"), "spare": Script("ok")})
    c = call(stream=True)
    outcome = await pipeline.run(gateway, c)
    assert isinstance(outcome, pipeline.StreamReply)
    assert outcome.headers["x-switchyard-backend"] == "gpu"
    assert in_flight(gateway) == {"gpu": 1} and await spent(store) > 8000  # reserved, not settled yet
    sink = ListSink()
    await outcome.send(sink)
    assert sink.text() == "".join(WORDS) and sink.events[-1] == b"data: [DONE]\n\n" and sink.closed
    assert sink.headers is outcome.headers
    assert await spent(store) == 8000 and in_flight(gateway) == {} and backends["gpu"].open_streams == 0
    assert c.record.backend == "gpu" and c.record.output_tokens == 5


async def test_a_stream_that_ends_at_done_has_its_upstream_events_read_to_their_end() -> None:
    """Usage asked for but not sent: the answer ends at [DONE], and the upstream's events are
    then read to their end, not left for the garbage collector's async-generator finaliser
    (an event-loop wake-up per stream)."""
    gateway, backends, _ = gateway_for({"gpu": Script("nousage"), "spare": Script("ok")})
    outcome = await pipeline.run(gateway, call(stream=True))
    assert isinstance(outcome, pipeline.StreamReply)
    sink = ListSink()
    await outcome.send(sink)
    assert sink.text() == "".join(WORDS) and sink.events[-1] == b"data: [DONE]\n\n"
    assert backends["gpu"].read_to_the_end == 1


async def test_a_broken_stream_is_continued_through_the_attempt_path() -> None:
    gateway, backends, store = gateway_for({"gpu": Script("break2"), "spare": Script("ok")})
    c = call(stream=True)
    outcome = await pipeline.run(gateway, c)
    assert isinstance(outcome, pipeline.StreamReply)
    sink = ListSink()
    await outcome.send(sink)
    assert sink.events[-1] == b"data: [DONE]\n\n" and b'"error"' not in b"".join(sink.events)
    assert backends["spare"].requests[0].prefill  # the partial answer went along as a prefill
    assert c.record.recovered and c.record.backend == "spare"
    circuits = gateway.engine.circuits
    assert circuits["gpu"].streams["broken"] == 1 and circuits["spare"].streams["continued"] == 1
    assert in_flight(gateway) == {} and backends["gpu"].open_streams == backends["spare"].open_streams == 0
    assert await spent(store) > 0  # billed once, at the backend that finished it


async def test_a_stream_that_cannot_be_continued_ends_with_an_error_event_and_bills_what_was_produced() -> None:
    gateway, backends, store = gateway_for({"gpu": Script("break2"), "spare": Script("fail")})
    c = call(stream=True)
    outcome = await pipeline.run(gateway, c)
    assert isinstance(outcome, pipeline.StreamReply)
    sink = ListSink()
    await outcome.send(sink)
    assert b'"error"' in sink.events[-2] and sink.events[-1] == b"data: [DONE]\n\n"
    assert c.record.error_type == "stream_interrupted" and c.record.outcome == "error"
    # issue 11: "Hello from" reached the client: 3 input (estimate) + 3 relayed tokens (10 characters / 4)
    assert await spent(store) == 6000 and (c.record.input_tokens, c.record.output_tokens) == (3, 3)
    assert c.record.backend == "gpu" and in_flight(gateway) == {}


async def test_a_client_that_goes_away_mid_stream_pays_for_what_was_produced() -> None:
    """Issue 11: the upstream produced "Hello from" (the second word when the client had gone)."""
    gateway, backends, store = gateway_for({"gpu": Script("ok"), "spare": Script("ok")})
    c = call(stream=True)
    outcome = await pipeline.run(gateway, c)
    assert isinstance(outcome, pipeline.StreamReply)
    await outcome.send(ListSink(gone_after=2))
    assert await spent(store) == 6000 and in_flight(gateway) == {} and backends["gpu"].open_streams == 0
    assert (c.record.error_type, c.record.status, c.record.output_tokens) == ("client_closed", 499, 3)


async def test_a_client_that_goes_away_before_any_token_pays_nothing() -> None:
    gateway, backends, store = gateway_for({"gpu": Script("ok"), "spare": Script("ok")})
    c = call(stream=True)
    outcome = await pipeline.run(gateway, c)
    assert isinstance(outcome, pipeline.StreamReply)
    await outcome.send(ListSink(gone_after=0))
    assert await spent(store) == 0 and in_flight(gateway) == {} and backends["gpu"].open_streams == 0
    assert c.record.error_type == "client_closed" and c.record.cost_usd is None


class SlowCloseSink(ListSink):
    """A client socket the server is still finishing (the response's last bytes) when the
    client closes its connection: the server then cancels the handler."""

    def __init__(self) -> None:
        super().__init__()
        self.closing = asyncio.Event()

    async def close(self) -> None:
        self.closing.set()
        await asyncio.Event().wait()  # only a cancellation ends this


async def test_a_stream_cancelled_after_done_is_settled_and_a_success() -> None:
    """Issue 11: curl reads to [DONE] and closes; aiohttp cancels the handler. The answer
    reached the client whole: it is billed from its usage and is a success."""
    gateway, backends, store = gateway_for({"gpu": Script("ok"), "spare": Script("ok")})
    c = call(stream=True)
    outcome = await pipeline.run(gateway, c)
    assert isinstance(outcome, pipeline.StreamReply)
    sink = SlowCloseSink()
    task = asyncio.create_task(outcome.send(sink))
    await sink.closing.wait()
    task.cancel()
    await task  # the cancellation is absorbed: the request ends normally (access log, metrics)
    assert sink.events[-1] == b"data: [DONE]\n\n" and sink.text() == "".join(WORDS)
    assert await spent(store) == 8000 and c.record.error_type is None and c.record.outcome == "ok"
    assert in_flight(gateway) == {} and backends["gpu"].open_streams == 0


async def test_a_stream_cancelled_while_it_is_settled_is_settled_all_the_same() -> None:
    """The client closes while the settlement's store round trip is in flight (Redis): the
    settlement completes (not released, not left reserved)."""
    gateway, _, store = gateway_for({"gpu": Script("ok"), "spare": Script("ok")})
    adjust, entered, go_on = store.adjust, asyncio.Event(), asyncio.Event()

    async def slow_adjust(*args: object) -> None:
        entered.set()
        await go_on.wait()
        await adjust(*args)  # type: ignore[arg-type]

    c = call(stream=True)
    outcome = await pipeline.run(gateway, c)  # reserved
    assert isinstance(outcome, pipeline.StreamReply)
    store.adjust = slow_adjust  # type: ignore[method-assign]
    task = asyncio.create_task(outcome.send(ListSink()))
    await entered.wait()
    task.cancel()
    for _ in range(5):  # the cancellation is delivered; the settlement is still waiting on the store
        await asyncio.sleep(0)
    assert not task.done()
    go_on.set()
    await task
    assert await spent(store) == 8000 and c.record.outcome == "ok"


async def test_a_cached_stream_replayed_to_a_client_that_closes_after_done_is_a_success() -> None:
    gateway, _, _ = gateway_for({"gpu": Script("ok"), "spare": Script("ok")}, cache="exact")
    await pipeline.run(gateway, call())
    c = call(stream=True)
    replayed = await pipeline.run(gateway, c)
    assert isinstance(replayed, pipeline.StreamReply) and replayed.headers["x-switchyard-cache"] == "hit"
    sink = SlowCloseSink()
    task = asyncio.create_task(replayed.send(sink))
    await sink.closing.wait()
    task.cancel()
    await task
    assert sink.events[-1] == b"data: [DONE]\n\n" and c.record.outcome == "cache_hit"


async def test_a_cached_answer_is_free_and_replayed_as_a_stream() -> None:
    gateway, backends, store = gateway_for({"gpu": Script("ok"), "spare": Script("ok")}, cache="exact")
    first = await pipeline.run(gateway, call())
    assert isinstance(first, pipeline.Reply) and first.headers["x-switchyard-cache"] == "miss"
    before = await spent(store)
    again = await pipeline.run(gateway, call())
    assert isinstance(again, pipeline.Reply) and again.headers["x-switchyard-cache"] == "hit"
    assert again.body == first.body and again.headers["x-switchyard-cost-usd"] == "0.00000000"
    streamed = await pipeline.run(gateway, call(stream=True))
    assert isinstance(streamed, pipeline.StreamReply) and streamed.headers["x-switchyard-cache"] == "hit"
    sink = ListSink()
    await streamed.send(sink)
    assert sink.text() == "".join(WORDS) and sink.events[-1] == b"data: [DONE]\n\n"
    assert len(backends["gpu"].requests) == 1 and await spent(store) == before


async def test_identical_concurrent_misses_make_one_upstream_call() -> None:
    gateway, backends, store = gateway_for({"gpu": Script("hang"), "spare": Script("ok")}, cache="exact")
    tasks = [asyncio.create_task(pipeline.run(gateway, call())) for _ in range(3)]
    await backends["gpu"].entered.wait()
    for _ in range(20):  # let the others reach the in-flight request (no I/O: a fixed number of steps)
        await asyncio.sleep(0)
    backends["gpu"].release.set()
    outcomes = await asyncio.gather(*tasks)
    assert len(backends["gpu"].requests) == 1
    assert sorted(o.headers["x-switchyard-cache"] for o in outcomes) == ["hit", "hit", "miss"]
    assert await spent(store) == 8000  # only the request that asked pays


async def test_an_open_gateway_call_has_no_principal_and_reserves_nothing() -> None:
    gateway, _, store = gateway_for({"gpu": Script("ok"), "spare": Script("ok")})
    outcome = await pipeline.run(gateway, call(who=None))
    assert isinstance(outcome, pipeline.Reply) and await spent(store) == 0


class _Gatekeeper:
    def __init__(self) -> None:
        self.finished: list[tuple[object, ...]] = []
        self.released: list[tuple[object, ...]] = []

    async def finish(self, *args: object) -> bool:
        self.finished.append(args)
        return False

    async def release(self, *args: object) -> None:
        self.released.append(args)


async def test_a_hold_gives_back_exactly_once() -> None:
    gate = _Gatekeeper()
    async with Hold(gate, None, "k", leader=True) as hold:  # type: ignore[arg-type]
        await hold.settle(0.5, None)
        with pytest.raises(RuntimeError):
            await hold.settle(0.5, None)
    assert len(gate.finished) == 1
    assert gate.released == [(None, "k")]  # nothing stored: the lock is released for the waiters
    gate = _Gatekeeper()
    with pytest.raises(ValueError):
        async with Hold(gate, None, "k", leader=False):  # type: ignore[arg-type]
            raise ValueError("boom")
    assert gate.released == [(None, None)] and gate.finished == []
    gate = _Gatekeeper()
    async with Hold(gate, None, None, leader=None) as hold:  # type: ignore[arg-type]
        moved = hold.hand_over()
    assert gate.released == []  # the stream owns it now
    async with moved:
        pass
    assert gate.released == [(None, None)]


CLOSED_POLICY = """
version: 1
backends:
  gpu: {kind: vllm, base_url: 'http://127.0.0.1:9/v1', model: m, retry: {attempts: 1}}
  cloud: {kind: openai, model: gpt-x, api_key: sk-test, price: {input_per_mtok_usd: 1, output_per_mtok_usd: 1},
          retry: {attempts: 1}}
models:
  chat: {targets: [cloud, gpu]}
rules:
  - {name: home, when: {sensitivity: {gte: confidential}}, route: {targets: [gpu], fallback: none}}
cache: {mode: exact}
"""


def closed_gateway(scripts: dict[str, Script]) -> tuple[Gateway, dict[str, FakeBackend]]:
    loaded = load_policy_text(CLOSED_POLICY, {}, kinds=KIND_TABLE)
    backends = {name: FakeBackend(name, script) for name, script in scripts.items()}
    backends["cloud"].self_hosted = False
    runtime = Runtime(loaded, Planner(loaded, {}), Scanner(loaded.policy.sensitivity), backends,  # type: ignore[arg-type]
                      b"")
    return build_gateway(runtime, MemoryStore()), backends


async def test_a_restricted_request_is_never_served_a_closed_backends_in_flight_answer() -> None:
    """Issue 10, finding 3: two identical requests in flight, the second raised to restricted by
    its header. The first goes to the closed backend; the second must not share its answer."""
    gateway, backends = closed_gateway({"cloud": Script("hang"), "gpu": Script("ok")})
    public = asyncio.create_task(pipeline.run(gateway, call(who=None)))
    await backends["cloud"].entered.wait()
    restricted = asyncio.create_task(pipeline.run(gateway, call(who=None,
                                                                 headers={"x-switchyard-sensitivity": "restricted"})))
    for _ in range(20):  # let it reach the in-flight request, if it would join it
        await asyncio.sleep(0)
    backends["cloud"].release.set()
    first, second = await asyncio.gather(public, restricted)
    assert first.headers["x-switchyard-backend"] == "cloud"
    assert second.headers["x-switchyard-backend"] == "gpu" and second.headers["x-switchyard-cache"] == "miss"
    assert len(backends["gpu"].requests) == 1 and len(backends["cloud"].requests) == 1


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(requests=st.lists(st.tuples(st.integers(0, 1), st.booleans(), st.booleans()), min_size=2, max_size=6),
       cached_first=st.booleans())
def test_property_every_answer_comes_from_the_requests_allowed_set(
        requests: list[tuple[int, bool, bool]], cached_first: bool) -> None:
    """Invariant 1 over fresh, cached and coalesced answers: identical requests, some raised to
    restricted, on two replicas sharing one store (in-process coalescing, the cross-replica
    lock and wait, and the cache) — a restricted request is never answered by the closed backend."""
    asyncio.run(_allowed_set_scenario(requests, cached_first))


async def _allowed_set_scenario(requests: list[tuple[int, bool, bool]], cached_first: bool) -> None:
    loaded = load_policy_text(CLOSED_POLICY, {}, kinds=KIND_TABLE)
    store = MemoryStore()
    replicas, fakes = [], []
    for _ in range(2):
        backends = {"cloud": FakeBackend("cloud", Script("hang")), "gpu": FakeBackend("gpu", Script("ok"))}
        backends["cloud"].self_hosted = False
        runtime = Runtime(loaded, Planner(loaded, {}), Scanner(loaded.policy.sensitivity),  # type: ignore[arg-type]
                          backends, b"")
        replicas.append(build_gateway(runtime, store))
        fakes.append(backends)
    if cached_first:  # a public answer from the closed backend is already in the shared cache
        fakes[0]["cloud"].release.set()
        await pipeline.run(replicas[0], call(who=None))
    tasks = []
    for replica, restricted, stream in requests:
        headers = {"x-switchyard-sensitivity": "restricted"} if restricted else {}
        tasks.append((restricted, asyncio.create_task(pipeline.run(replicas[replica], call(stream, who=None,
                                                                                            headers=headers)))))
    for _ in range(50):
        await asyncio.sleep(0)
    for backends in fakes:
        backends["cloud"].release.set()
    for restricted, task in tasks:
        outcome = await task
        if isinstance(outcome, pipeline.StreamReply):
            await outcome.send(ListSink())
        if restricted:
            assert outcome.headers["x-switchyard-backend"] == "gpu", outcome.headers
