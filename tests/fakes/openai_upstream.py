"""Fake OpenAI-compatible upstream (OpenAI API / vLLM / llama.cpp server shape).

This module owns the OpenAI wire format for tests: `/v1/chat/completions` (JSON and
SSE `chat.completion.chunk` streaming with `stream_options.include_usage`),
`/v1/completions`, `/v1/embeddings` (float and base64 encodings), `/v1/models`, the
llama.cpp-style `/health` and `/metrics` endpoints, and OpenAI-shaped error bodies
(`{"error": {"message", "type", "param", "code"}}`). Lifecycle, recording and fault
handling come from `tests.fakes.base`.

Everything is deterministic: ids come from a per-server counter, `created` is fixed,
"tokens" are whitespace-separated words, and embeddings are derived from a SHA-256 of
the input text.
"""

from __future__ import annotations

import base64
import hashlib
import struct
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

# error_type -> (status, type, code, param, realistic default message)
_ERRORS: dict[str, tuple[int, str, str | None, str | None, str]] = {
    "invalid_request_error": (400, "invalid_request_error", None, None, "Invalid request."),
    "context_length_exceeded": (
        400,
        "invalid_request_error",
        "context_length_exceeded",
        "messages",
        "This model's maximum context length is 8192 tokens. However, your messages resulted "
        "in 9000 tokens. Please reduce the length of the messages.",
    ),
    "content_policy_violation": (
        400,
        "invalid_request_error",
        "content_policy_violation",
        None,
        "Your request was rejected as a result of our safety system.",
    ),
    "invalid_api_key": (
        401,
        "invalid_request_error",
        "invalid_api_key",
        None,
        "Incorrect API key provided. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
    ),
    "permission_denied": (403, "invalid_request_error", "permission_denied", None, "Forbidden."),
    "model_not_found": (
        404,
        "invalid_request_error",
        "model_not_found",
        "model",
        "The model does not exist or you do not have access to it.",
    ),
    "rate_limit_exceeded": (
        429,
        "requests",
        "rate_limit_exceeded",
        None,
        "Rate limit reached for requests per min (RPM): Limit 3, Used 3, Requested 1. "
        "Please try again in 20s.",
    ),
    "insufficient_quota": (
        429,
        "insufficient_quota",
        "insufficient_quota",
        None,
        "You exceeded your current quota, please check your plan and billing details.",
    ),
    "server_error": (
        500,
        "server_error",
        None,
        None,
        "The server had an error while processing your request. Sorry about that!",
    ),
    "service_unavailable": (
        503,
        "server_error",
        None,
        None,
        "The server is overloaded or not ready yet.",
    ),
}
_ALIASES = {"rate_limit_error": "rate_limit_exceeded", "api_error": "server_error"}
_STATUS_DEFAULTS = {
    400: "invalid_request_error",
    401: "invalid_api_key",
    403: "permission_denied",
    404: "model_not_found",
    429: "rate_limit_exceeded",
    503: "service_unavailable",
}
_BAD_JSON = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
    "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
    "sent was not valid JSON.)"
)
_NO_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization "
    "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)
_FINGERPRINT = "fp_fake"


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_response(
    status: int, message: str, type_: str, code: str | None = None, param: str | None = None
) -> web.Response:
    return json_response(error_body(message, type_, code, param), status=status)


def fault_to_error(fault: Fault) -> tuple[int, dict]:
    """(status, body) for a scripted error fault, in OpenAI's shape."""
    key = _ALIASES.get(fault.error_type or "", fault.error_type)
    if key is None:
        status = fault.status or 500
        key = _STATUS_DEFAULTS.get(status, "server_error" if status >= 500 else "invalid_request_error")
    known = _ERRORS.get(key)
    if known is None:
        status = fault.status or 400
        type_ = "server_error" if status >= 500 else "invalid_request_error"
        return status, error_body(fault.message, type_, key)
    default_status, type_, code, param, default_message = known
    message = default_message if fault.has_default_message else fault.message
    return fault.status or default_status, error_body(message, type_, code, param)


def embedding_vector(text: str, dims: int = 8) -> list[float]:
    """Deterministic vector; every value k/128 is exact in float32 (base64 round-trips)."""
    digest = hashlib.sha256(text.encode()).digest()
    return [(digest[i % len(digest)] - 128) / 128 for i in range(dims)]


def _batch(value: Any) -> list[Any]:
    """A prompt/input is a batch when it is a list of strings or of token lists."""
    if isinstance(value, list) and value and not isinstance(value[0], int):
        return value
    return [value]


@dataclass(frozen=True)
class _Turn:
    """What the fake 'generates' for one request."""

    pieces: list[str]
    finish_reason: str
    tool_name: str | None
    n: int
    prompt_tokens: int

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    @property
    def completion_tokens(self) -> int:
        return (1 if self.tool_name else len(self.pieces)) * self.n

    def usage(self) -> dict[str, int]:
        total = self.prompt_tokens + self.completion_tokens
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": total,
        }


class FakeOpenAI(FakeUpstream):
    """OpenAI-compatible fake server; `base_url` ends in /v1 like OpenAI's."""

    def __init__(
        self,
        *,
        name: str = "openai",
        model_name: str = "fake-model",
        api_key: str | None = None,
        reply_text: str = DEFAULT_REPLY,
        created: int = DEFAULT_CREATED,
        prefill: str = "continue",
    ) -> None:
        super().__init__(
            name=name,
            model_name=model_name,
            api_key=api_key,
            reply_text=reply_text,
            created=created,
        )
        self.deferred = 0
        self.healthy = True
        self.cached_tokens = 0  # reported as usage.prompt_tokens_details.cached_tokens when set
        # How a trailing assistant message (a prefill) is answered, like real servers:
        # "continue" (vLLM continue_final_message, Anthropic): only the rest of reply_text;
        # "echo" (llama.cpp): the prefill repeated, then the rest; "ignore": reply_text as usual.
        self.prefill = prefill

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"

    def _usage(self, turn: _Turn) -> dict[str, Any]:
        usage: dict[str, Any] = turn.usage()
        if self.cached_tokens:
            usage["prompt_tokens_details"] = {"cached_tokens": min(self.cached_tokens, usage["prompt_tokens"])}
        return usage

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/v1/chat/completions", self._chat)
        router.add_post("/v1/completions", self._completions)
        router.add_post("/v1/embeddings", self._embeddings)
        router.add_get("/v1/models", self._models)
        router.add_get("/health", self._health)
        router.add_get("/metrics", self._metrics)

    # -- gate & errors ------------------------------------------------------------------

    def fault_error(self, fault: Fault) -> web.Response:
        status, body = fault_to_error(fault)
        return json_response(body, status=status)

    def gate_error(self, request: web.Request) -> web.Response | None:
        auth = self._auth_error(request.headers.get("Authorization"))
        if auth is not None:
            return auth
        if request[BODY_INVALID] or (request.method == "POST" and request[BODY] is None):
            return error_response(400, _BAD_JSON, "invalid_request_error")
        return None

    def _auth_error(self, header: str | None) -> web.Response | None:
        if self.api_key is None:
            return None
        if not header or not header.startswith("Bearer "):
            return error_response(401, _NO_KEY, "invalid_request_error")
        if header.removeprefix("Bearer ") != self.api_key:
            _, _, code, _, message = _ERRORS["invalid_api_key"]
            return error_response(401, message, "invalid_request_error", code)
        return None

    @staticmethod
    def _require(body: dict[str, Any], field: str, kind: type) -> Any:
        value = body.get(field)
        if field == "model" and not isinstance(value, str):
            raise Rejected(error_response(400, "you must provide a model parameter", "invalid_request_error"))
        if not isinstance(value, kind):
            raise Rejected(
                error_response(
                    400,
                    f"Missing required parameter: '{field}'.",
                    "invalid_request_error",
                    "missing_required_parameter",
                    field,
                )
            )
        return value

    # -- generation plan ----------------------------------------------------------------

    def _reply_pieces(self, body: dict[str, Any]) -> list[str]:
        messages = body.get("messages")
        last = messages[-1] if isinstance(messages, list) and messages else None
        if self.prefill == "ignore" or not (isinstance(last, dict) and last.get("role") == "assistant"):
            return split_pieces(self.reply_text)
        partial = last.get("content") if isinstance(last.get("content"), str) else ""
        if not self.reply_text.startswith(partial):
            return split_pieces(self.reply_text)
        pieces = split_pieces(self.reply_text[len(partial):])
        if self.prefill == "echo" and pieces:  # llama.cpp: the first delta repeats the prefill
            pieces[0] = partial + pieces[0]
        return pieces

    def _turn(self, body: dict[str, Any], prompt_tokens: int, with_tools: bool) -> _Turn:
        pieces = self._reply_pieces(body)
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        finish = "stop"
        if isinstance(limit, int) and 0 < limit < len(pieces):
            pieces, finish = pieces[:limit], "length"
        tool_name = self._tool_name(body) if with_tools else None
        if tool_name:
            finish = "tool_calls"
        n = body.get("n") if isinstance(body.get("n"), int) and body["n"] > 0 else 1
        return _Turn(pieces, finish, tool_name, n, prompt_tokens)

    @staticmethod
    def _tool_name(body: dict[str, Any]) -> str | None:
        tools = body.get("tools")
        choice = body.get("tool_choice")
        if not tools or choice == "none":
            return None
        if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
            return choice["function"].get("name")
        return tools[0].get("function", {}).get("name")

    def _envelope(self, id_: str, obj: str) -> dict[str, Any]:
        return {"id": id_, "object": obj, "created": self.created, "model": self.model_name}

    # -- /v1/chat/completions -----------------------------------------------------------

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = request[BODY]
        self._require(body, "model", str)
        messages = self._require(body, "messages", list)
        turn = self._turn(body, count_words(messages), with_tools=True)
        if body.get("stream"):
            events = self._chat_events(body, turn)
            return await self.send_sse(request, events, request[FAULT])
        return json_response(self._chat_body(turn))

    def _message(self, turn: _Turn) -> dict[str, Any]:
        if turn.tool_name is None:
            return {"role": "assistant", "content": turn.text, "refusal": None, "annotations": []}
        call = {
            "id": self.next_id("call_fake"),
            "type": "function",
            "function": {"name": turn.tool_name, "arguments": "{}"},
        }
        return {
            "role": "assistant",
            "content": None,
            "tool_calls": [call],
            "refusal": None,
            "annotations": [],
        }

    def _chat_body(self, turn: _Turn) -> dict[str, Any]:
        choices = [
            {
                "index": i,
                "message": self._message(turn),
                "logprobs": None,
                "finish_reason": turn.finish_reason,
            }
            for i in range(turn.n)
        ]
        return {
            **self._envelope(self.next_id("chatcmpl-fake"), "chat.completion"),
            "choices": choices,
            "usage": self._usage(turn),
            "service_tier": "default",
            "system_fingerprint": _FINGERPRINT,
        }

    def _chat_events(self, body: dict[str, Any], turn: _Turn) -> list[SSEEvent]:
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        base = {
            **self._envelope(self.next_id("chatcmpl-fake"), "chat.completion.chunk"),
            "service_tier": "default",
            "system_fingerprint": _FINGERPRINT,
        }
        if include_usage:
            base["usage"] = None

        def chunk(index: int, delta: dict, finish: str | None = None, phase: str = "content"):
            choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
            return SSEEvent(dumps({**base, "choices": [choice]}), phase=phase)  # type: ignore[arg-type]

        heads = [chunk(i, self._first_delta(turn), phase="head") for i in range(turn.n)]
        contents = [chunk(i, d) for d in self._content_deltas(turn) for i in range(turn.n)]
        tails = [chunk(i, {}, turn.finish_reason, "tail") for i in range(turn.n)]
        if include_usage:
            tails.append(SSEEvent(dumps({**base, "choices": [], "usage": self._usage(turn)}), phase="tail"))
        tails.append(SSEEvent("[DONE]", phase="tail", terminal=True))
        return [*heads, *contents, *tails]

    def _first_delta(self, turn: _Turn) -> dict[str, Any]:
        if turn.tool_name is None:
            return {"role": "assistant", "content": "", "refusal": None}
        call = {
            "index": 0,
            "id": self.next_id("call_fake"),
            "type": "function",
            "function": {"name": turn.tool_name, "arguments": ""},
        }
        return {"role": "assistant", "content": None, "tool_calls": [call], "refusal": None}

    @staticmethod
    def _content_deltas(turn: _Turn) -> list[dict[str, Any]]:
        if turn.tool_name is not None:
            return [{"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}]
        return [{"content": piece} for piece in turn.pieces]

    # -- /v1/completions (legacy) -------------------------------------------------------

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = request[BODY]
        self._require(body, "model", str)
        prompt = body.get("prompt")
        if not isinstance(prompt, str | list):
            self._require(body, "prompt", str)
        prompts = _batch(prompt)
        turn = self._turn(body, count_words(prompts), with_tools=False)
        turn = _Turn(turn.pieces, turn.finish_reason, None, turn.n * len(prompts), turn.prompt_tokens)
        if body.get("stream"):
            return await self.send_sse(request, self._completion_events(body, turn), request[FAULT])
        return json_response(self._completion_body(turn))

    def _completion_body(self, turn: _Turn) -> dict[str, Any]:
        choices = [
            {"text": turn.text, "index": i, "logprobs": None, "finish_reason": turn.finish_reason}
            for i in range(turn.n)
        ]
        return {
            **self._envelope(self.next_id("cmpl-fake"), "text_completion"),
            "choices": choices,
            "usage": self._usage(turn),
            "system_fingerprint": _FINGERPRINT,
        }

    def _completion_events(self, body: dict[str, Any], turn: _Turn) -> list[SSEEvent]:
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        base = {
            **self._envelope(self.next_id("cmpl-fake"), "text_completion"),
            "system_fingerprint": _FINGERPRINT,
        }
        if include_usage:
            base["usage"] = None

        def chunk(index: int, text: str, finish: str | None, phase: str) -> SSEEvent:
            choice = {"text": text, "index": index, "logprobs": None, "finish_reason": finish}
            return SSEEvent(dumps({**base, "choices": [choice]}), phase=phase)  # type: ignore[arg-type]

        events = [chunk(i, p, None, "content") for p in turn.pieces for i in range(turn.n)]
        events += [chunk(i, "", turn.finish_reason, "tail") for i in range(turn.n)]
        if include_usage:
            events.append(SSEEvent(dumps({**base, "choices": [], "usage": self._usage(turn)}), phase="tail"))
        events.append(SSEEvent("[DONE]", phase="tail", terminal=True))
        return events

    # -- /v1/embeddings -----------------------------------------------------------------

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        body = request[BODY]
        self._require(body, "model", str)
        raw = body.get("input")
        if not isinstance(raw, str | list) or raw in ("", []):
            self._require(body, "input", str)
        inputs = _batch(raw)
        dims = body.get("dimensions") if isinstance(body.get("dimensions"), int) else 8
        as_b64 = body.get("encoding_format") == "base64"
        data = [self._embedding(i, text, dims, as_b64) for i, text in enumerate(inputs)]
        tokens = sum(count_words(x) if isinstance(x, str) else len(x) for x in inputs)
        return json_response(
            {
                "object": "list",
                "data": data,
                "model": self.model_name,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    @staticmethod
    def _embedding(index: int, value: Any, dims: int, as_b64: bool) -> dict[str, Any]:
        text = value if isinstance(value, str) else dumps(value)
        vector = embedding_vector(text, dims)
        encoded: Any = vector
        if as_b64:
            encoded = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
        return {"object": "embedding", "index": index, "embedding": encoded}

    # -- /v1/models, /health, /metrics --------------------------------------------------

    async def _models(self, request: web.Request) -> web.StreamResponse:
        model = {
            "id": self.model_name,
            "object": "model",
            "created": self.created,
            "owned_by": "fake-upstream",
        }
        return json_response({"object": "list", "data": [model]})

    async def _health(self, request: web.Request) -> web.StreamResponse:
        if self.healthy:
            return json_response({"status": "ok"})
        error = {"code": 503, "message": "Loading model", "type": "unavailable_error"}
        return json_response({"error": error}, status=503)

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        lines = []
        for metric, value, help_ in (
            ("requests_processing", self.in_flight, "Number of requests processing."),
            ("requests_deferred", self.deferred, "Number of requests deferred."),
        ):
            lines += [
                f"# HELP llamacpp:{metric} {help_}",
                f"# TYPE llamacpp:{metric} gauge",
                f"llamacpp:{metric} {value}",
            ]
        return web.Response(
            text="\n".join(lines) + "\n",
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )
