"""The HTTP surface. Handlers parse, call the gateway and the engine, and serialise."""

from __future__ import annotations

import orjson
from aiohttp import web

from backends import BackendRequest, Endpoint
from policies import Plan
from router.body import parse_body
from router.costs import answer_cost, format_usd
from router.explain import explain_json
from router.middlewares import REQUEST_ID, ROUTE, RULE
from router.reload import Serving
from router.streaming import relay

__all__ = ["SERVING", "routes"]

SERVING = web.AppKey("serving", Serving)


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
    facts, scan = gateway.facts(body, endpoint, request.headers)
    plan = gateway.plan(facts)
    request[ROUTE], request[RULE] = plan.route, plan.rule
    breq = BackendRequest(endpoint, body.data, body.stream, request[REQUEST_ID],
                          request.headers.get("traceparent"))
    engine = gateway.engine
    if body.stream:
        answer = await engine.open_stream(plan, breq, scan)
        headers = _answer_headers(plan, facts.sensitivity, answer.backend, answer.failures)
        estimate = plan.estimates.get(answer.backend)
        if estimate is not None:
            headers["x-switchyard-cost-estimate-usd"] = format_usd(estimate)
        return await relay(request, engine, plan, breq, answer, headers)
    result = await engine.complete(plan, breq, scan)
    headers = _answer_headers(plan, facts.sensitivity, result.backend, result.failures)
    spent = answer_cost(result.response.body, gateway.runtime.planner.prices[result.backend])
    if spent is not None:
        headers["x-switchyard-cost-usd"] = format_usd(spent)
    return web.Response(body=result.response.body, status=result.response.status,
                        content_type="application/json", headers=headers)


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
            "reload": request.app[SERVING].status()}
    return web.Response(status=200 if ready else 503, body=orjson.dumps(body),
                        content_type="application/json")


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
    ]
