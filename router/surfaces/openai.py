"""The OpenAI surface: chat completions, completions and embeddings (codecs over the
pipeline), the model list and the route explanation for a chat body."""

from __future__ import annotations

import orjson
from aiohttp import web

from policies import Endpoint
from router import pipeline
from router.body import parse_body
from router.explain import explain_json
from router.middlewares import PRINCIPAL
from router.reload import SERVING
from router.surfaces.http import call_for, respond

__all__ = ["chat_completions", "completions", "embeddings", "explain", "models"]


async def _generate(request: web.Request, endpoint: Endpoint) -> web.StreamResponse:
    body = parse_body(await request.read(), endpoint)
    outcome = await pipeline.run(request.app[SERVING].gateway, call_for(request, endpoint, body))
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
    body = parse_body(await request.read(), "chat")
    who = request.get(PRINCIPAL)
    headers = await gateway.gatekeeper.limit(who, pipeline.estimate_tokens(body, gateway))  # as /v1/* calls are
    facts, scan = await gateway.assess(body, "chat", request.headers, team=request.query.get("team"))
    plan = gateway.plan(facts, explain=True)
    result = explain_json(facts, scan, plan, gateway.engine.circuits.snapshot(), gateway.load.snapshot())
    return web.Response(body=orjson.dumps(result), content_type="application/json", headers=headers)


async def models(request: web.Request) -> web.Response:
    return web.Response(body=request.app[SERVING].gateway.runtime.models_json, content_type="application/json")
