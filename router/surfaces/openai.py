"""The OpenAI surface: chat completions, completions and embeddings (codecs over the
pipeline), the model list and the route explanation for a chat body."""

from __future__ import annotations

import orjson
from aiohttp import web

from policies import Endpoint
from router import pipeline
from router.body import parse_body
from router.explain import explain_json, explain_team
from router.middlewares import PRINCIPAL, is_admin, is_open
from router.reload import SERVING
from router.surfaces.http import call_for, respond

__all__ = ["chat_completions", "completions", "embeddings", "explain", "models"]


async def _generate(request: web.Request, endpoint: Endpoint) -> web.StreamResponse:
    gateway = request.app[SERVING].gateway
    body = parse_body(await request.read(), endpoint, gateway.runtime.loaded.policy.settings.max_n)
    outcome = await pipeline.run(gateway, call_for(request, endpoint, body))
    return await respond(request, outcome)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await _generate(request, "chat")


async def completions(request: web.Request) -> web.StreamResponse:
    return await _generate(request, "completions")


async def embeddings(request: web.Request) -> web.StreamResponse:
    return await _generate(request, "embeddings")


async def explain(request: web.Request) -> web.Response:
    """Why would this chat request go where it goes? Calls no backend."""
    gateway = request.app[SERVING].gateway
    body = parse_body(await request.read(), "chat", gateway.runtime.loaded.policy.settings.max_n)
    who = request.get(PRINCIPAL)
    team = explain_team(request.query.get("team"), who.team if who else None, admin=is_admin(request),
                        open_gateway=is_open(request))
    headers = await gateway.gatekeeper.limit(who, pipeline.estimate_tokens(body, gateway))  # as /v1/* calls are
    facts, scan = await gateway.assess(body, "chat", request.headers, team=team)
    plan = gateway.plan(facts, explain=True)
    result = explain_json(facts, scan, plan, gateway.engine.circuits.snapshot(), gateway.load.snapshot())
    return web.Response(body=orjson.dumps(result), content_type="application/json", headers=headers)


async def models(request: web.Request) -> web.Response:
    return web.Response(body=request.app[SERVING].gateway.runtime.models_json, content_type="application/json")
