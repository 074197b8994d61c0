"""The request pipeline: one owner of a request, from a format-neutral ``Call`` to an
``Outcome`` the surface writes back.

    Call ─► facts + scan (policies) ─► plan (policies) ─► admission (limits, budget
    reservation, cache lookup, coalescing: router.state) ─► attempts (router.engine) ─►
    settle (actual cost, cache fill, record) ─► Outcome

What a surface (a codec, ``router/surfaces/``) provides, in shared terms:

- a ``Call``: the request's parsed body (``ParsedBody``, in OpenAI's shape: chat,
  completions or embeddings; the agent endpoints ``messages`` and ``responses`` hand over
  their translation to chat, and their own body as ``native`` when a backend speaks it), the
  authenticated ``Principal`` (or ``None`` on an open gateway), the request id, the few
  headers the pipeline reads (``CALL_HEADERS``: the sensitivity floor, tags, Cache-Control,
  traceparent, Anthropic's version and betas, the session id) and the ``RequestRecord``
  that telemetry reads when the request is over;
- a writer for each ``Outcome``: a ``Reply`` (one JSON answer, fresh or cached) it
  serialises with its status and headers; a ``StreamReply`` whose ``send`` it calls
  exactly once, at once, with a ``Sink`` (``router.streaming``) that writes OpenAI chunk
  events in its own wire format and raises ``ConnectionError`` when the client is gone;
- errors: everything the pipeline raises before an outcome is a ``GatewayError`` or
  ``BackendError`` (``router.errors.error_info`` gives status, type, code); the surface's
  middleware writes it in its own error shape. Once a stream has started, errors travel
  inside it (an error event), never as a status.

The pipeline guarantees, for every surface: the allowed set is computed once by the
planner and every answer — fresh, cached or coalesced — comes from it; a budget
reservation is settled or released exactly once (``router.state.admission.Hold``);
failed attempts are never billed, and a stream is billed for what the upstream produced
(its usage, else the relayed tokens), also when its client leaves or it breaks; a cache
entry is only a complete answer.

Must not import aiohttp: it is unit-tested without a server.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass

import orjson

from backends import BackendError, BackendRequest, session_of
from backends.types import Api
from policies import Endpoint, Plan, RequestFacts
from policies.sensitivity import Scan
from router.body import ParsedBody
from router.costs import answer_cost, format_usd, parse_answer, tokens, usage_cost
from router.engine import Answer, Hedged, StreamAnswer
from router.gateway import OFF_LOOP_BYTES, Gateway
from router.native import native_usage
from router.record import RequestRecord
from router.state.admission import Admitted, Hold
from router.state.cache import CachedAnswer, replay_sse
from router.state.keys import Principal
from router.streaming import Sink, StreamJob, StreamOutcome, absorb_cancellation, relay, relay_native
from router.telemetry import provider_name

__all__ = ["CALL_HEADERS", "MOST_TOKENS", "MOST_USD", "Call", "Outcome", "Reply", "StreamReply", "estimate_tokens",
           "run"]

#: The request headers the pipeline reads (lower-case); a surface copies just these into the call.
CALL_HEADERS = ("x-switchyard-sensitivity", "x-switchyard-tags", "cache-control", "traceparent",
                "anthropic-version", "anthropic-beta", "x-session-id")
#: Forwarded with a native Messages request (the version Anthropic's API requires by default).
_ANTHROPIC_VERSION = "2023-06-01"
#: The most one request counts against rate limits (tokens) and reserves (USD): far beyond any
#: limit a policy sets (such a request is refused as over it), well inside the store's 64-bit
#: counters (budgets are kept in nano-USD).
MOST_TOKENS = 2**53
MOST_USD = 1e9


#: The upstream API each endpoint's (OpenAI-shaped) body is for: the agent surfaces translate
#: their requests into chat completions (``router.surfaces``).
_WIRE: dict[Endpoint, Api] = {"chat": "chat", "completions": "completions", "embeddings": "embeddings",
                              "messages": "chat", "responses": "chat"}
#: The native API of an agent endpoint (targets that ``speak`` it get the client's own body).
_WIRE_NATIVE: dict[Endpoint, Api] = {"messages": "messages", "responses": "responses"}


@dataclass(frozen=True, slots=True)
class Call:
    """One request, as every surface hands it to the pipeline."""

    endpoint: Endpoint
    body: ParsedBody
    principal: Principal | None
    request_id: str
    headers: Mapping[str, str]  # CALL_HEADERS that were sent, lower-case names
    record: RequestRecord  # filled in along the way (no prompt or answer text)
    #: The client's own body (``messages``, ``responses``) when a backend of the policy serves
    #: that API natively: sent as is to such a target (``BackendRequest.native``), and scanned
    #: too — the request's level is the higher of the two scans.
    native: Mapping[str, object] | None = None


@dataclass(frozen=True, slots=True)
class Reply:
    """A complete JSON answer (fresh or cached) in OpenAI's shape."""

    body: bytes
    headers: dict[str, str]
    status: int = 200
    #: ``body`` parsed, when the pipeline already parsed it (a fresh answer): a translating
    #: surface reads this instead of parsing the body again. Not to be mutated.
    data: Mapping[str, object] | None = None
    api: Api = "chat"  # the API ``body`` is in: chat, or the call's own when answered natively


@dataclass(frozen=True, slots=True)
class StreamReply:
    """A streamed answer (fresh, or a cached one replayed). ``send`` must be called exactly
    once, at once: it owns the upstream stream and the request's hold until it returns. It
    returns normally when the client goes away, also when the server cancels the handler for
    it: the cancellation is absorbed once the stream is settled and recorded."""

    headers: dict[str, str]
    _send: Callable[[Sink], Awaitable[None]]
    #: the API of the events the sink gets: chat chunks, or the call's own API when answered
    #: natively (then passed through as the upstream sent them; errors still come as chat-shaped
    #: error events)
    api: Api = "chat"

    async def send(self, sink: Sink) -> None:
        await self._send(sink)


Outcome = Reply | StreamReply


def run(gateway: Gateway, call: Call) -> Awaitable[Outcome]:
    """Plan, admit, attempt and settle one call (``await`` it). Raises ``GatewayError`` /
    ``BackendError`` for anything that fails before an answer exists."""
    return _Flight(gateway, call).run()  # the coroutine itself: one frame less on every resume


@dataclass(frozen=True, slots=True)
class _Lookup:
    key: str
    read: bool  # False: Cache-Control no-cache (store only)
    write: bool  # False: Cache-Control no-store

    @property
    def state(self) -> str:
        return "miss" if self.read else "bypass"


class _Flight:
    """One planned call on its way through admission, attempts and settlement."""

    __slots__ = ("gateway", "call", "rec", "facts", "scan", "plan", "lookup", "limited", "session", "_hedge")

    facts: RequestFacts
    scan: Scan
    plan: Plan
    lookup: _Lookup | None

    def __init__(self, gateway: Gateway, call: Call) -> None:
        self.gateway, self.call, self.rec = gateway, call, call.record
        self.limited: dict[str, str] | None = None  # rate limits already counted before the scan
        self.session: str | None = None  # the client's conversation key (sticky closed providers, pools)
        self._hedge: Hedged | None = None  # a streamed answer's hedge, billed when it is settled

    async def _cheap_checks(self) -> None:
        """A body large enough to be scanned off the loop is rate-limited first, on an estimate
        from its size: a caller over its limit cannot make the gateway scan megabytes."""
        call = self.call
        if call.principal is not None:
            self.limited = await self.gateway.gatekeeper.limit(call.principal, estimate_tokens(call.body, self.gateway))

    async def _planned(self) -> None:
        """Facts and the sensitivity scan, then the plan: what policy decides."""
        gateway, call = self.gateway, self.call
        who = call.principal
        facts, self.scan = await gateway.assess(call.body, call.endpoint, call.headers,
                                                team=who.team if who else None)
        if call.native is not None:
            facts = await self._native_scanned(facts)
        if gateway.needs_budget_fact and gateway.budgets.applies(who):
            facts = dataclasses.replace(facts, budget_remaining=await gateway.budgets.remaining(who))
        self.session = session_of(call.headers.get("x-session-id"), call.body.data)
        self.facts, self.plan = facts, gateway.plan(facts, session=self.session)
        _planned(self.rec, call.body, facts, self.plan)
        self.lookup = self._cache_lookup()

    async def _native_scanned(self, facts: RequestFacts) -> RequestFacts:
        """The client's own body is scanned too (a native target sees it as is): the request's
        level is the higher of the two. Redaction for closed targets keeps the translated
        body's findings — a closed target is only ever sent the translation."""
        call, scanner = self.call, self.gateway.runtime.scanner
        assert call.native is not None
        if call.body.size <= OFF_LOOP_BYTES:
            native = scanner.scan(call.endpoint, call.native, floor=self.scan.level)
        else:
            native = await asyncio.to_thread(scanner.scan, call.endpoint, call.native, self.scan.level)
        if native.level == self.scan.level:
            return facts
        self.scan = dataclasses.replace(self.scan, level=native.level, unreadable=self.scan.unreadable
                                        or native.unreadable)
        return dataclasses.replace(facts, sensitivity=native.level, detectors=facts.detectors | native.detectors)

    def _cache_lookup(self) -> _Lookup | None:
        cache = self.gateway.cache
        if not cache.enabled:
            return None
        control = self.call.headers.get("cache-control", "").lower()
        no_store = "no-store" in control
        return _Lookup(cache.key(self.plan.alias, self.call.endpoint, self.call.body.data, self.facts.team),
                       read=not (no_store or "no-cache" in control), write=not no_store)

    async def run(self) -> Outcome:
        if self.call.body.size > OFF_LOOP_BYTES:
            await self._cheap_checks()
        await self._planned()
        admitted = await self._admit()
        lookup = self.lookup
        async with Hold(self.gateway.gatekeeper, admitted.reservation, lookup.key if lookup else None,
                        admitted.leader) as hold:
            hit = admitted.hit or await self._answered_elsewhere(admitted)
            if hit is not None:
                return self._cached(hit, admitted.headers)
            headers = admitted.headers
            if lookup is not None:
                self.rec.cache = lookup.state
                headers = headers | {"x-switchyard-cache": lookup.state}
            if self.call.body.stream:
                return await self._stream(hold, headers)
            return await self._complete(hold, headers)

    async def _admit(self) -> Admitted:
        """Rate limits, budget reservation and the cache lookup: one store round trip."""
        gateway, facts, lookup = self.gateway, self.facts, self.lookup
        out = (facts.max_tokens or gateway.runtime.loaded.policy.settings.estimate_max_tokens) * facts.choices
        at_most = min(facts.input_tokens + out, MOST_TOKENS)
        coalesce = lookup is not None and lookup.read and lookup.write and not self.call.body.stream
        most_usd = min(max(self.plan.estimates.values(), default=0.0), MOST_USD)
        admitted = await gateway.gatekeeper.admit(self.call.principal, at_most, most_usd,
                                                  lookup.key if lookup is not None and lookup.read else None,
                                                  self.plan.allowed, coalesce=coalesce,
                                                  counted=self.limited is not None)
        if self.limited:
            admitted = dataclasses.replace(admitted, headers=self.limited | admitted.headers)
        return admitted

    async def _answered_elsewhere(self, admitted: Admitted) -> CachedAnswer | None:
        """An identical request on another replica holds the entry's lock: wait for its answer."""
        lookup, cache = self.lookup, self.gateway.cache
        if admitted.leader is not False or lookup is None or cache.in_flight(lookup.key, self.plan.allowed):
            return None
        return await cache.wait(lookup.key, self.plan.allowed)

    def _request(self) -> BackendRequest:
        call = self.call
        body, traceparent = call.body, call.headers.get("traceparent")
        native = None
        if call.native is not None:
            api = _WIRE_NATIVE[call.endpoint]
            extra: tuple[tuple[str, str], ...] = ()
            if api == "messages":
                extra = (("anthropic-version", call.headers.get("anthropic-version", _ANTHROPIC_VERSION)),)
                if "anthropic-beta" in call.headers:
                    extra += (("anthropic-beta", call.headers["anthropic-beta"]),)
            native = BackendRequest(api, call.native, body.stream, call.request_id, traceparent, headers=extra,
                                    session=call.headers.get("x-session-id"))
        return BackendRequest(_WIRE[call.endpoint], body.data, body.stream, call.request_id, traceparent,
                              native=native, session=call.headers.get("x-session-id"))

    def _cached(self, hit: CachedAnswer, extra: dict[str, str]) -> Outcome:
        """A cache hit costs nothing; a streamed request gets the answer replayed as SSE."""
        headers = self._headers(hit.backend, []) | extra
        headers |= {"x-switchyard-cache": "hit", "x-switchyard-cost-usd": format_usd(0.0)}
        self.rec.cache = "hit"
        self._answered(hit.backend, None, 0.0)
        if not self.call.body.stream:
            return Reply(hit.body, headers)
        options = self.call.body.data.get("stream_options")
        events = replay_sse(hit.body, isinstance(options, dict) and options.get("include_usage") is True)
        return StreamReply(headers, functools.partial(_replay, self.rec, headers, events))

    async def _complete(self, hold: Hold, headers: dict[str, str]) -> Outcome:
        if self.lookup is None:
            result: Answer | CachedAnswer = await self.gateway.engine.complete(self.plan, self._request(), self.scan,
                                                                                self.rec)
            fresh = None
        else:
            result, fresh = await self._coalesced(self.lookup)
        if isinstance(result, CachedAnswer):  # an identical request in flight answered for us
            return self._cached(result, headers)
        rec = self.rec
        rec.upstream_s = result.upstream_s
        _fell_back(rec, result.failures)
        headers = self._headers(result.backend, result.failures) | headers
        if result.response.replica is not None:
            headers["x-switchyard-replica"] = str(result.response.replica)
        data = parse_answer(result.response.body)
        if result.api != "chat":  # answered natively: its usage in chat terms; never cached
            return await self._native_reply(result, data, hold, headers)
        spent = answer_cost(data, self.gateway.runtime.planner.prices[result.backend])
        spent = self._hedged(result.hedge, spent)
        if spent is not None:
            headers["x-switchyard-cost-usd"] = format_usd(spent)
            spent = float(headers["x-switchyard-cost-usd"])  # what the client sees is what is counted
        rec.cache_stored = await hold.settle(spent, fresh)
        self._answered(result.backend, data.get("usage"), spent)
        if rec.traced:
            _describe_answer(rec, data)
            body = self.call.body.data
            self.gateway.telemetry.add_content(body.get("messages", body.get("prompt")), data.get("choices"))
        return Reply(result.response.body, headers, result.response.status, data or None)

    async def _native_reply(self, result: Answer, data: Mapping[str, object], hold: Hold,
                            headers: dict[str, str]) -> Reply:
        usage = native_usage(result.api, data.get("usage"))
        spent = usage_cost(usage, self.gateway.runtime.planner.prices[result.backend]) if usage else None
        spent = self._hedged(result.hedge, spent)
        if spent is not None:
            headers["x-switchyard-cost-usd"] = format_usd(spent)
            spent = float(headers["x-switchyard-cost-usd"])
        self.rec.cache_stored = await hold.settle(spent, None)
        self._answered(result.backend, usage, spent)
        return Reply(result.response.body, headers, result.response.status, data or None, result.api)

    async def _coalesced(self, lookup: _Lookup) -> tuple[Answer | CachedAnswer, CachedAnswer | None]:
        """(the upstream answer, what to store in the cache) — or, when an identical request
        in this process was already asking, its answer. Identical misses make one call."""
        engine, request = self.gateway.engine, self._request()
        produced: list[Answer] = []

        async def produce() -> CachedAnswer | None:
            produced.append(answer := await engine.complete(self.plan, request, self.scan, self.rec))
            if answer.response.status != 200 or answer.api != "chat":  # a native answer is not shared
                return None
            return CachedAnswer(answer.backend, answer.response.body)

        shared, was_shared = await self.gateway.cache.coalesce(lookup.key, self.plan.allowed, produce)
        if was_shared and shared is not None:
            return shared, None
        result = produced[0] if produced else await engine.complete(self.plan, request, self.scan, self.rec)
        return result, shared if lookup.write and not was_shared else None

    async def _stream(self, hold: Hold, headers: dict[str, str]) -> Outcome:
        """Open the stream (failing over until its first event); the relay and the
        settlement run when the surface sends it."""
        request = self._request()
        answer = await self.gateway.engine.open_stream(self.plan, request, self.scan, self.rec)
        self._hedge = answer.hedge
        _fell_back(self.rec, answer.failures)
        headers = self._headers(answer.backend, answer.failures) | headers
        replica = getattr(answer.stream, "replica", None)
        if replica is not None:
            headers["x-switchyard-replica"] = str(replica)
        estimate = self.plan.estimates.get(answer.backend)
        if estimate is not None:
            headers["x-switchyard-cost-estimate-usd"] = format_usd(estimate)
        self.rec.ttft_s = time.perf_counter() - self.rec.started
        if answer.api != "chat":
            return StreamReply(headers, functools.partial(self._relay_native, answer, hold.hand_over(), headers),
                               answer.api)
        return StreamReply(headers, functools.partial(self._relay, request, answer, hold.hand_over(), headers))

    async def _relay_native(self, answer: StreamAnswer, hold: Hold, headers: dict[str, str], sink: Sink) -> None:
        rec = self.rec
        async with hold:
            started = time.perf_counter()
            try:
                outcome = await relay_native(sink, self.gateway.engine, answer, headers)
            finally:
                rec.upstream_s = answer.upstream_s + (time.perf_counter() - started)
            await self._settle_stream_to_the_end(hold, outcome)

    async def _relay(self, request: BackendRequest, answer: StreamAnswer, hold: Hold, headers: dict[str, str],
                     sink: Sink) -> None:
        """Relay the stream, then settle it (``_settle_stream``) — to the end even when the
        handler is cancelled meanwhile: curl closes its connection right after ``[DONE]``."""
        rec, engine = self.rec, self.gateway.engine
        async with hold:
            started = time.perf_counter()
            try:
                outcome = await relay(sink, StreamJob(engine, self.plan, request, self.scan, rec), answer, headers)
            finally:
                rec.upstream_s = answer.upstream_s + (time.perf_counter() - started)
            await self._settle_stream_to_the_end(hold, outcome)

    def _settle_stream_to_the_end(self, hold: Hold, outcome: StreamOutcome) -> Awaitable[None]:
        """``_settle_stream``, run to its end even if the handler is cancelled meanwhile; an
        empty hold's settle does no I/O and never waits, so it needs no task to protect it."""
        settle = self._settle_stream(hold, outcome)
        return settle if hold.empty else _to_the_end(settle)

    async def _settle_stream(self, hold: Hold, outcome: StreamOutcome) -> None:
        """Whenever the upstream produced tokens, settle what was produced: its usage, else the
        relayed content's tokens plus the input estimate. A stream that reached the client
        whole is a success (and may fill the cache); one cut short is billed all the same and
        recorded as what happened; one that produced nothing is released."""
        rec = self.rec
        rec.recovered = outcome.recovered
        rec.reason = outcome.reason or rec.reason
        if outcome.broken:
            rec.error_type = "stream_interrupted"
        elif not outcome.delivered:
            rec.error_type, rec.status = "client_closed", 499
        usage = outcome.usage
        if usage is None and (outcome.delivered or outcome.produced_tokens):
            usage = {"prompt_tokens": self.facts.input_tokens, "completion_tokens": outcome.produced_tokens}
        if usage is None:
            spent = self._hedged(self._hedge, 0.0)  # nothing produced here; a cancelled hedge may have been
            self._answered(outcome.backend, None, spent or None)
            rec.cache_stored = await hold.settle(spent)
            return
        spent = self._hedged(self._hedge, usage_cost(usage, self.gateway.runtime.planner.prices[outcome.backend]))
        self._answered(outcome.backend, usage, spent)
        lookup = self.lookup
        fresh = (CachedAnswer(outcome.backend, orjson.dumps(outcome.answer))
                 if lookup is not None and lookup.write and outcome.answer is not None else None)
        rec.cache_stored = await hold.settle(spent, fresh)

    def _hedged(self, hedge: Hedged | None, spent: float | None) -> float | None:
        """The answer's cost plus what its cancelled hedges are billed (and the record says so)."""
        if hedge is None:
            return spent
        rec = self.rec
        rec.hedged, rec.hedge_won = hedge.started, hedge.winner != hedge.started[0]
        return None if spent is None else spent + hedge.cost_usd

    def _headers(self, backend: str, failures: list[tuple[str, BackendError]]) -> dict[str, str]:
        plan = self.plan
        headers = {"x-switchyard-backend": backend, "x-switchyard-route": plan.route,
                   "x-switchyard-rule": plan.rule, "x-switchyard-sensitivity": self.facts.sensitivity}
        if failures:
            headers["x-switchyard-tried"] = ",".join(dict.fromkeys(name for name, _ in failures))
        return headers

    def _answered(self, backend: str, usage: object, cost_usd: float | None) -> None:
        """What the record says about the answer: who answered, its tokens, cost and savings."""
        gateway, rec = self.gateway, self.rec
        spec = gateway.engine.spec(backend)
        rec.backend, rec.provider, rec.model = backend, provider_name(spec), spec.model
        if self.session is not None and not spec.is_self_hosted:
            gateway.sessions.answered(self.session, backend)
        rec.self_hosted = spec.is_self_hosted
        rec.input_tokens, rec.output_tokens = tokens(usage)
        predicted = self.plan.predictions.get(backend) if rec.cache != "hit" else None
        if predicted is not None:
            rec.predicted_ttft_s, rec.predicted_latency_s = predicted.ttft_s, predicted.latency_s
            rec.predicted_wait = predicted.ahead > 0
        rec.cost_usd = cost_usd
        if gateway.reference_price is not None and isinstance(usage, Mapping) and cost_usd is not None:
            rec.savings_usd = max(0.0, usage_cost(usage, gateway.reference_price) - cost_usd)  # never negative


def estimate_tokens(body: ParsedBody, gateway: Gateway) -> int:
    """Tokens a request may use, before it is scanned: its size on the wire / 4 (an upper
    bound of the scan's estimate) plus ``max_tokens`` (or the policy's default) for each
    answer asked for (``ParsedBody.choices``)."""
    data = body.data
    most = data.get("max_completion_tokens") or data.get("max_tokens")
    limit = most if isinstance(most, int) else gateway.runtime.loaded.policy.settings.estimate_max_tokens
    return min(body.size // 4 + 1 + limit * body.choices, MOST_TOKENS)


async def _replay(rec: RequestRecord, headers: dict[str, str], events: list[bytes], sink: Sink) -> None:
    """A cached answer as a stream; a client that leaves before its end is recorded so."""
    sent = False
    try:
        await sink.open(headers)
        for event in events:
            await sink.write(event)
        sent = True
        await sink.close()
    except (ConnectionError, asyncio.CancelledError) as exc:
        if isinstance(exc, asyncio.CancelledError):
            absorb_cancellation()
        if not sent:
            rec.error_type, rec.status = "client_closed", 499


async def _to_the_end(step: Coroutine[object, object, None]) -> None:
    """Run ``step`` to its end even if this task is cancelled meanwhile (the cancellation is
    absorbed: the request has nothing left to interrupt, and what it got must be settled)."""
    task = asyncio.ensure_future(step)
    while True:
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.cancelled():  # the step itself was cancelled (the loop is closing)
                raise
            absorb_cancellation()


def _planned(rec: RequestRecord, body: ParsedBody, facts: RequestFacts, plan: Plan) -> RequestRecord:
    """What the record knows once the request is planned."""
    rec.team, rec.stream, rec.sensitivity, rec.max_tokens = facts.team, body.stream, facts.sensitivity, facts.max_tokens
    temperature = body.data.get("temperature")
    rec.temperature = float(temperature) if isinstance(temperature, int | float) else None
    rec.alias, rec.rule, rec.route = plan.alias, plan.rule, plan.route
    rec.spillover = bool(plan.spilling or plan.late)
    if plan.spilling:
        rec.reason = "spilled over from " + ", ".join(sorted(plan.spilling)) + " (loaded)"
    elif plan.late:
        rec.reason = "; ".join(f"{b}: {why}" for b, why in sorted(plan.late.items()))
    return rec


def _fell_back(rec: RequestRecord, failures: list[tuple[str, BackendError]]) -> None:
    if failures:
        rec.fallback = True
        rec.reason = "; ".join(f"{name}: {exc.error_type}" + (f" {exc.status}" if exc.status else "")
                               for name, exc in failures)


def _describe_answer(rec: RequestRecord, data: Mapping[str, object]) -> None:
    """The response model and finish reasons, for the request span."""
    model, choices = data.get("model"), data.get("choices")
    rec.response_model = model if isinstance(model, str) else None
    if isinstance(choices, list):
        rec.finish_reasons = tuple(str(c["finish_reason"]) for c in choices
                                   if isinstance(c, Mapping) and c.get("finish_reason") is not None)
