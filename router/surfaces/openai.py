"""The OpenAI surface: chat completions, completions and embeddings (codecs over the
pipeline), the model list and the route explanation for a chat body."""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from aiohttp import web

from backends import BackendRequest, ReplicaPool
from policies import Endpoint
from router import pipeline
from router.body import check_body, load_json, parse_body
from router.errors import InvalidRequest
from router.explain import explain_json, explain_team
from router.middlewares import PRINCIPAL, is_admin, is_open
from router.reload import SERVING
from router.surfaces import messages as messages_codec
from router.surfaces import responses as responses_codec
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


_EXPLAINED: dict[str, Endpoint] = {"chat": "chat", "messages": "messages", "responses": "responses"}


async def explain(request: web.Request) -> web.Response:
    """Why would this request go where it goes? A chat body, or with ``?surface=messages`` /
    ``?surface=responses`` a Messages or Responses body (translated as when it is served).
    Calls no backend."""
    gateway = request.app[SERVING].gateway
    surface = request.query.get("surface", "chat")
    endpoint = _EXPLAINED.get(surface)
    if endpoint is None:
        raise InvalidRequest("surface must be chat, messages or responses", param="surface")
    raw = await request.read()
    max_n = gateway.runtime.loaded.policy.settings.max_n
    if endpoint == "chat":
        body = parse_body(raw, "chat", max_n)
    else:
        data = load_json(raw)
        chat = messages_codec.to_chat(data).chat if endpoint == "messages" else responses_codec.to_chat(data)[0].chat
        body = check_body(chat, "chat", max_n, len(raw), translated_from=raw)
    who = request.get(PRINCIPAL)
    team = explain_team(request.query.get("team"), who.team if who else None, admin=is_admin(request),
                        open_gateway=is_open(request))
    headers = await gateway.gatekeeper.limit(who, pipeline.estimate_tokens(body, gateway))  # as /v1/* calls are
    facts, scan = await gateway.assess(body, endpoint, request.headers, team=team)
    plan = gateway.plan(facts, explain=True)
    result = explain_json(facts, scan, plan, gateway.engine.circuits.snapshot(), gateway.load.snapshot())
    probe = BackendRequest("chat", body.data, body.stream, "explain", session=request.headers.get("x-session-id"))
    _replica_previews(result, gateway.runtime.backends, probe)
    return web.Response(body=orjson.dumps(result), content_type="application/json", headers=headers)


def _replica_previews(result: dict[str, object], backends: Mapping[str, object], probe: BackendRequest) -> None:
    """For a pool candidate: which replica the request would go to now, and why."""
    candidates = result.get("candidates")
    for candidate in candidates if isinstance(candidates, list) else ():
        pool = backends.get(candidate["backend"])
        if isinstance(pool, ReplicaPool):
            choice = pool.preview(probe)
            candidate["replica"] = {"url": choice.url or None, "why": choice.why,
                                    "matched_prefix_blocks": choice.matched_blocks}


async def models(request: web.Request) -> web.Response:
    return web.Response(body=request.app[SERVING].gateway.runtime.models_json, content_type="application/json")
