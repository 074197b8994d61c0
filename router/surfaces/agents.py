"""The agent surfaces over HTTP: Anthropic's Messages (``/v1/messages``,
``/v1/messages/count_tokens``) and OpenAI's Responses (``/v1/responses``, ``GET``/``DELETE
/v1/responses/{id}``) — codecs over the same pipeline as chat completions.

Each handler parses its body once, translates it into a chat body (``router.surfaces.
messages`` / ``responses``), runs the pipeline with its own ``endpoint`` fact (``messages``,
``responses``: same aliases, rules, keys, budgets, limits, cache and telemetry as chat) and
writes the outcome back in its own format: JSON, or SSE through a sink that translates the
chat chunks as they pass. What translation dropped is named in ``x-switchyard-dropped``.
Errors on ``/v1/messages*`` are Anthropic-shaped (``router.middlewares``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping

import orjson
from aiohttp import web

from policies import LEVELS
from router import pipeline
from router.body import check_body, load_json
from router.errors import InvalidRequest, PreviousResponseNotFound, ResponseNotFound, ResponseStoreUnavailable
from router.gateway import Gateway
from router.middlewares import PRINCIPAL
from router.pipeline import Call, Reply
from router.reload import SERVING
from router.state.responses import StoredResponse, higher_level
from router.state.store import StoreUnavailable
from router.surfaces import messages as anthropic
from router.surfaces import responses as openai_responses
from router.surfaces.http import SSESink, call_for

__all__ = ["count_tokens", "create_response", "delete_response", "get_response", "messages"]

log = logging.getLogger("switchyard.surfaces")

#: What ``x-switchyard-dropped`` may say at most (a header, not a report).
_MOST_DROPPED = 1024


class _TranslatingSink(SSESink):
    """An ``SSESink`` that writes each chat chunk event as the surface's own events."""

    __slots__ = ("_translate", "_extra", "_write")

    def __init__(self, request: web.Request, translate: Callable[[bytes], bytes], extra: Mapping[str, str]) -> None:
        super().__init__(request)
        self._translate, self._extra = translate, extra

    async def open(self, headers: Mapping[str, str]) -> None:
        await super().open({**headers, **self._extra})
        assert self.response is not None
        self._write = self.response.write  # one frame less per event

    async def write(self, event: bytes) -> None:
        out = self._translate(event)
        if out:
            await self._write(out)

    async def write_many(self, events: list[bytes]) -> None:
        out = b"".join([self._translate(event) for event in events])
        if out:
            await self._write(out)


class _NativeSink(SSESink):
    """An ``SSESink`` for a stream answered natively: its events pass unchanged; only the
    gateway's own (chat-shaped) error event is written in the surface's format."""

    __slots__ = ("_error",)

    def __init__(self, request: web.Request, error: Callable[[bytes], bytes | None]) -> None:
        super().__init__(request)
        self._error = error

    async def write(self, event: bytes) -> None:
        await super().write(self._error(event) or event)  # ``_error``: None for any other event

    async def write_many(self, events: list[bytes]) -> None:
        await super().write_many([self._error(event) or event for event in events])


def _dropped(dropped: list[str]) -> dict[str, str]:
    if not dropped:
        return {}
    value = ",".join(dropped).encode("ascii", "replace").decode()
    value = "".join(c if c.isprintable() else "?" for c in value)[:_MOST_DROPPED]
    return {"x-switchyard-dropped": value}


async def _reply(request: web.Request, outcome: Reply,
                 translate: Callable[[Mapping[str, object]], dict[str, object]], extra: Mapping[str, str]
                 ) -> web.Response:
    body = outcome.body
    if outcome.api != "chat":  # answered natively: as the upstream sent it
        return web.Response(body=body, status=outcome.status, content_type="application/json",
                            headers=outcome.headers)
    if outcome.status == 200:
        answer = outcome.data if outcome.data is not None else orjson.loads(body)
        if isinstance(answer, Mapping):
            body = orjson.dumps(translate(answer))
    return web.Response(body=body, status=outcome.status, content_type="application/json",
                        headers={**outcome.headers, **extra})


async def _stream(request: web.Request, outcome: pipeline.StreamReply, translate: Callable[[bytes], bytes],
                  extra: Mapping[str, str], native_error: Callable[[bytes], bytes | None]) -> web.StreamResponse:
    sink: SSESink = (_NativeSink(request, native_error) if outcome.api != "chat"
                     else _TranslatingSink(request, translate, extra))
    await outcome.send(sink)
    return sink.response if sink.response is not None else web.Response(status=499)


async def messages(request: web.Request) -> web.StreamResponse:
    """``POST /v1/messages``: a Message, or its SSE events."""
    gateway = request.app[SERVING].gateway
    raw = await request.read()
    data = load_json(raw)
    translated = anthropic.to_chat(data)
    if "anthropic-beta" in request.headers:
        translated.drop("anthropic-beta")
    body = check_body(translated.chat, "chat", gateway.runtime.loaded.policy.settings.max_n, len(raw),
                      translated_from=raw)
    model = str(body.model)
    native = data if "messages" in gateway.native_apis else None
    outcome = await pipeline.run(gateway, call_for(request, "messages", body, native))
    extra = _dropped(translated.dropped)
    if isinstance(outcome, Reply):
        return await _reply(request, outcome, lambda answer: anthropic.to_message(answer, model), extra)
    return await _stream(request, outcome, anthropic.MessagesStream(model).feed, extra, anthropic.chat_error)


async def count_tokens(request: web.Request) -> web.Response:
    """``POST /v1/messages/count_tokens``: the gateway's estimate of the input tokens (what
    budgets and limits count before usage is known), for a body it could route."""
    gateway = request.app[SERVING].gateway
    raw = await request.read()
    translated = anthropic.count_request(load_json(raw))
    body = check_body(translated.chat, "chat", None, len(raw), translated_from=raw)
    who = request.get(PRINCIPAL)
    headers = await gateway.gatekeeper.limit(who, 0)  # a request against the request rate; no tokens
    facts, _ = await gateway.assess(body, "messages", request.headers, team=who.team if who else None)
    gateway.plan(facts, explain=True)  # an unknown alias is a 404, as for a message
    return web.Response(body=orjson.dumps({"input_tokens": facts.input_tokens}), content_type="application/json",
                        headers=headers)


def _floored(call: Call, level: str) -> Call:
    """The call with its sensitivity floor raised to ``level`` (a stored conversation's)."""
    given = call.headers.get("x-switchyard-sensitivity")
    if given is not None and given.strip().lower() not in LEVELS:
        return call  # the client's bad value is refused as it would be anyway
    floor = higher_level(level, given.strip().lower() if given is not None else None)
    return dataclasses.replace(call, headers={**call.headers, "x-switchyard-sensitivity": str(floor)})


async def create_response(request: web.Request) -> web.StreamResponse:
    """``POST /v1/responses``: a Response, or its typed events; stored unless ``store: false``."""
    gateway = request.app[SERVING].gateway
    raw = await request.read()
    data = load_json(raw)
    team = _team(request)
    previous = data.get("previous_response_id")
    stored: StoredResponse | None = None
    if previous is not None:
        if not isinstance(previous, str) or not previous:
            raise InvalidRequest("'previous_response_id' must be a string", param="previous_response_id")
        stored = await _stored(gateway, team, previous)
        if stored is None:
            raise PreviousResponseNotFound(f"Previous response with id '{previous}' not found.",
                                           param="previous_response_id")
    store = data.get("store") is not False
    translated, custom = openai_responses.to_chat(data, stored.messages if stored else None)
    body = check_body(translated.chat, "chat", gateway.runtime.loaded.policy.settings.max_n, len(raw),
                      translated_from=raw)
    # native only when the upstream need not know earlier turns nor keep this one (Codex's case)
    native = data if "responses" in gateway.native_apis and not store and stored is None else None
    call = call_for(request, "responses", body, native)
    if stored is not None:
        call = _floored(call, stored.level)
    outcome = await pipeline.run(gateway, call)
    response_id = openai_responses.new_response_id()
    extra = _dropped(translated.dropped)
    conversation = translated.conversation
    level = outcome.headers.get("x-switchyard-sensitivity", LEVELS[-1])
    if isinstance(outcome, Reply):
        final: list[dict[str, object]] = []

        def translate(answer: Mapping[str, object]) -> dict[str, object]:
            final.append(openai_responses.to_response(answer, data, response_id, custom))
            return final[0]

        reply = await _reply(request, outcome, translate, extra)
        if store and final and not await _keep(gateway, team, final[0], conversation, level):
            reply.headers["x-switchyard-stored"] = "false"
        return reply
    stream = openai_responses.ResponsesStream(data, response_id, custom)
    response = await _stream(request, outcome, stream.feed, extra,
                             lambda event: openai_responses.chat_failed(event, response_id, data))
    if store and stream.final is not None:
        await _keep(gateway, team, stream.final, conversation, level)
    return response


async def _keep(gateway: Gateway, team: str | None, response: dict[str, object], conversation: list[dict[str, object]],
                level: str) -> bool:
    """Store a response for ``previous_response_id`` and ``GET``; False when it was not kept
    (too large, or the store did not answer: logged, the answer itself is not lost)."""
    record = StoredResponse(response, [*conversation, openai_responses.assistant_message(response)], level)
    try:
        return await gateway.responses.put(team, record)
    except StoreUnavailable as exc:
        log.warning("response %s was answered but not stored: %s", response.get("id"), exc)
        return False


async def _stored(gateway: Gateway, team: str | None, response_id: str) -> StoredResponse | None:
    try:
        return await gateway.responses.get(team, response_id)
    except StoreUnavailable as exc:
        raise ResponseStoreUnavailable(f"the response store cannot answer: {exc}") from None


def _team(request: web.Request) -> str | None:
    who = request.get(PRINCIPAL)
    return who.team if who else None


async def get_response(request: web.Request) -> web.Response:
    gateway = request.app[SERVING].gateway
    response_id = request.match_info["id"]
    stored = await _stored(gateway, _team(request), response_id)
    if stored is None:
        raise ResponseNotFound(f"No response found with id '{response_id}'.")
    return web.Response(body=orjson.dumps(stored.response), content_type="application/json")


async def delete_response(request: web.Request) -> web.Response:
    gateway = request.app[SERVING].gateway
    response_id = request.match_info["id"]
    try:
        deleted = await gateway.responses.delete(_team(request), response_id)
    except StoreUnavailable as exc:
        raise ResponseStoreUnavailable(f"the response store cannot answer: {exc}") from None
    if not deleted:
        raise ResponseNotFound(f"No response found with id '{response_id}'.")
    return web.Response(body=orjson.dumps({"id": response_id, "object": "response", "deleted": True}),
                        content_type="application/json")
