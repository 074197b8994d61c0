"""The sensitivity invariant, property-based.

For generated policies (self-hosted and closed backends, keys present, empty or absent,
random ``max_sensitivity`` and ``closed_max``, aliases, rules with random ``when`` and
routes) and generated requests (alias, level, tags, load, previous spill state, seed):

(a) a plan's targets are a subset of its allowed set;
(b) every allowed backend admits the request's level and has credentials (checked
    against the policy spec directly, not the planner's own bookkeeping);
(c) a request above ``closed_max`` never targets a closed backend unless that backend's
    own ``max_sensitivity`` admits the level;
(d) an empty allowed set is a denial or an unavailability, never targets;
(e) targets have no duplicates.

Then the real ``router.engine.Engine`` runs many plans over in-memory backends that fail
per a generated script (5xx, timeouts, 429, auth, broken streams, context length, slow
answers), with retries, failover, circuits (a fake clock opens and half-opens them),
hedging (``hedge`` on routes and aliases: a slow target gets the next one started alongside,
the loser cancelled), latency objectives and reserved slots (``slo``, ``capacity``) and
``Engine.recover`` continuations: every backend any call reached is in the plan's allowed
set, and every attempt — a cancelled hedge's too — left the in-flight count.

Deterministic (``derandomize``), bounded, no sockets, no sleeping (backoff 0)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from textwrap import dedent

import orjson
import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from backends import BackendError, BackendRequest, BackendResponse, Health
from backends.errors import (
    ContextLengthExceeded,
    StreamBroken,
    UpstreamAuthError,
    UpstreamRateLimited,
    UpstreamServerError,
    UpstreamTimeout,
)
from policies import (
    LEVELS,
    BackendLoad,
    LoadedPolicy,
    Plan,
    Planner,
    Policy,
    PolicyError,
    PolicyIssue,
    RequestFacts,
    compile_rules,
    level_rank,
)
from policies import load_policy_text as load_text
from policies.sensitivity import Scan, Scanner
from router.chunks import Recovery
from router.engine import Engine, StreamAnswer
from router.errors import GatewayError, NoBackendAvailable, PolicyDenied
from router.health import Circuits
from router.load import LoadMonitor
from router.runtime import KIND_TABLE, Runtime
from router.streaming import tracker_for

SELF_HOSTED_KINDS = frozenset(kind for kind, info in KIND_TABLE.listed.items() if info.self_hosted)
SELF_KINDS = sorted(SELF_HOSTED_KINDS)
CLOSED_KINDS = ["openai", "anthropic", "gemini", "mistral"]
TAGS = ["batch", "finance", "eu"]
EMAIL = "jane.doe@example.com"
BODIES = ["hello there", f"mail {EMAIL} please", "card 4111 1111 1111 1111", "call +44 20 7946 0958",
          "ticket from 10.1.2.3"]
RETRY = {"attempts": 2, "backoff_base_s": 0, "backoff_max_s": 0}
SETTINGS = dict(derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# -- generated policies -------------------------------------------------------------------------
@st.composite
def backend_specs(draw: st.DrawFn) -> dict[str, object]:
    spec: dict[str, object] = {"model": "m", "retry": RETRY,
                               "circuit": {"failures": draw(st.integers(1, 3)), "window_s": 60,
                                           "cooldown_s": draw(st.sampled_from([1, 1, 1000]))}}
    if draw(st.booleans()):
        spec["kind"] = draw(st.sampled_from(CLOSED_KINDS))
        key = draw(st.sampled_from(["sk-test-key", "sk-test-key", "", None]))  # present, empty (disabled), credential chain
        if key is not None:
            spec["api_key"] = key
        if draw(st.integers(0, 5)) == 0:
            spec["self_hosted"] = True  # a closed kind pointing at our own deployment
        if draw(st.booleans()):
            spec["price"] = {"input_per_mtok_usd": draw(st.sampled_from([0.1, 1, 5])),
                             "output_per_mtok_usd": draw(st.sampled_from([0.4, 4, 15]))}
    else:
        spec["kind"] = draw(st.sampled_from(SELF_KINDS))
        spec["base_url"] = "http://127.0.0.1:9/v1"
        if draw(st.integers(0, 4)) == 0:
            spec["self_hosted"] = False  # an OpenAI-compatible server run by a third party: treated as closed
        elif draw(st.booleans()):
            slots = draw(st.integers(1, 4))
            spec["capacity"] = {"slots": slots, "reserved_slots": draw(st.integers(0, slots - 1))}
    spec["supports_prefill"] = draw(st.sampled_from([True, True, False]))
    if draw(st.booleans()):
        spec["max_sensitivity"] = draw(st.sampled_from(LEVELS))
    if draw(st.booleans()):
        spec["context_window"] = draw(st.sampled_from([4096, 32768, 200000]))
    return spec


@st.composite
def whens(draw: st.DrawFn, aliases: list[str]) -> dict[str, object]:
    clauses = {
        "sensitivity": st.one_of(st.sampled_from(LEVELS),
                                 st.fixed_dictionaries({draw(st.sampled_from(["gte", "lt", "eq", "ne"])):
                                                        st.sampled_from(LEVELS)})),
        "tags": st.one_of(st.sampled_from(TAGS), st.lists(st.sampled_from(TAGS), min_size=1, unique=True)),
        "model": st.one_of(st.sampled_from(aliases),
                           st.fixed_dictionaries({"in": st.lists(st.sampled_from(aliases), min_size=1, unique=True)})),
        "stream": st.booleans(),
    }
    keys = draw(st.lists(st.sampled_from(sorted(clauses)), max_size=2, unique=True))
    when = {k: draw(clauses[k]) for k in keys}
    if draw(st.integers(0, 6)) == 0:
        when = {"not": when or {"tags": "batch"}}
    return when


@st.composite
def routes(draw: st.DrawFn, names: list[str]) -> dict[str, object]:
    if draw(st.integers(0, 7)) == 0:
        return {"deny": "not for you"}
    route: dict[str, object] = {}
    if draw(st.booleans()):
        route["targets"] = draw(st.lists(st.sampled_from(names), min_size=1, unique=True))
    strategy = draw(st.sampled_from(["priority", "cheapest", "least_loaded", "lowest_latency", "weighted"]))
    route["strategy"] = strategy
    if strategy == "weighted":
        picked = draw(st.lists(st.sampled_from(names), min_size=1, unique=True))
        route["weights"] = {b: draw(st.sampled_from([0, 0.5, 1, 3])) for b in picked}
    route["fallback"] = draw(st.sampled_from(["next", "next", "none"]))
    if draw(st.booleans()):
        route["spillover"] = {"queue_over": draw(st.sampled_from([0, 2, 8])),
                              "resume_below": draw(st.sampled_from([0.25, 0.5, 1]))}
    if draw(st.booleans()):
        route["redact"] = ["email"]
    if draw(st.integers(0, 3)) == 0:
        route["slo"] = {"ttft_s": draw(st.sampled_from([0.05, 1, 30]))}
    if draw(st.booleans()):
        route["hedge"] = {"after_s": 0.001, "max_parallel": draw(st.sampled_from([2, 3]))}
    return route


@st.composite
def policies(draw: st.DrawFn) -> dict[str, object]:
    names = [f"b{i}" for i in range(draw(st.integers(2, 6)))]
    aliases = [f"a{i}" for i in range(draw(st.integers(1, 3)))]
    rules = [{"name": f"r{i}", "when": draw(whens(aliases)), "route": draw(routes(names))}
             for i in range(draw(st.integers(0, 4)))]
    return {
        "version": 1,
        "backends": {n: draw(backend_specs()) for n in names},
        "models": {a: {"targets": draw(st.lists(st.sampled_from(names), min_size=1, unique=True)),
                       **({"hedge": {"after_s": 0.001}} if draw(st.booleans()) else {})} for a in aliases},
        "sensitivity": {"closed_max": draw(st.sampled_from(LEVELS)),
                        "default": draw(st.sampled_from(["public", "public", "internal"]))},
        "rules": rules,
    }


def load(data: dict[str, object]) -> LoadedPolicy:
    """Validate and compile like the loader does, minus the (slow, pure-Python) YAML parse."""
    policy = Policy.model_validate(data, context=KIND_TABLE)
    rules, issues = compile_rules(policy, lambda loc, msg: PolicyIssue("generated", None, str(loc), msg))
    assert issues == []
    return LoadedPolicy(policy, "generated", rules=rules)


@settings(max_examples=25, **SETTINGS)
@given(generated=policies())
def test_generated_policies_load_the_same_through_the_yaml_loader(generated: dict[str, object]):
    through_yaml = load_text(yaml.safe_dump(generated, sort_keys=False), {}, kinds=KIND_TABLE, file="generated.yaml")
    direct = load(generated)
    assert through_yaml.policy == direct.policy
    assert [r.name for r in through_yaml.rules] == [r.name for r in direct.rules]


@st.composite
def requests(draw: st.DrawFn, data: dict[str, object]) -> tuple[RequestFacts, dict[str, object], str | None]:
    """(facts without sensitivity, body, client floor); the level comes from the real scanner."""
    body = {"model": draw(st.sampled_from(list(data["models"]))),  # type: ignore[arg-type]
            "messages": [{"role": "user", "content": draw(st.sampled_from(BODIES))}]}
    floor = draw(st.sampled_from([None, *LEVELS]))
    facts = RequestFacts(model=str(body["model"]), stream=draw(st.sampled_from([True, True, False])),
                         tags=frozenset(draw(st.lists(st.sampled_from(TAGS), unique=True))),
                         input_tokens=draw(st.integers(0, 5000)), max_tokens=draw(st.sampled_from([None, 64])))
    return facts, body, floor


loads = st.builds(BackendLoad, queue=st.sampled_from([None, 0, 1, 3, 5, 20]),
                  running=st.sampled_from([None, 0, 4]), kv_cache=st.sampled_from([None, 0.1, 0.95]),
                  in_flight=st.integers(0, 3), ttft_ewma_s=st.sampled_from([None, 0.05, 2.0]),
                  busy=st.sampled_from([None, 0, 2, 10]), decode_tps=st.sampled_from([None, 20.0]))


# -- the invariant, stated against the policy spec ----------------------------------------------
def self_hosted(spec: dict[str, object]) -> bool:
    return bool(spec["self_hosted"]) if "self_hosted" in spec else spec["kind"] in SELF_HOSTED_KINDS


def max_level(data: dict[str, object], name: str) -> str:
    spec = data["backends"][name]  # type: ignore[index]
    if spec.get("max_sensitivity"):
        return spec["max_sensitivity"]
    return "restricted" if self_hosted(spec) else data["sensitivity"]["closed_max"]  # type: ignore[index]


def has_credentials(spec: dict[str, object]) -> bool:
    return spec["kind"] in SELF_HOSTED_KINDS or spec.get("api_key") != ""


def may_receive(data: dict[str, object], name: str, level: str) -> bool:
    spec = data["backends"][name]  # type: ignore[index]
    return has_credentials(spec) and level_rank(level) <= level_rank(max_level(data, name))


def route_targets(data: dict[str, object], plan: Plan) -> list[str]:
    rule = next((r for r in data["rules"] if r["name"] == plan.rule), None)  # type: ignore[attr-defined]
    if rule is not None and rule["route"].get("targets"):
        return rule["route"]["targets"]
    return data["models"][plan.alias]["targets"]  # type: ignore[index]


def check_plan(data: dict[str, object], plan: Plan, level: str) -> None:
    targets = list(plan.targets)
    assert set(targets) <= plan.allowed  # (a)
    for b in plan.allowed:  # (b)
        assert may_receive(data, b, level), (b, level)
    closed_max = data["sensitivity"]["closed_max"]  # type: ignore[index]
    if level_rank(level) > level_rank(closed_max):  # (c)
        for b in targets:
            spec = data["backends"][b]  # type: ignore[index]
            if not self_hosted(spec):
                assert spec.get("max_sensitivity") and level_rank(spec["max_sensitivity"]) >= level_rank(level)
    if not plan.allowed:  # (d)
        assert targets == [] and (plan.unavailable or plan.denied)
    assert len(targets) == len(set(targets))  # (e)
    if plan.denied is not None:
        assert targets == [] and plan.allowed == frozenset()
        return
    # the allowed set is exactly the route's targets that may receive this level: nothing from outside the rule
    assert plan.allowed == {b for b in route_targets(data, plan) if may_receive(data, b, level)}
    rule = next((r for r in data["rules"] if r["name"] == plan.rule), None)  # type: ignore[attr-defined]
    if rule is not None and rule["route"].get("fallback") == "none":
        assert len(targets) <= 1


@settings(max_examples=150, **SETTINGS)
@given(data=st.data(), generated=policies())
def test_property_plans_never_leave_the_allowed_set(data: st.DataObject, generated: dict[str, object]):
    loaded = load(generated)
    planner, scanner = Planner(loaded), Scanner(loaded.policy.sensitivity)
    names = list(generated["backends"])  # type: ignore[arg-type]
    for _ in range(3):
        facts, body, floor = data.draw(requests(generated))
        scan = scanner.scan("chat", body, floor=floor)
        facts = RequestFacts(**{**_fields(facts), "sensitivity": scan.level, "detectors": scan.detectors})
        load_now = data.draw(st.dictionaries(st.sampled_from(names), loads))
        spilling = frozenset(data.draw(st.lists(st.sampled_from(names), unique=True)))
        rng = random.Random(data.draw(st.integers(0, 2**16)))
        for explain in (False, True):
            plan = planner.plan(facts, load_now, spilling, rng, explain=explain)
            check_plan(generated, plan, scan.level)
            if explain:
                assert [t.rule for t in plan.trace] == [r["name"] for r in generated["rules"]]  # type: ignore[index]
                assert sum(t.matched for t in plan.trace) <= 1
        assert all(c.allowed == (c.backend in plan.allowed) for c in plan.candidates)


def _fields(facts: RequestFacts) -> dict[str, object]:
    return {name: getattr(facts, name) for name in RequestFacts.__slots__}  # type: ignore[attr-defined]


# -- the real engine over scripted in-memory backends ------------------------------------------
OUTCOMES = ["ok", "ok", "ok", "server", "timeout", "ratelimit", "auth", "broken0", "broken1", "broken1", "broken3",
            "context", "slow", "slow"]  # slow: answers after 10 ms (a hedge of 1 ms starts the next target meanwhile)


def _event(payload: dict[str, object]) -> bytes:
    return b"data: " + orjson.dumps(payload)


def _chunk(delta: dict[str, object], finish: str | None = None) -> bytes:
    return _event({"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "m",
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


@dataclass
class Call:
    backend: str
    body: dict[str, object]
    prefill: bool


@dataclass
class FakeBackend:
    """Implements ``backends.Backend``; each call takes the next scripted outcome (the last repeats)."""

    name: str
    self_hosted: bool
    script: list[str]
    log: list[Call]
    calls: int = 0
    words: list[str] = field(default_factory=lambda: ["Hello", " from", " a", " fake", " backend."])

    def _next(self, request: BackendRequest) -> str:
        self.log.append(Call(self.name, dict(request.body), request.prefill))
        outcome = self.script[min(self.calls, len(self.script) - 1)]
        self.calls += 1
        error = {
            "server": UpstreamServerError("503 from the fake", backend=self.name, status=503),
            "timeout": UpstreamTimeout("no first token", backend=self.name),
            "ratelimit": UpstreamRateLimited("slow down", backend=self.name),
            "auth": UpstreamAuthError("bad key", backend=self.name),
            "context": ContextLengthExceeded("too long", backend=self.name, status=400),
        }.get(outcome)
        if error is not None:
            raise error
        return outcome

    async def complete(self, request: BackendRequest) -> BackendResponse:
        outcome = self._next(request)
        if outcome == "slow":
            await asyncio.sleep(0.01)
        if outcome.startswith("broken"):
            raise UpstreamServerError("connection reset", backend=self.name)
        body = {"id": "x", "object": "chat.completion", "model": "m",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(self.words)},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}}
        return BackendResponse(orjson.dumps(body))

    async def open_stream(self, request: BackendRequest) -> _Stream:
        outcome = self._next(request)
        if outcome == "slow":
            await asyncio.sleep(0.01)
        events = [_chunk({"role": "assistant", "content": ""})]
        events += [_chunk({"content": w}) for w in self.words]
        breaks_after = int(outcome.removeprefix("broken")) if outcome.startswith("broken") else None
        if breaks_after is not None:
            return _Stream(self.name, events[: 1 + breaks_after], broken=True)
        return _Stream(self.name, [*events, _chunk({}, "stop"), b"data: [DONE]"], broken=False)

    async def health(self) -> Health:
        return Health(True, "fake")

    async def load(self) -> None:
        return None

    async def close(self) -> None:
        return None


class _Stream:
    def __init__(self, name: str, events: list[bytes], broken: bool) -> None:
        self._name, self._events, self._broken = name, events, broken

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._gen()

    async def _gen(self) -> AsyncIterator[bytes]:
        for item in self._events:
            yield item
        if self._broken:
            raise StreamBroken(f"{self._name} stream failed", backend=self._name)

    async def aclose(self) -> None:
        return None


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def build_engine(loaded: LoadedPolicy, scripts: dict[str, list[str]], log: list[Call],
                 clock: Clock) -> tuple[Engine, Planner, Scanner]:
    policy = loaded.policy
    planner, scanner = Planner(loaded), Scanner(policy.sensitivity)
    # every backend, disabled ones included: reaching one of those would be recorded too
    backends = {n: FakeBackend(n, s.is_self_hosted, scripts[n], log) for n, s in policy.backends.items()}
    runtime = Runtime(loaded, planner, scanner, backends, b"")  # type: ignore[arg-type]
    circuits = Circuits({n: s.circuit for n, s in policy.backends.items()}, clock=clock)
    return Engine(runtime, circuits, LoadMonitor(backends, interval_s=1, stale_after_s=5)), planner, scanner


async def relay_like(engine: Engine, plan: Plan, request: BackendRequest, scan: Scan) -> str:
    """What ``router.streaming.relay`` does, minus the sink: read the stream, recover breaks."""
    answer = await engine.open_stream(plan, request, scan)
    tracker = tracker_for(request.body)
    failed = {name for name, _ in answer.failures}
    current: StreamAnswer | None = answer
    try:
        while current is not None and not (tracker.done or tracker.complete):
            try:
                tracker.feed(current.first)
                async for event in current.events:
                    tracker.feed(event)
                    if tracker.done or tracker.complete:
                        break
                else:
                    break
            except BackendError as exc:
                broken, current = current, None
                failed.add(broken.backend)
                broken.lease.broke(exc)
                await broken.close()
                current, _ = await engine.recover(plan, request, scan, tracker, failed)
                if current is None:
                    return "error-event"
                tracker.continue_with(Recovery(broken.backend, current.backend, exc.message))
        return "ok"
    finally:
        if current is not None:
            await current.close()


@settings(max_examples=100, **SETTINGS)
@given(data=st.data(), generated=policies())
def test_property_engine_reaches_only_allowed_backends(data: st.DataObject, generated: dict[str, object]):
    loaded = load(generated)
    names = list(generated["backends"])  # type: ignore[arg-type]
    scripts = {n: data.draw(st.lists(st.sampled_from(OUTCOMES), min_size=1, max_size=6), label=f"script {n}")
               for n in names}
    log: list[Call] = []
    clock = Clock()
    engine, planner, scanner = build_engine(loaded, scripts, log, clock)
    spilling: frozenset[str] = frozenset()
    for _ in range(data.draw(st.integers(1, 5), label="requests")):
        facts, body, floor = data.draw(requests(generated))
        scan = scanner.scan("chat", body, floor=floor)
        facts = RequestFacts(**{**_fields(facts), "sensitivity": scan.level, "detectors": scan.detectors})
        plan = planner.plan(facts, data.draw(st.dictionaries(st.sampled_from(names), loads)), spilling,
                            random.Random(data.draw(st.integers(0, 2**16))))
        spilling = plan.spilling
        check_plan(generated, plan, scan.level)
        request = BackendRequest("chat", {**body, "stream": facts.stream}, facts.stream, "rid")
        before = len(log)
        outcome = asyncio.run(_one(engine, plan, request, scan, facts.stream))
        reached = log[before:]
        event(f"outcome: {outcome}")
        event(f"backends reached: {min(3, len({c.backend for c in reached}))}")
        if any(c.prefill for c in reached):
            event("a broken stream was continued")
        if plan.hedge is not None and len({c.backend for c in reached}) > 1:
            event("hedged or failed over with a hedge")
        for call in reached:
            assert call.backend in plan.allowed, (call.backend, plan)
            assert call.backend in plan.targets
            assert may_receive(generated, call.backend, scan.level)
            spec = generated["backends"][call.backend]  # type: ignore[index]
            if "email" in plan.redact and not self_hosted(spec):  # continuations included
                assert EMAIL not in orjson.dumps(call.body).decode()  # closed targets get placeholders
        if plan.denied is not None:
            assert outcome == "PolicyDenied" and not reached
        elif not plan.targets:
            assert outcome == "NoBackendAvailable" and not reached
        # every attempt, retry, failover and continuation was accounted for and released
        assert {n: s.in_flight for n, s in engine.load.snapshot().items() if s.in_flight} == {}
        clock.now += data.draw(st.sampled_from([0.0, 1.5]), label="time passes")  # lets circuits half-open


async def _one(engine: Engine, plan: Plan, request: BackendRequest, scan: Scan, stream: bool) -> str:
    try:
        if stream:
            return await relay_like(engine, plan, request, scan)
        await engine.complete(plan, request, scan)
        return "ok"
    except (GatewayError, BackendError) as exc:
        return type(exc).__name__


# -- explicit cases ---------------------------------------------------------------------------
TWO = dedent("""\
    version: 1
    backends:
      local: {kind: vllm, base_url: 'http://127.0.0.1:9/v1', model: m, retry: {attempts: 2, backoff_base_s: 0}}
      closed:
        kind: anthropic
        model: m
        api_key: sk-test
        max_sensitivity: confidential
        retry: {attempts: 2, backoff_base_s: 0}
    models:
      chat: {targets: [local, closed]}
    rules:
    """)


def test_engine_never_falls_back_to_a_closed_backend_for_restricted_data():
    loaded = load_text(TWO + "  - {name: all, route: {targets: [local, closed]}}\n", {}, kinds=KIND_TABLE)
    log: list[Call] = []
    engine, planner, scanner = build_engine(loaded, {"local": ["server"], "closed": ["ok"]}, log, Clock())
    body = {"model": "chat", "messages": [{"role": "user", "content": "card 4111 1111 1111 1111"}]}
    scan = scanner.scan("chat", body)
    plan = planner.plan(RequestFacts(model="chat", sensitivity=scan.level))
    assert scan.level == "restricted" and plan.targets == ("local",)
    assert plan.skipped == (("closed", "not allowed at sensitivity restricted (max confidential)"),)
    outcome = asyncio.run(_one(engine, plan, BackendRequest("chat", body, False, "r"), scan, False))
    assert outcome == "AllBackendsFailed"
    assert [c.backend for c in log] == ["local", "local"]  # retried on itself, never the closed one


def test_recovery_only_continues_on_allowed_prefill_targets():
    loaded = load_text(TWO + "  - {name: all, route: {targets: [local, closed]}}\n", {}, kinds=KIND_TABLE)
    log: list[Call] = []
    engine, planner, scanner = build_engine(loaded, {"local": ["broken2"], "closed": ["ok"]}, log, Clock())
    body = {"model": "chat", "messages": [{"role": "user", "content": "mail jane.doe@example.com"}],
            "stream": True}
    scan = scanner.scan("chat", body)
    plan = planner.plan(RequestFacts(model="chat", sensitivity=scan.level, stream=True))
    assert plan.targets == ("local", "closed")  # confidential: the closed one admits it
    assert asyncio.run(_one(engine, plan, BackendRequest("chat", body, True, "r"), scan, True)) == "ok"
    assert [(c.backend, c.prefill) for c in log] == [("local", False), ("closed", True)]
    restricted = {"model": "chat", "messages": [{"role": "user", "content": "key AKIAIOSFODNN7EXAMPLE"}],
                  "stream": True}
    scan = scanner.scan("chat", restricted)
    plan = planner.plan(RequestFacts(model="chat", sensitivity=scan.level, stream=True))
    log.clear()
    assert asyncio.run(_one(engine, plan, BackendRequest("chat", restricted, True, "r"), scan, True)) == "error-event"
    assert [c.backend for c in log] == ["local"]  # broken, and nothing allowed can continue it


def test_recovery_continuation_to_a_closed_target_is_redacted():
    loaded = load_text(TWO + "  - {name: all, route: {targets: [local, closed], redact: [email]}}\n", {}, kinds=KIND_TABLE)
    log: list[Call] = []
    engine, planner, scanner = build_engine(loaded, {"local": ["broken2"], "closed": ["ok"]}, log, Clock())
    body = {"model": "chat", "messages": [{"role": "user", "content": f"mail {EMAIL}"}], "stream": True}
    scan = scanner.scan("chat", body)
    plan = planner.plan(RequestFacts(model="chat", sensitivity=scan.level, stream=True))
    assert asyncio.run(_one(engine, plan, BackendRequest("chat", body, True, "r"), scan, True)) == "ok"
    first, continuation = log
    assert (first.backend, first.prefill, continuation.backend, continuation.prefill) == \
        ("local", False, "closed", True)
    assert first.body["messages"][0]["content"] == f"mail {EMAIL}"  # self-hosted: the original
    assert continuation.body["messages"] == [{"role": "user", "content": "mail <EMAIL_1>"},
                                             {"role": "assistant", "content": "Hello from"}]
    assert EMAIL not in orjson.dumps(continuation.body).decode()


def test_redaction_applies_to_closed_fallbacks_not_to_self_hosted_targets():
    loaded = load_text(TWO + "  - {name: all, route: {targets: [local, closed], redact: [email]}}\n", {}, kinds=KIND_TABLE)
    log: list[Call] = []
    engine, planner, scanner = build_engine(loaded, {"local": ["server"], "closed": ["ok"]}, log, Clock())
    body = {"model": "chat", "messages": [{"role": "user", "content": f"mail {EMAIL} and {EMAIL.upper()}"}]}
    scan = scanner.scan("chat", body)
    plan = planner.plan(RequestFacts(model="chat", sensitivity=scan.level))
    assert asyncio.run(_one(engine, plan, BackendRequest("chat", body, False, "r"), scan, False)) == "ok"
    assert [c.backend for c in log] == ["local", "local", "closed"]
    assert log[0].body["messages"][0]["content"] == f"mail {EMAIL} and {EMAIL.upper()}"
    assert log[2].body["messages"][0]["content"] == "mail <EMAIL_1> and <EMAIL_1>"  # same value, same number
    assert body["messages"][0]["content"] == f"mail {EMAIL} and {EMAIL.upper()}"  # the client's body is untouched


def test_open_circuit_is_skipped_and_never_replaced_by_a_disallowed_backend():
    loaded = load_text(TWO.replace("retry: {attempts: 2", "circuit: {failures: 1, cooldown_s: 1000}, "
                                   "retry: {attempts: 2", 1) + "  - {name: all, route: {targets: [local, closed]}}\n",
                       {}, kinds=KIND_TABLE)
    log: list[Call] = []
    engine, planner, scanner = build_engine(loaded, {"local": ["server"], "closed": ["ok"]}, log, Clock())
    secret = {"model": "chat", "messages": [{"role": "user", "content": "-----BEGIN PRIVATE KEY-----\nMIIB\n"
                                                                         "-----END PRIVATE KEY-----"}]}
    scan = scanner.scan("chat", secret)
    plan = planner.plan(RequestFacts(model="chat", sensitivity=scan.level))
    assert plan.targets == ("local",)
    assert asyncio.run(_one(engine, plan, BackendRequest("chat", secret, False, "r"), scan, False)) == \
        "AllBackendsFailed"
    assert engine.circuits["local"].snapshot()["state"] == "open"
    log.clear()
    with pytest.raises(NoBackendAvailable, match=r"local \(circuit open\)"):
        asyncio.run(engine.complete(plan, BackendRequest("chat", secret, False, "r"), scan))
    assert log == []


def test_denied_and_unavailable_plans_reach_nothing():
    loaded = load_text(TWO + "  - {name: no-batch, when: {tags: batch}, route: {deny: batch jobs go elsewhere}}\n"
                             "  - {name: closed-only, route: {targets: [closed]}}\n", {}, kinds=KIND_TABLE)
    log: list[Call] = []
    engine, planner, scanner = build_engine(loaded, {"local": ["ok"], "closed": ["ok"]}, log, Clock())
    nothing = scanner.scan("chat", {})
    denied = planner.plan(RequestFacts(model="chat", tags=frozenset({"batch"})))
    assert denied.denied == "batch jobs go elsewhere" and denied.targets == ()
    with pytest.raises(PolicyDenied, match="denied by rule 'no-batch': batch jobs go elsewhere"):
        asyncio.run(engine.complete(denied, BackendRequest("chat", {}, False, "r"), nothing))
    unavailable = planner.plan(RequestFacts(model="chat", sensitivity="restricted"))
    assert unavailable.targets == () and unavailable.allowed == frozenset()
    assert "under rule 'closed-only'" in (unavailable.unavailable or "")
    with pytest.raises(NoBackendAvailable, match="closed-only"):
        asyncio.run(engine.complete(unavailable, BackendRequest("chat", {}, False, "r"), nothing))
    assert log == []


def test_duplicate_route_targets_are_rejected():
    """(e) by construction: a rule listing a backend twice is a load error, as an alias doing so is."""
    with pytest.raises(PolicyError) as info:
        load_text(TWO + "  - {name: dup, route: {targets: [local, closed, local]}}\n", {}, kinds=KIND_TABLE, file="p.yaml")
    assert [str(i) for i in info.value.issues] == ["p.yaml:13 rules[0].route.targets: duplicate targets: ['local']"]
