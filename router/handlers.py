"""The HTTP surface. Handlers parse, call the engine, and serialise; nothing else."""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from aiohttp import web

from backends import BackendRequest, Endpoint
from policies import Plan, RequestFacts, UnknownAlias
from router.body import parse_body
from router.engine import Engine
from router.errors import InvalidRequest, ModelNotFound
from router.middlewares import REQUEST_ID, ROUTE
from router.runtime import Runtime
from router.streaming import relay

__all__ = ["GATEWAY", "Gateway", "routes"]


@dataclass
class Gateway:
    """What handlers need; swapped as a whole when the policy changes."""

    runtime: Runtime
    engine: Engine


GATEWAY = web.AppKey("gateway", Gateway)


def _plan(gateway: Gateway, model: str | None, endpoint: Endpoint, stream: bool) -> Plan:
    alias = model or gateway.runtime.loaded.policy.settings.default_alias
    if alias is None:
        raise InvalidRequest("missing required parameter 'model'", param="model")
    try:
        return gateway.runtime.planner.plan(RequestFacts(alias, endpoint, stream))
    except UnknownAlias as exc:
        raise ModelNotFound(str(exc), param="model") from None


def _answer_headers(plan: Plan, backend: str, failures: list[tuple[str, object]]) -> dict[str, str]:
    headers = {"x-switchyard-backend": backend, "x-switchyard-route": plan.route}
    if failures:
        headers["x-switchyard-tried"] = ",".join(dict.fromkeys(name for name, _ in failures))
    return headers


async def _generate(request: web.Request, endpoint: Endpoint) -> web.StreamResponse:
    gateway = request.app[GATEWAY]
    body = parse_body(await request.read(), endpoint)
    plan = _plan(gateway, body.model, endpoint, body.stream)
    request[ROUTE] = plan.route
    breq = BackendRequest(endpoint, body.data, body.stream, request[REQUEST_ID],
                          request.headers.get("traceparent"))
    if body.stream:
        answer = await gateway.engine.open_stream(plan, breq)
        return await relay(request, gateway.engine, plan, breq, answer,
                           _answer_headers(plan, answer.backend, answer.failures))
    result = await gateway.engine.complete(plan, breq)
    return web.Response(body=result.response.body, status=result.response.status,
                        content_type="application/json",
                        headers=_answer_headers(plan, result.backend, result.failures))


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await _generate(request, "chat")


async def completions(request: web.Request) -> web.StreamResponse:
    return await _generate(request, "completions")


async def embeddings(request: web.Request) -> web.StreamResponse:
    return await _generate(request, "embeddings")


async def models(request: web.Request) -> web.Response:
    return web.Response(body=request.app[GATEWAY].runtime.models_json, content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready when the policy is loaded and at least one alias has a reachable target."""
    runtime = request.app[GATEWAY].runtime
    health = await runtime.probe()
    aliases = {}
    for alias in runtime.planner.aliases:
        targets = runtime.planner.plan(RequestFacts(alias, "chat")).targets
        aliases[alias] = {"ready": any(health[t].ok for t in targets),
                          "targets": {t: health[t].ok for t in targets}}
    ready = any(a["ready"] for a in aliases.values())
    body = {"status": "ready" if ready else "unavailable", "policy": runtime.loaded.source,
            "models": aliases, "backends": {n: {"ok": h.ok, "detail": h.detail} for n, h in health.items()}}
    return web.Response(status=200 if ready else 503, body=orjson.dumps(body),
                        content_type="application/json")


async def admin_backends(request: web.Request) -> web.Response:
    """Each backend's configuration summary, circuit state and recent error counts."""
    engine = request.app[GATEWAY].engine
    circuits = engine.circuits.snapshot()
    body = {name: {"kind": (spec := engine.spec(name)).kind, "self_hosted": spec.is_self_hosted,
                   "supports_prefill": spec.can_prefill, "circuit": circuits[name]}
            for name in engine.runtime.backends}
    return web.Response(body=orjson.dumps({"backends": body}), content_type="application/json")


def routes() -> list[web.RouteDef]:
    return [
        web.post("/v1/chat/completions", chat_completions),
        web.post("/v1/completions", completions),
        web.post("/v1/embeddings", embeddings),
        web.get("/v1/models", models),
        web.get("/healthz", healthz),
        web.get("/readyz", readyz),
        web.get("/admin/backends", admin_backends),
    ]
