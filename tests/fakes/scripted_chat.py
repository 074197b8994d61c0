"""Scripted OpenAI-chat-compatible upstream for agent runs: one tool call, then a final text.

This module owns the script a chat-only upstream plays when a coding agent is served
through the gateway (tests/e2e/test_agents.py): a turn whose request offers one of the
scripted tools (and carries no tool result yet) is answered with a call of that tool; a
turn whose messages carry a tool result (``role: "tool"``) is answered with the final
text; any other request (no scripted tool offered: a side query) also gets the final
text. Both ``/v1/chat/completions`` shapes are spoken: a ``chat.completion`` and the SSE
``chat.completion.chunk`` stream (tool-call arguments in two deltas, a usage chunk when
``stream_options.include_usage``, ``[DONE]``). ``/v1/models`` answers too (the health
path of an ``openai_compatible`` backend).

Every request is recorded (``received``, from ``tests.fakes.base``) and every answer in
``answers``. ``break_next_stream`` breaks the next streamed answer (a cut mid tool call, say)
without the health probes consuming it; ``faults`` works as in every fake. Lifecycle, recording and the SSE writer come from ``tests.fakes.base``; this
module must not import the gateway.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web

from tests.fakes.base import (
    BODY,
    BODY_INVALID,
    DEFAULT_CREATED,
    FAULT,
    FakeUpstream,
    SSEEvent,
    count_words,
    dumps,
    json_response,
    split_pieces,
)
from tests.fakes.faults import Fault

__all__ = ["Answer", "ScriptedCall", "ScriptedChat"]


@dataclass(frozen=True)
class ScriptedCall:
    """Call ``tool`` with ``arguments`` when a request offers a function tool of that name."""

    tool: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class Answer:
    """What the fake answered to one chat request."""

    kind: Literal["tool_call", "final"]
    stream: bool
    tool: str | None = None
    call_id: str | None = None


def offered_tools(body: dict[str, Any]) -> list[str]:
    """Names of the function tools a chat request offers."""
    names = []
    for tool in body.get("tools") or []:
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            names.append(function["name"])
    return names


def tool_results(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``role: "tool"`` messages of a chat request."""
    messages = body.get("messages") or []
    return [m for m in messages if isinstance(m, dict) and m.get("role") == "tool"]


class ScriptedChat(FakeUpstream):
    """A chat-completions upstream that plays ``calls`` (the first one offered), then ``final_text``."""

    def __init__(self, *, calls: Sequence[ScriptedCall], final_text: str, name: str = "scripted",
                 model_name: str = "scripted-model", created: int = DEFAULT_CREATED) -> None:
        super().__init__(name=name, model_name=model_name, api_key=None, reply_text=final_text,
                         created=created)
        self.calls_script = tuple(calls)
        self.answers: list[Answer] = []
        self._stream_faults: list[Fault] = []

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"

    @property
    def final_text(self) -> str:
        return self.reply_text

    def break_next_stream(self, fault: Fault) -> None:
        """Apply ``fault`` (a stream fault: ``cut_after_chunks``…) to the next streamed chat
        answer. Unlike ``faults``, health probes (``GET /v1/models``) never consume it."""
        self._stream_faults.append(fault)

    def chat_bodies(self) -> list[dict[str, Any]]:
        """The JSON bodies of every chat request, in arrival order."""
        return [r.body for r in self.calls("/v1/chat/completions") if r.body is not None]

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/v1/chat/completions", self._chat)
        router.add_get("/v1/models", self._models)

    def fault_error(self, fault: Fault) -> web.Response:
        error = {"message": fault.message, "type": "server_error", "param": None, "code": None}
        return json_response({"error": error}, status=fault.status or 500)

    def gate_error(self, request: web.Request) -> web.Response | None:
        if request.method == "POST" and (request[BODY_INVALID] or request[BODY] is None):
            error = {"message": "We could not parse the JSON body of your request.",
                     "type": "invalid_request_error", "param": None, "code": None}
            return json_response({"error": error}, status=400)
        return None

    # -- the script ---------------------------------------------------------------------

    def _plan(self, body: dict[str, Any]) -> Answer:
        stream = bool(body.get("stream"))
        if not tool_results(body):
            offered = set(offered_tools(body))
            for call in self.calls_script:
                if call.tool in offered:
                    return Answer("tool_call", stream, call.tool, self.next_id("call_scripted"))
        return Answer("final", stream)

    def _arguments(self, answer: Answer) -> str:
        return next(dumps(c.arguments) for c in self.calls_script if c.tool == answer.tool)

    def _usage(self, body: dict[str, Any], answer: Answer) -> dict[str, int]:
        prompt = count_words(body.get("messages"))
        completion = 1 if answer.kind == "tool_call" else len(split_pieces(self.final_text))
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def _envelope(self, id_: str, obj: str) -> dict[str, Any]:
        return {"id": id_, "object": obj, "created": self.created, "model": self.model_name}

    # -- /v1/chat/completions -----------------------------------------------------------

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = request[BODY]
        answer = self._plan(body)
        self.answers.append(answer)
        if answer.stream:
            fault = request[FAULT] or (self._stream_faults.pop(0) if self._stream_faults else None)
            return await self.send_sse(request, self._events(body, answer), fault)
        return json_response(self._completion(body, answer))

    def _message(self, answer: Answer) -> dict[str, Any]:
        if answer.kind == "final":
            return {"role": "assistant", "content": self.final_text, "refusal": None}
        call = {"id": answer.call_id, "type": "function",
                "function": {"name": answer.tool, "arguments": self._arguments(answer)}}
        return {"role": "assistant", "content": None, "tool_calls": [call], "refusal": None}

    def _completion(self, body: dict[str, Any], answer: Answer) -> dict[str, Any]:
        finish = "tool_calls" if answer.kind == "tool_call" else "stop"
        choice = {"index": 0, "message": self._message(answer), "logprobs": None, "finish_reason": finish}
        return {**self._envelope(self.next_id("chatcmpl-scripted"), "chat.completion"),
                "choices": [choice], "usage": self._usage(body, answer)}

    def _events(self, body: dict[str, Any], answer: Answer) -> list[SSEEvent]:
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        base = self._envelope(self.next_id("chatcmpl-scripted"), "chat.completion.chunk")

        def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return dumps({**base, "choices": [choice]})

        events = [SSEEvent(chunk({"role": "assistant", "content": ""}), phase="head")]
        events += [SSEEvent(chunk(delta)) for delta in self._deltas(answer)]
        finish = "tool_calls" if answer.kind == "tool_call" else "stop"
        events.append(SSEEvent(chunk({}, finish), phase="tail"))
        if include_usage:
            usage = {**base, "choices": [], "usage": self._usage(body, answer)}
            events.append(SSEEvent(dumps(usage), phase="tail"))
        events.append(SSEEvent("[DONE]", phase="tail", terminal=True))
        return events

    def _deltas(self, answer: Answer) -> list[dict[str, Any]]:
        if answer.kind == "final":
            return [{"content": piece} for piece in split_pieces(self.final_text)]
        arguments = self._arguments(answer)
        half = len(arguments) // 2
        head = {"index": 0, "id": answer.call_id, "type": "function",
                "function": {"name": answer.tool, "arguments": arguments[:half]}}
        tail = {"index": 0, "function": {"arguments": arguments[half:]}}
        return [{"tool_calls": [head]}, {"tool_calls": [tail]}]

    async def _models(self, request: web.Request) -> web.StreamResponse:
        model = {"id": self.model_name, "object": "model", "created": self.created, "owned_by": "scripted"}
        return json_response({"object": "list", "data": [model]})
