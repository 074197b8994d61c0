"""Fake Anthropic Messages API upstream.

This module owns the Anthropic wire format for tests: `POST /v1/messages` with the real
header requirements (an API key and `anthropic-version`), request validation in the
API's own words, the `message` JSON reply (text or `tool_use`), the named-event SSE
stream (`message_start`, `content_block_start`, `ping`, `content_block_delta`...,
`content_block_stop`, `message_delta`, `message_stop`) and Anthropic error bodies
(`{"type": "error", "error": {"type", "message"}, "request_id"}` plus a `request-id`
header). Lifecycle, recording and faults come from `tests.fakes.base`.

The key is accepted from `x-api-key` (litellm, older SDKs) or `Authorization: Bearer`
(what the pinned anthropic SDK 2.x sends for `api_key=`); the `anthropic-version` value is
not checked, only its presence (the SDK sends a newer date than litellm's 2023-06-01).

Stream faults count `content_block_delta` events as content chunks; `Fault.no_done`
omits the final `message_stop` event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.fakes.base import (
    BODY,
    BODY_INVALID,
    DEFAULT_CREATED,
    DEFAULT_REPLY,
    FAULT,
    FakeUpstream,
    Rejected,
    SSEEvent,
    count_words,
    dumps,
    json_response,
    split_pieces,
)
from tests.fakes.faults import Fault

_TYPE_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
_STATUS_TYPE = {status: type_ for type_, status in _TYPE_STATUS.items()}
_DEFAULT_MESSAGES = {
    "invalid_request_error": "Invalid request.",
    "authentication_error": "invalid x-api-key",
    "permission_error": "Your API key does not have permission to use the specified resource.",
    "not_found_error": "Not found.",
    "rate_limit_error": "This request would exceed the rate limit for your organization. "
    "Please try again later.",
    "api_error": "Internal server error",
    "overloaded_error": "Overloaded",
}
_CONTEXT_TYPES = {"context_length_exceeded", "prompt_too_long"}
_PROMPT_TOO_LONG = "prompt is too long: 210000 tokens > 200000 maximum"
_SYSTEM_ROLE = (
    'messages: Unexpected role "system". The Messages API accepts a top-level `system` '
    'parameter, not "system" as an input message role.'
)


def fault_to_error(fault: Fault) -> tuple[int, str, str]:
    """(status, error type, message) for a scripted error fault, in Anthropic's terms."""
    if fault.error_type in _CONTEXT_TYPES:
        message = _PROMPT_TOO_LONG if fault.has_default_message else fault.message
        return fault.status or 400, "invalid_request_error", message
    type_ = fault.error_type or _status_type(fault.status or 500)
    status = fault.status or _TYPE_STATUS.get(type_, 400)
    message = _DEFAULT_MESSAGES.get(type_, fault.message) if fault.has_default_message else fault.message
    return status, type_, message


def _status_type(status: int) -> str:
    if status in _STATUS_TYPE:
        return _STATUS_TYPE[status]
    return "api_error" if status >= 500 else "invalid_request_error"


@dataclass(frozen=True)
class _Turn:
    """What the fake 'generates' for one request."""

    pieces: list[str]
    stop_reason: str
    tool_name: str | None
    input_tokens: int

    @property
    def output_tokens(self) -> int:
        return 1 if self.tool_name else len(self.pieces)


class FakeAnthropic(FakeUpstream):
    """Anthropic Messages API fake; `base_url` is the bare origin (the SDK adds /v1)."""

    request_id_header = "request-id"
    request_id_prefix = "req_fake"

    def __init__(
        self,
        *,
        name: str = "anthropic",
        model_name: str = "claude-fake",
        api_key: str | None = None,
        reply_text: str = DEFAULT_REPLY,
        created: int = DEFAULT_CREATED,
    ) -> None:
        super().__init__(
            name=name,
            model_name=model_name,
            api_key=api_key,
            reply_text=reply_text,
            created=created,
        )
        # Prompt-cache usage to report, as Anthropic does when cache_control hit or wrote
        # (e.g. {"cache_creation_input_tokens": 100, "cache_read_input_tokens": 300}).
        self.cache_usage: dict[str, int] = {}

    @property
    def base_url(self) -> str:
        return self.origin

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/v1/messages", self._messages)

    # -- errors & gate ------------------------------------------------------------------

    def error(self, status: int, type_: str, message: str) -> web.Response:
        request_id = self.next_id(self.request_id_prefix)
        body = {
            "type": "error",
            "error": {"type": type_, "message": message},
            "request_id": request_id,
        }
        return json_response(body, status=status, headers={self.request_id_header: request_id})

    def invalid(self, message: str) -> Rejected:
        return Rejected(self.error(400, "invalid_request_error", message))

    def fault_error(self, fault: Fault) -> web.Response:
        return self.error(*fault_to_error(fault))

    def gate_error(self, request: web.Request) -> web.Response | None:
        auth = self._auth_error(request)
        if auth is not None:
            return auth
        if not request.headers.get("anthropic-version"):
            return self.error(400, "invalid_request_error", "anthropic-version: header is required")
        if request[BODY_INVALID] or request[BODY] is None:
            return self.error(400, "invalid_request_error", "There was an error parsing the body.")
        return None

    def _auth_error(self, request: web.Request) -> web.Response | None:
        """`x-api-key` (litellm, older SDKs) or `Authorization: Bearer` (anthropic SDK 2.x)."""
        if self.api_key is None:
            return None
        bearer = request.headers.get("Authorization", "")
        offered = request.headers.get("x-api-key") or (
            bearer.removeprefix("Bearer ") if bearer.startswith("Bearer ") else None
        )
        if offered is None:
            return self.error(401, "authentication_error", "x-api-key header is required")
        if offered != self.api_key:
            return self.error(401, "authentication_error", "invalid x-api-key")
        return None

    # -- validation ---------------------------------------------------------------------

    def _validate(self, body: dict[str, Any]) -> None:
        for field in ("model", "max_tokens", "messages"):
            if field not in body:
                raise self.invalid(f"{field}: Field required")
        if not isinstance(body["model"], str):
            raise self.invalid("model: Input should be a valid string")
        max_tokens = body["max_tokens"]
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
            raise self.invalid("max_tokens: Input should be a valid integer")
        if max_tokens < 1:
            raise self.invalid("max_tokens: Input should be greater than or equal to 1")
        self._validate_system(body.get("system"))
        self._validate_messages(body["messages"])

    def _validate_system(self, system: Any) -> None:
        if system is None or isinstance(system, str):
            return
        if not isinstance(system, list) or not all(
            isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str) for b in system
        ):
            raise self.invalid("system: Input should be a valid string")

    def _validate_messages(self, messages: Any) -> None:
        if not isinstance(messages, list):
            raise self.invalid("messages: Input should be a valid list")
        if not messages:
            raise self.invalid("messages: at least one message is required")
        for index, message in enumerate(messages):
            self._validate_message(index, message)

    def _validate_message(self, index: int, message: Any) -> None:
        if not isinstance(message, dict):
            raise self.invalid(f"messages.{index}: Input should be a valid dictionary")
        role = message.get("role")
        if role == "system":
            raise self.invalid(_SYSTEM_ROLE)
        if role not in ("user", "assistant"):
            raise self.invalid(f"messages.{index}.role: Input should be 'user' or 'assistant'")
        content = message.get("content")
        if isinstance(content, str):
            return
        if not isinstance(content, list) or not all(
            isinstance(b, dict) and isinstance(b.get("type"), str) for b in content
        ):
            raise self.invalid(f"messages.{index}.content: Input should be a valid list")

    # -- generation ---------------------------------------------------------------------

    def _reply(self, body: dict[str, Any]) -> str:
        """Anthropic continues a trailing assistant message (prefill) without repeating it."""
        last = body["messages"][-1] if body["messages"] else {}
        if last.get("role") != "assistant":
            return self.reply_text
        content = last.get("content")
        partial = content if isinstance(content, str) else "".join(
            b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
        partial = partial.rstrip()  # the real API rejects trailing whitespace in a prefill
        return self.reply_text[len(partial):] if self.reply_text.startswith(partial) else self.reply_text

    def _turn(self, body: dict[str, Any]) -> _Turn:
        pieces = split_pieces(self._reply(body))
        stop = "end_turn"
        if body["max_tokens"] < len(pieces):
            pieces, stop = pieces[: body["max_tokens"]], "max_tokens"
        tool_name = self._tool_name(body)
        if tool_name:
            stop = "tool_use"
        tokens = count_words(body.get("system")) + count_words(body["messages"])
        return _Turn(pieces, stop, tool_name, tokens)

    @staticmethod
    def _tool_name(body: dict[str, Any]) -> str | None:
        tools = body.get("tools")
        choice = body.get("tool_choice") or {}
        if not tools or choice.get("type") == "none":
            return None
        if choice.get("type") == "tool":
            return choice.get("name")
        return tools[0].get("name")

    def _message(
        self, turn: _Turn, content: list[dict[str, Any]], output_tokens: int, done: bool
    ) -> dict[str, Any]:
        return {
            "id": self.next_id("msg_fake"),
            "type": "message",
            "role": "assistant",
            "model": self.model_name,
            "content": content,
            "stop_reason": turn.stop_reason if done else None,
            "stop_sequence": None,
            "usage": {"input_tokens": turn.input_tokens, "output_tokens": output_tokens, **self.cache_usage},
        }

    def _block(self, turn: _Turn) -> dict[str, Any]:
        if turn.tool_name is None:
            return {"type": "text", "text": "".join(turn.pieces)}
        return {
            "type": "tool_use",
            "id": self.next_id("toolu_fake"),
            "name": turn.tool_name,
            "input": {},
        }

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body = request[BODY]
        self._validate(body)
        turn = self._turn(body)
        if body.get("stream"):
            return await self.send_sse(request, self._events(turn), request[FAULT])
        return json_response(self._message(turn, [self._block(turn)], turn.output_tokens, True))

    # -- streaming ----------------------------------------------------------------------

    def _events(self, turn: _Turn) -> list[SSEEvent]:
        start_block = self._block(turn)
        if turn.tool_name is None:
            start_block = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": piece} for piece in turn.pieces]
        if turn.tool_name is not None:
            deltas = [{"type": "input_json_delta", "partial_json": "{}"}]
        return [
            _event("message_start", {"message": self._message(turn, [], 1, False)}, "head"),
            _event("content_block_start", {"index": 0, "content_block": start_block}, "head"),
            _event("ping", {}, "head"),
            *(_event("content_block_delta", {"index": 0, "delta": d}, "content") for d in deltas),
            _event("content_block_stop", {"index": 0}, "tail"),
            _event(
                "message_delta",
                {
                    "delta": {"stop_reason": turn.stop_reason, "stop_sequence": None},
                    "usage": {"output_tokens": turn.output_tokens},
                },
                "tail",
            ),
            SSEEvent(dumps({"type": "message_stop"}), "message_stop", "tail", terminal=True),
        ]


def _event(name: str, payload: dict[str, Any], phase: str) -> SSEEvent:
    return SSEEvent(dumps({"type": name, **payload}), name, phase)  # type: ignore[arg-type]
