"""Anthropic's Messages API ⇄ chat completions: the pure half of the ``/v1/messages`` codec
(no I/O; ``router.surfaces.agents`` is the HTTP half).

The pipeline runs on chat completions, so a Messages request is translated into one
(``to_chat``) before it is scanned, planned and sent: what the scanner reads is exactly
what an upstream will see. The answer comes back as a chat completion (or chat chunks)
and is translated into a Message (``to_message``) or Anthropic's SSE events
(``MessagesStream``).

What a chat backend cannot take is handled in one of two documented ways (docs/api.md):

- *dropped and reported* — hints that only tune Anthropic's own service and change no
  meaning a chat model could honour: ``thinking``, ``output_config``, ``context_management``,
  ``service_tier``, ``cache_control`` markers, ``top_k``, thinking blocks in the history (a
  chat model cannot read their signatures), server and Anthropic-defined tools (``bash_…``,
  ``web_search_…``: no schema a chat model could call). They are named in the
  ``x-switchyard-dropped`` response header, never dropped silently;
- *refused* (400) — content whose meaning would be lost: documents, search results, MCP
  servers, containers, server tool results, images inside tool results.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import orjson

from backends.sse import DONE
from router.errors import InvalidRequest

__all__ = ["ERROR_TYPES", "Translated", "MessagesStream", "alternate", "count_request", "error_event",
           "error_type", "to_chat", "to_message"]

#: HTTP status → Anthropic's error type (https://docs.anthropic.com/en/api/errors).
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
               403: "permission_error", 404: "not_found_error", 413: "request_too_large",
               429: "rate_limit_error", 504: "timeout_error", 529: "overloaded_error"}
_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use",
         "content_filter": "refusal"}
#: top-level fields dropped in translation (reported in x-switchyard-dropped)
_HINTS = ("thinking", "output_config", "context_management", "service_tier", "cache_control", "top_k",
          "anthropic_beta", "betas")
#: top-level fields whose meaning a chat backend cannot keep
_REFUSED = ("mcp_servers", "container")
_KNOWN = frozenset(("model", "messages", "system", "max_tokens", "stop_sequences", "stream", "temperature",
                    "top_p", "tools", "tool_choice", "metadata") + _HINTS + _REFUSED)


def error_type(status: int) -> str:
    return ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def error_body(status: int, message: str) -> dict[str, object]:
    return {"type": "error", "error": {"type": error_type(status), "message": message}}


def error_event(status: int, message: str) -> bytes:
    return _event("error", error_body(status, message))


def error_of(event: bytes) -> Mapping[str, object] | None:
    """The error of a chat-shaped error event (``data: {"error": …}``, what the pipeline writes
    when a stream cannot go on); ``None`` for any other event."""
    if not event.startswith(b'data: {"error"'):
        return None
    try:
        error = orjson.loads(event[6:]).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return error if isinstance(error, Mapping) else None


def chat_error(event: bytes) -> bytes | None:
    """A chat-shaped error event as Anthropic's ``error`` event; ``None`` for any other event."""
    error = error_of(event)
    return None if error is None else error_event(_error_status(error), str(error.get("message", "upstream error")))


@dataclass(slots=True)
class Translated:
    """A chat body translated from another surface, and what translation dropped."""

    chat: dict[str, object]
    dropped: list[str] = field(default_factory=list)
    #: Responses: the conversation as chat messages, without this turn's instructions and
    #: before ``alternate`` (what a stored response continues from)
    conversation: list[dict[str, object]] = field(default_factory=list)

    def drop(self, what: str) -> None:
        if what not in self.dropped:
            self.dropped.append(what)


def _joined(a: object, b: object) -> object:
    """Two user contents as one (strings joined by a blank line, else their parts in order)."""
    if isinstance(a, str) and isinstance(b, str):
        return f"{a}\n\n{b}"
    parts: list[object] = []
    for content in (a, b):
        parts.extend(content if isinstance(content, list) else [{"type": "text", "text": content}])
    return parts


def alternate(messages: list[dict[str, object]]) -> list[dict[str, object]]:
    """Chat messages in the order strict chat templates accept (Qwen's, Mistral's, Gemma's
    reject system messages after the first turn or two user turns in a row): the leading
    system messages as one; a later system message (Claude Code sends one inside
    ``messages``, Codex's ``developer`` items after the first user item) joined to its
    neighbouring user turn inside ``<system-reminder>`` tags, as Claude Code itself marks
    reminders; consecutive user turns as one. No text is dropped or reordered among turns."""
    out: list[dict[str, object]] = []
    for message in messages:
        role, content = message["role"], message.get("content")
        if role == "system":
            if all(m["role"] == "system" for m in out):  # still the leading system prompt
                if out and isinstance(out[0]["content"], str) and isinstance(content, str):
                    out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{content}"}
                else:
                    out.append(message)
                continue
            text = content if isinstance(content, str) else "\n\n".join(
                str(p.get("text", "")) for p in content if isinstance(p, dict)) if isinstance(content, list) else ""
            message, role = {"role": "user", "content": f"<system-reminder>\n{text}\n</system-reminder>"}, "user"
        if role == "user" and out and out[-1]["role"] == "user":
            out[-1] = {"role": "user", "content": _joined(out[-1]["content"], message["content"])}
            continue
        out.append(message)
    return out


def _bad(message: str, param: str | None = None) -> InvalidRequest:
    return InvalidRequest(message, param=param)


def _text_of(value: object, where: str) -> str:
    """A system prompt or tool result given as a string or a list of text blocks."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = []
        for block in value:
            if not isinstance(block, dict) or block.get("type") != "text" or not isinstance(block.get("text"), str):
                kind = block.get("type") if isinstance(block, dict) else type(block).__name__
                raise _bad(f"{where}: only text blocks can be translated for a chat backend (got {kind!r})", where)
            parts.append(block["text"])
        return "\n\n".join(parts)
    raise _bad(f"{where} must be a string or an array of text blocks", where)


def _image_part(block: Mapping[str, object], where: str) -> dict[str, object]:
    source = block.get("source")
    if not isinstance(source, dict):
        raise _bad(f"{where}: an image block needs a 'source' object", where)
    kind = source.get("type")
    if kind == "base64" and isinstance(source.get("data"), str) and isinstance(source.get("media_type"), str):
        url = f"data:{source['media_type']};base64,{source['data']}"
    elif kind == "url" and isinstance(source.get("url"), str):
        url = str(source["url"])
    else:
        raise _bad(f"{where}: image sources of type {kind!r} cannot be translated (base64 and url can)", where)
    return {"type": "image_url", "image_url": {"url": url}}


def _blocks(content: list[object], where: str, t: Translated) -> Iterator[tuple[str, object, dict[str, object]]]:
    """(location, type, block) of each content block; what is not an object is a 400."""
    for j, block in enumerate(content):
        at = f"{where}.{j}"
        if not isinstance(block, dict):
            raise _bad(f"{at} must be a content block object", at)
        if "cache_control" in block:
            t.drop("cache_control")
        yield at, block.get("type"), block


def _user_turn(content: object, i: int, out: list[dict[str, object]], t: Translated) -> None:
    """One user message: its tool results become ``tool`` messages (first, as Anthropic
    orders them), the rest one user message."""
    where = f"messages.{i}.content"
    if isinstance(content, str):
        out.append({"role": "user", "content": content})
        return
    if not isinstance(content, list):
        raise _bad(f"{where} must be a string or an array of content blocks", where)
    parts: list[dict[str, object]] = []
    for at, kind, block in _blocks(content, where, t):
        if kind == "text" and isinstance(block.get("text"), str):
            parts.append({"type": "text", "text": block["text"]})
        elif kind == "image":
            parts.append(_image_part(block, at))
        elif kind == "tool_result":
            tool_id = block.get("tool_use_id")
            if not isinstance(tool_id, str):
                raise _bad(f"{at}.tool_use_id must be a string", f"{at}.tool_use_id")
            result = block.get("content", "")
            text = _text_of(result, f"{at}.content") if result != [] else ""
            if block.get("is_error") is True:
                text = "Error: " + text
            out.append({"role": "tool", "tool_call_id": tool_id, "content": text})
        elif kind in ("thinking", "redacted_thinking"):
            t.drop("thinking")
        else:
            raise _bad(f"{at}: content blocks of type {kind!r} cannot be translated for a chat backend", at)
    if parts:
        only_text = len(parts) == 1 and parts[0]["type"] == "text"
        out.append({"role": "user", "content": parts[0]["text"] if only_text else parts})


def _assistant_turn(content: object, i: int, out: list[dict[str, object]], t: Translated) -> None:
    where = f"messages.{i}.content"
    if isinstance(content, str):
        out.append({"role": "assistant", "content": content})
        return
    if not isinstance(content, list):
        raise _bad(f"{where} must be a string or an array of content blocks", where)
    texts: list[str] = []
    calls: list[dict[str, object]] = []
    for at, kind, block in _blocks(content, where, t):
        text = block.get("text")
        if kind == "text" and isinstance(text, str):
            texts.append(text)
        elif kind == "tool_use":
            if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
                raise _bad(f"{at}: a tool_use block needs a string 'id' and 'name'", at)
            arguments = orjson.dumps(block.get("input", {})).decode()
            calls.append({"id": block["id"], "type": "function",
                          "function": {"name": block["name"], "arguments": arguments}})
        elif kind in ("thinking", "redacted_thinking"):
            t.drop("thinking")
        else:
            raise _bad(f"{at}: content blocks of type {kind!r} cannot be translated for a chat backend", at)
    message: dict[str, object] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
    if texts or calls:
        out.append(message)


def _tools(tools: object, t: Translated) -> list[dict[str, object]]:
    if not isinstance(tools, list):
        raise _bad("'tools' must be an array of tools", "tools")
    out: list[dict[str, object]] = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise _bad(f"tools.{i} must be a tool object with a 'name'", f"tools.{i}")
        if "cache_control" in tool:
            t.drop("cache_control")
        kind = tool.get("type")
        if kind not in (None, "custom") or "input_schema" not in tool:
            t.drop(f"tool:{tool['name']}")  # an Anthropic-defined or server tool: no schema to offer
            continue
        function: dict[str, object] = {"name": tool["name"], "parameters": tool["input_schema"]}
        if isinstance(tool.get("description"), str):
            function["description"] = tool["description"]
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: object, chat: dict[str, object]) -> None:
    if not isinstance(choice, dict):
        raise _bad("'tool_choice' must be an object", "tool_choice")
    kind = choice.get("type")
    if kind == "auto":
        chat["tool_choice"] = "auto"
    elif kind == "any":
        chat["tool_choice"] = "required"
    elif kind == "none":
        chat["tool_choice"] = "none"
    elif kind == "tool" and isinstance(choice.get("name"), str):
        chat["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    else:
        raise _bad("'tool_choice.type' must be auto, any, tool (with a name) or none", "tool_choice")
    if choice.get("disable_parallel_tool_use") is True:
        chat["parallel_tool_calls"] = False


def to_chat(data: Mapping[str, object], *, counting: bool = False) -> Translated:
    """The chat body for a Messages request (``counting``: a count_tokens body, which has no
    ``max_tokens``). Raises ``InvalidRequest`` naming the field for what cannot be translated."""
    model, messages = data.get("model"), data.get("messages")
    if not isinstance(model, str) or not model:
        raise _bad("model: field required (a non-empty string)", "model")
    if not isinstance(messages, list) or not messages:
        raise _bad("messages: field required (a non-empty array)", "messages")
    max_tokens = data.get("max_tokens")
    if not counting and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1):
        raise _bad("max_tokens: field required (an integer of at least 1)", "max_tokens")
    t = Translated({"model": model})
    for name in _REFUSED:
        if name in data:
            raise _bad(f"{name}: cannot be translated for a chat backend", name)
    for name in _HINTS:
        if name in data:
            t.drop(name)
    for name in data:
        if name not in _KNOWN:
            t.drop(name)
    out: list[dict[str, object]] = []
    system = data.get("system")
    if system is not None:
        if isinstance(system, list) and any(isinstance(b, dict) and "cache_control" in b for b in system):
            t.drop("cache_control")
        out.append({"role": "system", "content": _text_of(system, "system")})
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _bad(f"messages.{i} must be a message object", f"messages.{i}")
        role, content = message.get("role"), message.get("content")
        if role == "user":
            _user_turn(content, i, out, t)
        elif role == "assistant":
            _assistant_turn(content, i, out, t)
        elif role == "system":  # not in Anthropic's API, but Claude Code sends it
            out.append({"role": "system", "content": _text_of(content, f"messages.{i}.content")})
        else:
            raise _bad(f"messages.{i}.role must be 'user' or 'assistant'", f"messages.{i}.role")
    if not any(message.get("role") in ("user", "assistant") for message in messages if isinstance(message, dict)):
        raise _bad("messages: at least one user or assistant turn is required (a 'system' entry alone is not one)",
                   "messages")
    chat = t.chat
    chat["messages"] = alternate(out)
    if not counting:
        chat["max_tokens"] = max_tokens
    for name in ("temperature", "top_p"):
        if name in data:
            chat[name] = data[name]
    stop = data.get("stop_sequences")
    if stop is not None:
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise _bad("stop_sequences must be an array of strings", "stop_sequences")
        if stop:
            chat["stop"] = stop
    if "tools" in data:
        tools = _tools(data["tools"], t)
        if tools:
            chat["tools"] = tools
    if "tool_choice" in data:
        _tool_choice(data["tool_choice"], chat)
        if "tools" not in chat and chat["tool_choice"] not in ("auto", "none"):
            raise _bad("tool_choice names a tool, but no tool can be offered to a chat backend", "tool_choice")
        if "tools" not in chat:
            chat.pop("tool_choice")
    metadata = data.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        chat["user"] = metadata["user_id"]
    if data.get("stream") is True:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return t


def _new_id(prefix: str) -> str:
    return prefix + os.urandom(12).hex()


def _usage(usage: object) -> dict[str, int]:
    """Chat usage → Anthropic's: ``input_tokens`` excludes cache reads and writes."""
    u = usage if isinstance(usage, Mapping) else {}
    prompt, completion = _int(u.get("prompt_tokens")), _int(u.get("completion_tokens"))
    details = u.get("prompt_tokens_details")
    read = _int(details.get("cached_tokens")) if isinstance(details, Mapping) else 0
    read = read or _int(u.get("cache_read_input_tokens"))
    written = _int(u.get("cache_creation_input_tokens"))
    out = {"input_tokens": max(0, prompt - read - written), "output_tokens": completion}
    if read or written:
        out["cache_creation_input_tokens"] = written
        out["cache_read_input_tokens"] = read
    return out


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _input(arguments: object) -> object:
    """A tool call's arguments (a JSON string) as the ``input`` object Anthropic gives."""
    if not isinstance(arguments, str) or not arguments.strip():
        return {}
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return {"arguments": arguments}  # not JSON: kept whole rather than lost
    return value if isinstance(value, dict) else {"value": value}


def to_message(answer: Mapping[str, object], model: str) -> dict[str, object]:
    """A chat completion as a Message."""
    choices = answer.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], Mapping) else {}
    message = choice.get("message") if isinstance(choice.get("message"), Mapping) else {}
    assert isinstance(message, Mapping)
    content: list[dict[str, object]] = []
    reasoning = message.get("reasoning_content")
    if isinstance(reasoning, str) and reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    text = message.get("content")
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    calls = message.get("tool_calls")
    for call in calls if isinstance(calls, list) else ():
        function = call.get("function") if isinstance(call, Mapping) else None
        if isinstance(function, Mapping):
            content.append({"type": "tool_use", "id": str(call.get("id") or _new_id("toolu_")),
                            "name": str(function.get("name", "")), "input": _input(function.get("arguments"))})
    chat_id = answer.get("id")
    finish = choice.get("finish_reason")
    return {"id": "msg_" + (chat_id.removeprefix("chatcmpl-") if isinstance(chat_id, str) else os.urandom(12).hex()),
            "type": "message", "role": "assistant", "model": answer.get("model") or model, "content": content,
            "stop_reason": _STOP.get(finish, "end_turn") if isinstance(finish, str) else "end_turn",
            "stop_sequence": None, "usage": _usage(answer.get("usage"))}


def count_request(data: Mapping[str, object]) -> Translated:
    return to_chat(data, counting=True)


def chunk_of(event: bytes) -> dict[str, object] | None:
    """A chat chunk event's JSON object; ``None`` for what is not one (dropped, as the relay does)."""
    try:
        chunk = orjson.loads(event[6:] if event.startswith(b"data: ") else event)
    except orjson.JSONDecodeError:
        return None
    return chunk if isinstance(chunk, dict) else None


def delta_of(chunk: dict[str, object]) -> tuple[dict[str, object] | None, object]:
    """The first choice's delta (``None`` without one) and finish reason of a chat chunk."""
    choices = chunk.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else None
    if choice is None:
        return None, None
    delta = choice.get("delta")
    return (delta if isinstance(delta, dict) else None), choice.get("finish_reason")


def _event(name: str, payload: object) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


class MessagesStream:
    """Chat chunk events in, Anthropic's SSE events out (``feed``), for one answer.

    ``message_start`` on the first chunk, a content block per kind of delta (thinking, text,
    each tool call), ``message_delta`` with the stop reason and usage, then ``message_stop``
    — only when the stream ended cleanly (``[DONE]``). An error event becomes an Anthropic
    ``error`` event and the message is never stopped as if it were complete."""

    __slots__ = ("model", "started", "block", "kind", "stop_reason", "usage", "ended", "_text_head")

    def __init__(self, model: str) -> None:
        self.model = model
        self.started = False
        self.block = -1  # index of the open content block (-1: none)
        self.kind: str | None = None  # "thinking", "text" or "tool:<chat index>"
        self.stop_reason: str | None = None
        self.usage: dict[str, int] | None = None
        self.ended = False
        self._text_head = b""  # a text delta event up to its text (the hot path: built once per block)

    def feed(self, event: bytes) -> bytes:
        if self.ended:
            return b""
        if event == DONE:
            return self._finish()
        chunk = chunk_of(event)
        if chunk is None:
            return b""
        error = chunk.get("error")
        if isinstance(error, dict):
            self.ended = True
            return error_event(_error_status(error), str(error.get("message", "upstream error")))
        out = [] if self.started else [self._start(chunk)]
        delta, finish = delta_of(chunk)
        if delta is not None:
            self._delta(delta, out)
        if isinstance(finish, str):
            self.stop_reason = _STOP.get(finish, "end_turn")
        if isinstance(chunk.get("usage"), dict):
            self.usage = _usage(chunk["usage"])
        return b"".join(out)

    def _start(self, chunk: Mapping[str, object]) -> bytes:
        self.started = True
        chat_id = chunk.get("id")
        message_id = "msg_" + (chat_id.removeprefix("chatcmpl-") if isinstance(chat_id, str) else os.urandom(12).hex())
        message = {"id": message_id, "type": "message", "role": "assistant", "model": chunk.get("model") or self.model,
                   "content": [], "stop_reason": None, "stop_sequence": None,
                   "usage": {"input_tokens": 0, "output_tokens": 0}}
        return _event("message_start", {"type": "message_start", "message": message}) + _event("ping", {"type": "ping"})

    def _open(self, kind: str, block: dict[str, object], out: list[bytes]) -> None:
        if self.kind == kind:
            return
        self._close(out)
        self.block += 1
        self.kind = kind
        out.append(_event("content_block_start", {"type": "content_block_start", "index": self.block,
                                                  "content_block": block}))

    def _close(self, out: list[bytes]) -> None:
        if self.kind is not None:
            out.append(_event("content_block_stop", {"type": "content_block_stop", "index": self.block}))
            self.kind = None

    def _delta(self, delta: Mapping[str, object], out: list[bytes]) -> None:
        reasoning = delta.get("reasoning_content")
        if isinstance(reasoning, str) and reasoning:
            self._open("thinking", {"type": "thinking", "thinking": "", "signature": ""}, out)
            out.append(self._block_delta({"type": "thinking_delta", "thinking": reasoning}))
        text = delta.get("content")
        if isinstance(text, str) and text:
            if self.kind != "text":
                self._open("text", {"type": "text", "text": ""}, out)
                self._text_head = (b'event: content_block_delta\ndata: {"type":"content_block_delta","index":'
                                   + str(self.block).encode() + b',"delta":{"type":"text_delta","text":')
            out.append(self._text_head + orjson.dumps(text) + b"}}\n\n")
        calls = delta.get("tool_calls")
        for call in calls if isinstance(calls, list) else ():
            if not isinstance(call, dict):
                continue
            index = call.get("index", 0)
            function = call.get("function")
            if not isinstance(function, dict):
                function = {}
            kind = f"tool:{index}"
            if kind != self.kind:
                block: dict[str, object] = {"type": "tool_use", "id": str(call.get("id") or _new_id("toolu_")),
                         "name": str(function.get("name") or ""), "input": {}}
                self._open(kind, block, out)
            arguments = function.get("arguments")
            if isinstance(arguments, str) and arguments:
                out.append(self._block_delta({"type": "input_json_delta", "partial_json": arguments}))

    def _block_delta(self, delta: dict[str, object]) -> bytes:
        return _event("content_block_delta", {"type": "content_block_delta", "index": self.block, "delta": delta})

    def _finish(self) -> bytes:
        self.ended = True
        out = [] if self.started else [self._start({})]
        self._close(out)
        usage = self.usage or {"input_tokens": 0, "output_tokens": 0}
        out.append(_event("message_delta", {"type": "message_delta",
                                            "delta": {"stop_reason": self.stop_reason or "end_turn",
                                                      "stop_sequence": None}, "usage": usage}))
        out.append(_event("message_stop", {"type": "message_stop"}))
        return b"".join(out)


def _error_status(error: Mapping[str, object]) -> int:
    kind = error.get("type")
    return {"invalid_request_error": 400, "authentication_error": 401, "rate_limit_error": 429,
            "timeout": 504, "service_unavailable": 529}.get(kind if isinstance(kind, str) else "", 500)
