"""The HTTP surface. Handlers parse, call the gateway and the engine, and serialise."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping

import orjson
from aiohttp import web

from backends import BackendError, BackendRequest, Endpoint
from policies import Plan, RequestFacts
from policies.sensitivity import Scan
from router.body import ParsedBody, parse_body
from router.costs import answer_cost, format_usd, parse_answer, tokens, usage_cost
from router.engine import Answer
from router.errors import InvalidRequest
from router.explain import explain_json
from router.gateway import Gateway
from router.middlewares import PRINCIPAL, RECORD, REQUEST_ID, ROUTE, RULE
from router.record import RequestRecord
from router.reload import SERVING
from router.state.admission import Admitted
from router.state.budgets import Reservation
from router.state.cache import CachedAnswer, replay_sse
from router.state.keys import Principal, create_key, find_key
from router.state.store import StoreUnavailable
from router.streaming import relay
from router.telemetry import provider_name

__all__ = ["routes"]


def _answer_headers(plan: Plan, sensitivity: str, backend: str,
                    failures: list[tuple[str, object]]) -> dict[str, str]:
    headers = {"x-switchyard-backend": backend, "x-switchyard-route": plan.route,
               "x-switchyard-rule": plan.rule, "x-switchyard-sensitivity": sensitivity}
    if failures:
        headers["x-switchyard-tried"] = ",".join(dict.fromkeys(name for name, _ in failures))
    return headers


async def _generate(request: web.Request, endpoint: Endpoint) -> web.StreamResponse:
    gateway = request.app[SERVING].gateway
    body = parse_body(await request.read(), endpoint)
    who = request.get(PRINCIPAL)
    team = who.team if who else None
    facts, scan = gateway.facts(body, endpoint, request.headers, team=team)
    if gateway.needs_budget_fact and gateway.budgets.applies(who):
        facts = dataclasses.replace(facts, budget_remaining=await gateway.budgets.remaining(who))
    plan = gateway.plan(facts)
    request[ROUTE], request[RULE] = plan.route, plan.rule
    rec = _planned(request[RECORD], body, facts, plan, team)
    lookup = _cache_lookup(request, gateway, plan, endpoint, body, team)
    admitted, hit = await _admit(gateway, who, body, facts, plan, lookup)
    if hit is not None:
        headers = _answer_headers(plan, facts.sensitivity, hit.backend, []) | admitted.headers
        return await _serve_cached(request, gateway, hit, body, headers)
    rec.cache = lookup.state if lookup is not None else None
    reservation = admitted.reservation
    try:
        return await _dispatch(request, gateway, endpoint, body, facts, scan, plan, reservation, admitted.headers,
                               lookup)
    except BaseException:
        await gateway.budgets.release(reservation)  # failed attempts are never billed
        raise
    finally:
        if admitted.leader and lookup is not None and not rec.cache_stored:
            await gateway.cache.unlock(lookup.key)  # nothing stored: the waiters ask the upstream


def _planned(rec: RequestRecord, body: ParsedBody, facts: RequestFacts, plan: Plan, team: str | None
             ) -> RequestRecord:
    """What the record knows once the request is planned."""
    rec.team, rec.stream, rec.sensitivity, rec.max_tokens = team, body.stream, facts.sensitivity, facts.max_tokens
    temperature = body.data.get("temperature")
    rec.temperature = float(temperature) if isinstance(temperature, int | float) else None
    rec.alias, rec.rule, rec.spillover = plan.alias, plan.rule, bool(plan.spilling)
    if plan.spilling:
        rec.reason = "spilled over from " + ", ".join(sorted(plan.spilling)) + " (loaded)"
    return rec


async def _admit(gateway: Gateway, who: Principal | None, body: ParsedBody, facts: RequestFacts, plan: Plan,
                 lookup: _Lookup | None) -> tuple[Admitted, CachedAnswer | None]:
    """Rate limits, budget reservation and the cache lookup (one store round trip), then —
    when an identical request on another replica is asking the upstream — waiting for its
    answer. Returns the admission and the cached answer to serve, if any."""
    at_most = facts.input_tokens + (facts.max_tokens or gateway.runtime.loaded.policy.settings.estimate_max_tokens)
    coalesce = lookup is not None and lookup.read and lookup.write and not body.stream
    admitted = await gateway.gatekeeper.admit(who, at_most, max(plan.estimates.values(), default=0.0),
                                              lookup.key if lookup is not None and lookup.read else None,
                                              plan.allowed, coalesce=coalesce)
    hit = admitted.hit
    if hit is None and admitted.leader is False and lookup is not None and not gateway.cache.in_flight(lookup.key):
        hit = await gateway.cache.wait(lookup.key, plan.allowed)
        if hit is not None:
            await gateway.budgets.release(admitted.reservation)  # served from the cache: nothing to pay
    return admitted, hit


@dataclasses.dataclass(frozen=True, slots=True)
class _Lookup:
    key: str
    read: bool  # False: Cache-Control no-cache (store only)
    write: bool  # False: Cache-Control no-store

    @property
    def state(self) -> str:
        return "miss" if self.read else "bypass"


def _cache_lookup(request: web.Request, gateway: Gateway, plan: Plan, endpoint: Endpoint, body: ParsedBody,
                  team: str | None) -> _Lookup | None:
    if not gateway.cache.enabled:
        return None
    control = request.headers.get("Cache-Control", "").lower()
    no_store = "no-store" in control
    return _Lookup(gateway.cache.key(plan.alias, endpoint, body.data, team),
                   read=not (no_store or "no-cache" in control), write=not no_store)


def _answered(gateway: Gateway, rec: RequestRecord, backend: str, usage: object, cost_usd: float | None) -> None:
    """What the record says about the answer: who answered, its tokens, cost and savings."""
    spec = gateway.engine.spec(backend)
    rec.backend, rec.provider, rec.model = backend, provider_name(spec), spec.model
    rec.self_hosted = spec.is_self_hosted
    rec.input_tokens, rec.output_tokens = tokens(usage)
    rec.cost_usd = cost_usd
    if gateway.reference_price is not None and isinstance(usage, Mapping) and cost_usd is not None:
        rec.savings_usd = max(0.0, usage_cost(usage, gateway.reference_price) - cost_usd)  # never negative


async def _serve_cached(request: web.Request, gateway: Gateway, hit: CachedAnswer, body: ParsedBody,
                        headers: dict[str, str]) -> web.StreamResponse:
    """A cache hit costs nothing; a streamed request gets the answer replayed as SSE."""
    headers |= {"x-switchyard-cache": "hit", "x-switchyard-cost-usd": format_usd(0.0)}
    rec = request[RECORD]
    rec.cache = "hit"
    _answered(gateway, rec, hit.backend, None, 0.0)
    if not body.stream:
        return web.Response(body=hit.body, content_type="application/json", headers=headers)
    response = web.StreamResponse(headers=headers)
    response.content_type = "text/event-stream"
    await response.prepare(request)
    options = body.data.get("stream_options")
    for event in replay_sse(hit.body, isinstance(options, dict) and options.get("include_usage") is True):
        await response.write(event)
    await response.write_eof()
    return response


async def _dispatch(request: web.Request, gateway: Gateway, endpoint: Endpoint, body: ParsedBody,
                    facts: RequestFacts, scan: Scan, plan: Plan, reservation: Reservation | None,
                    limit_headers: dict[str, str], lookup: _Lookup | None) -> web.StreamResponse:
    breq = BackendRequest(endpoint, body.data, body.stream, request[REQUEST_ID], request.headers.get("traceparent"))
    engine, prices, rec = gateway.engine, gateway.runtime.planner.prices, request[RECORD]
    if lookup is not None:
        limit_headers = limit_headers | {"x-switchyard-cache": lookup.state}
    if body.stream:
        return await _stream(request, gateway, breq, facts, scan, plan, reservation, limit_headers, lookup)
    fresh = None
    if lookup is not None:
        produced: list[Answer] = []
        shared, was_shared = await gateway.cache.coalesce(
            lookup.key, lambda: _complete_cacheable(gateway, plan, breq, scan, produced, rec))
        if was_shared and shared is not None:  # an identical request in flight answered for us
            await gateway.budgets.release(reservation)
            headers = _answer_headers(plan, facts.sensitivity, shared.backend, []) | limit_headers
            return await _serve_cached(request, gateway, shared, body, headers)
        result = produced[0] if produced else await engine.complete(plan, breq, scan, rec)
        fresh = shared if lookup.write and not was_shared else None
    else:
        result = await engine.complete(plan, breq, scan, rec)
    rec.upstream_s = result.upstream_s
    _fell_back(rec, result.failures)
    headers = _answer_headers(plan, facts.sensitivity, result.backend, result.failures) | limit_headers
    data = parse_answer(result.response.body)
    spent = answer_cost(data, prices[result.backend])
    if spent is not None:
        headers["x-switchyard-cost-usd"] = format_usd(spent)
        spent = float(headers["x-switchyard-cost-usd"])  # what the client sees is what is counted
    rec.cache_stored = await gateway.gatekeeper.finish(reservation, spent, lookup.key if lookup else None, fresh)
    _answered(gateway, rec, result.backend, data.get("usage"), spent)
    if rec.traced:
        _describe_answer(rec, data)
        gateway.telemetry.add_content(body.data.get("messages", body.data.get("prompt")), data.get("choices"))
    return web.Response(body=result.response.body, status=result.response.status,
                        content_type="application/json", headers=headers)


async def _stream(request: web.Request, gateway: Gateway, breq: BackendRequest, facts: RequestFacts, scan: Scan,
                  plan: Plan, reservation: Reservation | None, limit_headers: dict[str, str],
                  lookup: _Lookup | None) -> web.StreamResponse:
    """Open the stream (failing over until the first event), relay it, then settle the cost
    from its usage and, when it was clean, store it in the cache."""
    engine, rec = gateway.engine, request[RECORD]
    answer = await engine.open_stream(plan, breq, scan, rec)
    _fell_back(rec, answer.failures)
    headers = _answer_headers(plan, facts.sensitivity, answer.backend, answer.failures) | limit_headers
    estimate = plan.estimates.get(answer.backend)
    if estimate is not None:
        headers["x-switchyard-cost-estimate-usd"] = format_usd(estimate)
    rec.ttft_s = time.perf_counter() - rec.started
    relay_started = time.perf_counter()
    response, outcome = await relay(request, engine, plan, breq, answer, headers)
    rec.upstream_s = answer.upstream_s + (time.perf_counter() - relay_started)
    rec.recovered = outcome.recovered
    rec.reason = outcome.reason or rec.reason
    if outcome.backend is None:
        await gateway.budgets.release(reservation)
        _answered(gateway, rec, answer.backend, None, None)
        rec.error_type = "stream_interrupted"
        return response
    usage = outcome.usage or {"prompt_tokens": facts.input_tokens, "completion_tokens": outcome.content_events}
    spent = usage_cost(usage, gateway.runtime.planner.prices[outcome.backend])
    _answered(gateway, rec, outcome.backend, usage, spent)
    fresh = (CachedAnswer(outcome.backend, orjson.dumps(outcome.answer))
             if lookup is not None and lookup.write and outcome.answer is not None else None)
    await gateway.gatekeeper.finish(reservation, spent, lookup.key if lookup else None, fresh)
    return response


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


async def _complete_cacheable(gateway: Gateway, plan: Plan, breq: BackendRequest, scan: Scan,
                              produced: list[Answer], rec: RequestRecord) -> CachedAnswer | None:
    """The upstream answer, and what identical waiting requests are served (``None``: not
    a cacheable answer — they go upstream themselves)."""
    result = await gateway.engine.complete(plan, breq, scan, rec)
    produced.append(result)
    return CachedAnswer(result.backend, result.response.body) if result.response.status == 200 else None


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await _generate(request, "chat")


async def completions(request: web.Request) -> web.StreamResponse:
    return await _generate(request, "completions")


async def embeddings(request: web.Request) -> web.StreamResponse:
    return await _generate(request, "embeddings")


async def explain(request: web.Request) -> web.Response:
    """Why would this chat request go where it goes? Calls no backend."""
    gateway = request.app[SERVING].gateway
    body = parse_body(await request.read(), "chat")
    facts, scan = gateway.facts(body, "chat", request.headers, team=request.query.get("team"))
    plan = gateway.plan(facts, explain=True)
    result = explain_json(facts, scan, plan, gateway.engine.circuits.snapshot(), gateway.load.snapshot())
    return web.Response(body=orjson.dumps(result), content_type="application/json")


async def models(request: web.Request) -> web.Response:
    return web.Response(body=request.app[SERVING].gateway.runtime.models_json, content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready when the policy is loaded and at least one alias has a reachable target."""
    runtime = request.app[SERVING].gateway.runtime
    health = await runtime.probe()
    aliases = {}
    for alias, spec in runtime.loaded.policy.models.items():
        targets = [t for t in spec.targets if t in health]
        aliases[alias] = {"ready": any(health[t].ok for t in targets),
                          "targets": {t: health[t].ok for t in targets}}
    ready = any(a["ready"] for a in aliases.values())
    body = {"status": "ready" if ready else "unavailable", "policy": runtime.loaded.source,
            "models": aliases, "backends": {n: {"ok": h.ok, "detail": h.detail} for n, h in health.items()},
            "reload": request.app[SERVING].status(), "store": await _store_status(request)}
    return web.Response(status=200 if ready else 503, body=orjson.dumps(body),
                        content_type="application/json")


async def _store_status(request: web.Request) -> dict[str, object]:
    """The shared store's health; while it is down, rate limits are counted per process."""
    serving = request.app[SERVING]
    try:
        await serving.store.ping()
        ok, error = True, None
    except StoreUnavailable as exc:
        ok, error = False, str(exc)
    degraded = serving.gateway.limits.degraded_since
    return {"kind": serving.store.kind, "ok": ok, "error": error,
            "rate_limits": "per-process" if (degraded is not None or not ok) else "shared",
            "auth": "keys" if serving.gateway.auth_required else "open"}


async def admin_backends(request: web.Request) -> web.Response:
    """Each backend's configuration summary, circuit state, load and recent error counts."""
    gateway = request.app[SERVING].gateway
    engine = gateway.engine
    circuits = engine.circuits.snapshot()
    load = gateway.load.describe()
    policy = gateway.runtime.loaded.policy
    body = {name: {"kind": (spec := engine.spec(name)).kind, "self_hosted": spec.is_self_hosted,
                   "supports_prefill": spec.can_prefill, "max_sensitivity": policy.max_level(name),
                   "circuit": circuits[name], "load": load.get(name)}
            for name in engine.runtime.backends}
    return web.Response(body=orjson.dumps({"backends": body, "spilling": sorted(gateway.spilling)}),
                        content_type="application/json")


async def admin_policy(request: web.Request) -> web.Response:
    """The active policy: file, sha256, version, load time, reload history."""
    return web.Response(body=orjson.dumps(request.app[SERVING].status()), content_type="application/json")


async def admin_reload(request: web.Request) -> web.Response:
    status = await request.app[SERVING].reload("admin")
    return web.Response(status=200 if status["ok"] else 422, body=orjson.dumps(status),
                        content_type="application/json")


async def admin_create_key(request: web.Request) -> web.Response:
    """``POST /admin/keys {"team", "name"?, "expires_in_s"?}`` → the new key, shown once."""
    try:
        data = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise InvalidRequest("body must be JSON: {\"team\": …}") from None
    team = data.get("team") if isinstance(data, dict) else None
    gateway = request.app[SERVING].gateway
    if not isinstance(team, str) or team not in gateway.runtime.loaded.policy.teams:
        known = ", ".join(gateway.runtime.loaded.policy.teams) or "none"
        raise InvalidRequest(f"'team' must be a team of the policy (teams: {known})", param="team")
    expires_in, budget = data.get("expires_in_s"), data.get("budget_monthly_usd")
    for name, value in (("expires_in_s", expires_in), ("budget_monthly_usd", budget)):
        if value is not None and (not isinstance(value, int | float) or isinstance(value, bool) or value <= 0):
            raise InvalidRequest(f"'{name}' must be a positive number", param=name)
    expires_at = time.time() + expires_in if expires_in else None
    key, record = await create_key(request.app[SERVING].store, team, str(data.get("name") or ""), expires_at,
                                   float(budget) if budget else None)
    gateway.auth_required = True
    body = {"key": key, "id": record.key_hash[:12], "team": team, "name": record.name,
            "expires_at": record.expires_at, "budget_monthly_usd": record.budget_monthly_usd}
    return web.Response(status=201, body=orjson.dumps(body), content_type="application/json")


async def list_keys(request: web.Request) -> web.Response:
    records = await request.app[SERVING].store.list_keys(request.query.get("team"))
    body = [{"id": r.key_hash[:12], "team": r.team, "name": r.name, "created_at": r.created_at,
             "expires_at": r.expires_at, "revoked": r.revoked} for r in records]
    return web.Response(body=orjson.dumps({"keys": body}), content_type="application/json")


async def revoke_key(request: web.Request) -> web.Response:
    """``DELETE /admin/keys/{id}``: ``id`` is the key's id (12 hex) or the plain key itself."""
    ident = request.match_info["id"]
    store = request.app[SERVING].store
    record = await find_key(store, ident)
    if record is None:
        raise InvalidRequest(f"no single key matches {ident[:12]!r}", param="id")
    await store.revoke_key(record.key_hash)
    return web.Response(body=orjson.dumps({"id": record.key_hash[:12], "revoked": True}),
                        content_type="application/json")


async def admin_spend(request: web.Request) -> web.Response:
    """``GET /admin/spend?team=T&window=day|month``: spend in the current UTC window."""
    team, window = request.query.get("team"), request.query.get("window", "day")
    gateway = request.app[SERVING].gateway
    if team not in gateway.runtime.loaded.policy.teams:
        raise InvalidRequest(f"unknown team {team!r}", param="team")
    if window not in ("day", "month"):
        raise InvalidRequest("window must be day or month", param="window")
    spent, limit = await gateway.budgets.spent(team, window)
    body = {"team": team, "window": window, "spent_usd": round(spent, 9), "limit_usd": limit,
            "remaining_usd": None if limit is None else round(max(0.0, limit - spent), 9)}
    return web.Response(body=orjson.dumps(body), content_type="application/json")


def routes() -> list[web.RouteDef]:
    return [
        web.post("/v1/chat/completions", chat_completions),
        web.post("/v1/completions", completions),
        web.post("/v1/embeddings", embeddings),
        web.post("/v1/route/explain", explain),
        web.get("/v1/models", models),
        web.get("/healthz", healthz),
        web.get("/readyz", readyz),
        web.get("/admin/backends", admin_backends),
        web.get("/admin/policy", admin_policy),
        web.post("/admin/policy/reload", admin_reload),
        web.post("/admin/keys", admin_create_key),
        web.get("/admin/spend", admin_spend),
        web.get("/admin/keys", list_keys),
        web.delete("/admin/keys/{id}", revoke_key),
    ]
