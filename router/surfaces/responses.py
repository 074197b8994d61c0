"""OpenAI's Responses API ⇄ chat completions: the pure half of the ``/v1/responses`` codec
(no I/O; ``router.surfaces.agents`` is the HTTP half, ``router.surfaces.stored`` the store
behind ``previous_response_id``).

A Responses request is translated into a chat body (``to_chat``) before it is scanned,
planned and sent — the scanner reads exactly what an upstream will see — and the chat
answer into a Response object (``to_response``) or the typed stream events
(``ResponsesStream``).

What a chat backend cannot take (docs/api.md):

- *translated*: ``instructions`` (a system message), ``input`` as a string or items
  (messages, ``function_call``/``function_call_output``, ``custom_tool_call``/
  ``custom_tool_call_output``), function tools, **custom tools** (offered as a function
  with one string parameter ``input``; its calls come back as ``custom_tool_call`` items),
  ``text.format`` (``response_format``), ``max_output_tokens``, ``tool_choice``;
- *dropped and reported* in ``x-switchyard-dropped``: hosted tools (``web_search``,
  ``file_search``, ``tool_search``, ``code_interpreter``, …: the gateway does not run
  them), ``reasoning`` items and settings (encrypted reasoning only the issuing provider
  can read), ``include``, ``prompt_cache_key``, ``truncation``, ``service_tier``;
- *refused* (400): ``background``, ``conversation``, ``prompt`` templates, file inputs,
  ``item_reference`` and hosted-tool call items in the input.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping

import orjson

from backends.sse import DONE
from router.errors import InvalidRequest
from router.surfaces.messages import Translated, alternate, chunk_of, delta_of, error_of

__all__ = ["ResponsesStream", "new_response_id", "to_chat", "to_response"]

_HINTS = ("reasoning", "include", "prompt_cache_key", "truncation", "service_tier", "safety_identifier",
          "top_logprobs", "stream_options", "max_tool_calls", "prompt_cache_retention")
_REFUSED = ("background", "conversation", "prompt")
_KNOWN = frozenset(("model", "input", "instructions", "tools", "tool_choice", "max_output_tokens", "temperature",
                    "top_p", "stream", "store", "previous_response_id", "metadata", "parallel_tool_calls", "text",
                    "user") + _HINTS + _REFUSED)
_TEXT_PARTS = ("input_text", "output_text", "text", "refusal")
#: the request fields a Response object echoes
_ECHOED = ("instructions", "max_output_tokens", "metadata", "parallel_tool_calls", "previous_response_id",
           "reasoning", "store", "temperature", "text", "tool_choice", "tools", "top_p", "truncation", "user")


def _bad(message: str, param: str | None = None) -> InvalidRequest:
    return InvalidRequest(message, param=param)


def new_response_id() -> str:
    return "resp_" + os.urandom(24).hex()


def _parts(content: object, at: str) -> str | list[dict[str, object]]:
    """A message item's content as chat content (a string when it is all text)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _bad(f"{at} must be a string or an array of content parts", at)
    parts: list[dict[str, object]] = []
    for j, part in enumerate(content):
        where = f"{at}.{j}"
        kind = part.get("type") if isinstance(part, dict) else None
        if not isinstance(part, dict):
            raise _bad(f"{where} must be a content part object", where)
        if kind in _TEXT_PARTS:
            text = part.get("text", part.get("refusal"))
            if not isinstance(text, str):
                raise _bad(f"{where}.text must be a string", where)
            parts.append({"type": "text", "text": text})
        elif kind == "input_image":
            url = part.get("image_url")
            if not isinstance(url, str):
                raise _bad(f"{where}: only images given by image_url can be translated (not file_id)", where)
            image: dict[str, object] = {"url": url}
            if isinstance(part.get("detail"), str):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        else:
            raise _bad(f"{where}: content parts of type {kind!r} cannot be translated for a chat backend", where)
    if all(p["type"] == "text" for p in parts):
        return "".join(str(p["text"]) for p in parts) if len(parts) != 1 else str(parts[0]["text"])
    return parts


def _output_text(output: object, at: str) -> str:
    if isinstance(output, str):
        return output
    content = _parts(output, at)
    if isinstance(content, str):
        return content
    raise _bad(f"{at}: only text tool outputs can be translated for a chat backend", at)


def _call_message(out: list[dict[str, object]]) -> list[dict[str, object]]:
    """The tool_calls list of the assistant message a function call item belongs to."""
    last = out[-1] if out else None
    if last is None or last.get("role") != "assistant":  # else: the text and the calls of one turn
        last = {"role": "assistant", "content": None}
        out.append(last)
    calls = last.setdefault("tool_calls", [])
    assert isinstance(calls, list)
    return calls


def _items(items: list[object], out: list[dict[str, object]], t: Translated, custom: set[str]) -> None:
    for i, item in enumerate(items):
        at = f"input.{i}"
        if not isinstance(item, dict):
            raise _bad(f"{at} must be an item object", at)
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise _bad(f"{at}.role must be user, assistant, system or developer", f"{at}.role")
            content = _parts(item.get("content"), f"{at}.content")
            if role == "assistant":
                text = content if isinstance(content, str) else "".join(
                    str(p.get("text", "")) for p in content)
                out.append({"role": "assistant", "content": text})
            else:
                out.append({"role": "system" if role == "developer" else role, "content": content})
        elif kind in ("function_call", "custom_tool_call"):
            call_id, name = item.get("call_id"), item.get("name")
            if not isinstance(call_id, str) or not isinstance(name, str):
                raise _bad(f"{at}: a {kind} item needs a string 'call_id' and 'name'", at)
            if kind == "function_call":
                arguments = item.get("arguments", "")
                if not isinstance(arguments, str):
                    raise _bad(f"{at}.arguments must be a string", f"{at}.arguments")
            else:
                text = item.get("input", "")
                if not isinstance(text, str):
                    raise _bad(f"{at}.input must be a string", f"{at}.input")
                arguments = orjson.dumps({"input": text}).decode()
                custom.add(name)
            _call_message(out).append({"id": call_id, "type": "function",
                                       "function": {"name": name, "arguments": arguments}})
        elif kind in ("function_call_output", "custom_tool_call_output"):
            call_id = item.get("call_id")
            if not isinstance(call_id, str):
                raise _bad(f"{at}.call_id must be a string", f"{at}.call_id")
            out.append({"role": "tool", "tool_call_id": call_id, "content": _output_text(item.get("output", ""),
                                                                                       f"{at}.output")})
        elif kind == "reasoning":
            t.drop("reasoning")
        else:
            raise _bad(f"{at}: input items of type {kind!r} cannot be translated for a chat backend", at)


def _tools(tools: object, t: Translated, custom: set[str]) -> list[dict[str, object]]:
    if not isinstance(tools, list):
        raise _bad("'tools' must be an array of tools", "tools")
    out: list[dict[str, object]] = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise _bad(f"tools.{i} must be a tool object", f"tools.{i}")
        kind, name = tool.get("type"), tool.get("name")
        if kind in ("function", "custom") and not isinstance(name, str):
            raise _bad(f"tools.{i}.name must be a string", f"tools.{i}.name")
        if kind == "function":
            function: dict[str, object] = {"name": name, "parameters": tool.get("parameters") or
                                           {"type": "object", "properties": {}}}
            if isinstance(tool.get("description"), str):
                function["description"] = tool["description"]
            if isinstance(tool.get("strict"), bool):
                function["strict"] = tool["strict"]
            out.append({"type": "function", "function": function})
        elif kind == "custom":
            assert isinstance(name, str)
            custom.add(name)
            described = tool.get("description") if isinstance(tool.get("description"), str) else ""
            fmt = tool.get("format")
            if isinstance(fmt, dict) and fmt.get("type") == "grammar":
                described = f"{described}\nThe input must follow this {fmt.get('syntax', '')} grammar:\n" \
                            f"{fmt.get('definition', '')}".strip()
            out.append({"type": "function", "function": {
                "name": name, "description": described,
                "parameters": {"type": "object", "properties": {"input": {"type": "string"}}, "required": ["input"]}}})
        else:
            t.drop(f"tool:{name if isinstance(name, str) else kind}")
    return out


def _tool_choice(choice: object, chat: dict[str, object]) -> None:
    if choice in ("auto", "none", "required"):
        chat["tool_choice"] = choice
    elif isinstance(choice, dict) and choice.get("type") in ("function", "custom") and isinstance(choice.get("name"),
                                                                                                str):
        chat["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    else:
        raise _bad("tool_choice: only auto, none, required and a function or custom tool by name can be translated",
                   "tool_choice")


def _text_format(text: object, chat: dict[str, object]) -> None:
    fmt = text.get("format") if isinstance(text, dict) else None
    if fmt is None:
        return
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "json_object":
        chat["response_format"] = {"type": "json_object"}
    elif kind == "json_schema" and isinstance(fmt, dict):
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        chat["response_format"] = {"type": "json_schema", "json_schema": schema}
    elif kind != "text":
        raise _bad("text.format.type must be text, json_object or json_schema", "text.format")


def to_chat(data: Mapping[str, object], history: list[dict[str, object]] | None = None) -> tuple[Translated, set[str]]:
    """The chat body for a Responses request, after ``history`` (the chat messages of the
    stored conversation ``previous_response_id`` names), and the names of its custom tools."""
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("missing required parameter 'model'", "model")
    for name in _REFUSED:
        if data.get(name) not in (None, False):
            raise _bad(f"'{name}' is not supported by this gateway", name)
    t, custom = Translated({"model": model}), set[str]()
    for name in data:
        if name in _HINTS or name not in _KNOWN:
            t.drop(name)
    out: list[dict[str, object]] = []
    instructions = data.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise _bad("'instructions' must be a string", "instructions")
        if instructions:
            out.append({"role": "system", "content": instructions})
    out.extend(history or ())
    given = data.get("input")
    if isinstance(given, str):
        out.append({"role": "user", "content": given})
    elif isinstance(given, list):
        _items(given, out, t, custom)
    else:
        raise _bad("'input' must be a string or an array of input items", "input")
    if not any(m.get("role") != "system" for m in out):
        raise _bad("'input' must hold at least one message or item", "input")
    chat = t.chat
    t.conversation = out[1:] if instructions else list(out)
    chat["messages"] = alternate(out)
    most = data.get("max_output_tokens")
    if most is not None:
        chat["max_tokens"] = most
    for name in ("temperature", "top_p", "parallel_tool_calls", "user", "metadata"):
        if data.get(name) is not None:
            chat[name] = data[name]
    if data.get("tools") is not None:
        tools = _tools(data["tools"], t, custom)
        if tools:
            chat["tools"] = tools
    if data.get("tool_choice") is not None:
        _tool_choice(data["tool_choice"], chat)
        if "tools" not in chat:
            if chat["tool_choice"] not in ("auto", "none"):
                raise _bad("tool_choice names a tool, but no tool can be offered to a chat backend", "tool_choice")
            chat.pop("tool_choice")
    _text_format(data.get("text"), chat)
    if data.get("stream") is True:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return t, custom


def _usage(usage: object) -> dict[str, object]:
    u = usage if isinstance(usage, Mapping) else {}
    prompt, completion = _int(u.get("prompt_tokens")), _int(u.get("completion_tokens"))
    details = u.get("prompt_tokens_details")
    cached = _int(details.get("cached_tokens")) if isinstance(details, Mapping) else 0
    out_details = u.get("completion_tokens_details")
    reasoning = _int(out_details.get("reasoning_tokens")) if isinstance(out_details, Mapping) else 0
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": cached},
            "output_tokens": completion, "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": prompt + completion}


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _item_id(prefix: str) -> str:
    return prefix + os.urandom(12).hex()


def _call_item(call_id: str, name: str, arguments: str, custom: set[str], item_id: str | None = None
               ) -> dict[str, object]:
    if name in custom:
        try:
            value = orjson.loads(arguments) if arguments else {}
        except orjson.JSONDecodeError:
            value = {"input": arguments}
        raw = value.get("input") if isinstance(value, dict) else None
        return {"type": "custom_tool_call", "id": item_id or _item_id("ctc_"), "call_id": call_id, "name": name,
                "input": raw if isinstance(raw, str) else arguments, "status": "completed"}
    return {"type": "function_call", "id": item_id or _item_id("fc_"), "call_id": call_id, "name": name,
            "arguments": arguments, "status": "completed"}


def _message_item(text: str, item_id: str | None = None, status: str = "completed") -> dict[str, object]:
    return {"type": "message", "id": item_id or _item_id("msg_"), "status": status, "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}


def shell(data: Mapping[str, object], response_id: str, model: str, created: int | None = None,
          status: str = "in_progress") -> dict[str, object]:
    """A Response object without output, echoing the request."""
    out: dict[str, object] = {"id": response_id, "object": "response", "created_at": created or int(time.time()),
                              "status": status, "model": model, "output": [], "error": None,
                              "incomplete_details": None, "usage": None}
    for name in _ECHOED:
        out[name] = data.get(name)
    out["tools"] = data.get("tools") or []
    out["tool_choice"] = data.get("tool_choice") or "auto"
    out["parallel_tool_calls"] = data.get("parallel_tool_calls", True)
    out["store"] = data.get("store", True)
    out["text"] = data.get("text") or {"format": {"type": "text"}}
    out["metadata"] = data.get("metadata") or {}
    out["truncation"] = data.get("truncation") or "disabled"
    return out


def _finished(response: dict[str, object], finish: object) -> None:
    """The response's status from the chat finish reason; a cut answer's message item is
    ``incomplete`` too, as OpenAI marks it."""
    reason = {"length": "max_output_tokens", "content_filter": "content_filter"}.get(finish) \
        if isinstance(finish, str) else None
    if reason is None:
        response["status"] = "completed"
        return
    response["status"], response["incomplete_details"] = "incomplete", {"reason": reason}
    output = response.get("output")
    for item in output if isinstance(output, list) else ():
        if isinstance(item, dict) and item.get("type") == "message":
            item["status"] = "incomplete"


def to_response(answer: Mapping[str, object], data: Mapping[str, object], response_id: str,
                custom: set[str]) -> dict[str, object]:
    """A chat completion as a Response object."""
    choices = answer.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], Mapping) else {}
    message = choice.get("message") if isinstance(choice.get("message"), Mapping) else {}
    assert isinstance(message, Mapping)
    model = answer.get("model")
    response = shell(data, response_id, model if isinstance(model, str) else str(data.get("model")),
                     _int(answer.get("created")) or None)
    output: list[dict[str, object]] = []
    text = message.get("content")
    if isinstance(text, str) and text:
        output.append(_message_item(text))
    calls = message.get("tool_calls")
    for call in calls if isinstance(calls, list) else ():
        function = call.get("function") if isinstance(call, Mapping) else None
        if isinstance(function, Mapping):
            arguments = function.get("arguments")
            output.append(_call_item(str(call.get("id") or _item_id("call_")), str(function.get("name", "")),
                                     arguments if isinstance(arguments, str) else "", custom))
    response["output"] = output
    response["usage"] = _usage(answer.get("usage"))
    _finished(response, choice.get("finish_reason"))
    return response


def assistant_message(response: Mapping[str, object]) -> dict[str, object]:
    """The chat message a stored response's output continues the conversation with."""
    texts: list[str] = []
    calls: list[dict[str, object]] = []
    output = response.get("output")
    for item in output if isinstance(output, list) else ():
        if item.get("type") == "message":
            texts.extend(str(p.get("text", "")) for p in item.get("content", ()))
        elif item.get("type") == "function_call":
            calls.append({"id": item["call_id"], "type": "function",
                          "function": {"name": item["name"], "arguments": item.get("arguments", "")}})
        elif item.get("type") == "custom_tool_call":
            calls.append({"id": item["call_id"], "type": "function",
                          "function": {"name": item["name"],
                                       "arguments": orjson.dumps({"input": item.get("input", "")}).decode()}})
    message: dict[str, object] = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        message["tool_calls"] = calls
    return message


def chat_failed(event: bytes, response_id: str, data: Mapping[str, object]) -> bytes | None:
    """A chat-shaped error event as ``response.failed``; ``None`` for any other event."""
    error = error_of(event)
    if error is None:
        return None
    failed = shell(data, response_id, str(data.get("model")), status="failed")
    failed["error"] = {"code": str(error.get("code") or error.get("type") or "server_error"),
                       "message": str(error.get("message", "upstream error"))}
    return _event({"type": "response.failed", "response": failed, "sequence_number": 0})


def _event(payload: dict[str, object]) -> bytes:
    return b"event: " + str(payload["type"]).encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


class ResponsesStream:
    """Chat chunk events in, the Responses API's typed events out (``feed``), for one answer.

    ``response.created`` and ``response.in_progress`` first; an output item per message or
    tool call (``output_item.added`` … deltas … ``output_item.done``); ``response.completed``
    (``response.incomplete`` when cut by ``max_output_tokens``) only when the stream ended
    cleanly. An error event becomes ``response.failed``. ``response`` is the final Response
    object once the stream is over (``None`` if it failed)."""

    __slots__ = ("data", "custom", "response", "seq", "started", "items", "open", "text", "args", "finish",
                 "usage", "ended", "final", "model", "_text_head")

    def __init__(self, data: Mapping[str, object], response_id: str, custom: set[str]) -> None:
        self.data, self.custom = data, custom
        self.model = str(data.get("model"))
        self.response = shell(data, response_id, self.model)
        self.seq = 0
        self.started = False
        self.items: list[dict[str, object]] = []  # output items, done or open
        self.open: str | None = None  # "text" or "tool:<chat index>"
        self.text: list[str] = []
        self.args: list[str] = []
        self.finish: object = None
        self.usage: object = None
        self.ended = False
        self.final: dict[str, object] | None = None
        self._text_head = b""  # an output_text.delta event up to its delta (built once per item)

    def _emit(self, out: list[bytes], payload: dict[str, object]) -> None:
        payload["sequence_number"] = self.seq
        self.seq += 1
        out.append(_event(payload))

    def _start(self, out: list[bytes], chunk: Mapping[str, object]) -> None:
        self.started = True
        model = chunk.get("model")
        if isinstance(model, str):
            self.response["model"] = model
        shell_json = orjson.dumps(self.response)  # once for both events
        for kind in ("response.created", "response.in_progress"):
            out.append(b"event: " + kind.encode() + b'\ndata: {"type":"' + kind.encode() + b'","response":' + shell_json
                       + b',"sequence_number":' + str(self.seq).encode() + b"}\n\n")
            self.seq += 1

    def feed(self, event: bytes) -> bytes:
        if self.ended:
            return b""
        out: list[bytes] = []
        if event == DONE:
            if not self.started:
                self._start(out, {})
            self._finish(out)
            return b"".join(out)
        chunk = chunk_of(event)
        if chunk is None:
            return b""
        if not self.started:
            self._start(out, chunk)
        error = chunk.get("error")
        if isinstance(error, dict):
            self.ended = True
            failed = dict(self.response, status="failed", output=self.items,
                          error={"code": str(error.get("code") or error.get("type") or "server_error"),
                                 "message": str(error.get("message", "upstream error"))})
            self._emit(out, {"type": "response.failed", "response": failed})
            return b"".join(out)
        delta, finish = delta_of(chunk)
        if delta is not None:
            self._delta(delta, out)
        if finish is not None:
            self.finish = finish
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        return b"".join(out)

    def _delta(self, delta: Mapping[str, object], out: list[bytes]) -> None:
        text = delta.get("content")
        if isinstance(text, str) and text:
            if self.open != "text":
                self._close(out)
                self.open = "text"
                item = _message_item("", status="in_progress")
                item["content"] = []
                self._add(out, item)
                self._emit(out, {"type": "response.content_part.added", "item_id": item["id"],
                                 "output_index": len(self.items) - 1, "content_index": 0,
                                 "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}})
                self._text_head = (b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta",'
                                   b'"item_id":"' + str(item["id"]).encode() + b'","output_index":'
                                   + str(len(self.items) - 1).encode() + b',"content_index":0,"delta":')
            self.text.append(text)
            out.append(self._text_head + orjson.dumps(text) + b',"logprobs":[],"sequence_number":'
                       + str(self.seq).encode() + b"}\n\n")
            self.seq += 1
        calls = delta.get("tool_calls")
        for call in calls if isinstance(calls, list) else ():
            if not isinstance(call, dict):
                continue
            function = call.get("function")
            if not isinstance(function, dict):
                function = {}
            kind = f"tool:{call.get('index', 0)}"
            if kind != self.open:
                self._close(out)
                self.open = kind
                name = str(function.get("name") or "")
                item = _call_item(str(call.get("id") or _item_id("call_")), name, "", self.custom)
                item["status"] = "in_progress"
                self._add(out, item)
            arguments = function.get("arguments")
            if isinstance(arguments, str) and arguments:
                self.args.append(arguments)
                item = self.items[-1]
                if item["type"] == "function_call":
                    self._emit(out, {"type": "response.function_call_arguments.delta", "item_id": item["id"],
                                     "output_index": len(self.items) - 1, "delta": arguments})

    def _add(self, out: list[bytes], item: dict[str, object]) -> None:
        self.items.append(item)
        self._emit(out, {"type": "response.output_item.added", "output_index": len(self.items) - 1,
                         "item": dict(item)})

    def _close(self, out: list[bytes]) -> None:
        if self.open is None:
            return
        index, item = len(self.items) - 1, self.items[-1]
        if self.open == "text":
            text = "".join(self.text)
            part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
            self._emit(out, {"type": "response.output_text.done", "item_id": item["id"], "output_index": index,
                             "content_index": 0, "text": text, "logprobs": []})
            self._emit(out, {"type": "response.content_part.done", "item_id": item["id"], "output_index": index,
                             "content_index": 0, "part": part})
            item.update(content=[part], status="completed")
            self.text = []
        else:
            arguments = "".join(self.args)
            done = _call_item(str(item["call_id"]), str(item["name"]), arguments, self.custom, str(item["id"]))
            if done["type"] == "function_call":
                self._emit(out, {"type": "response.function_call_arguments.done", "item_id": item["id"],
                                 "output_index": index, "name": item["name"], "arguments": arguments})
            else:
                self._emit(out, {"type": "response.custom_tool_call_input.delta", "item_id": item["id"],
                                 "output_index": index, "delta": done["input"]})
                self._emit(out, {"type": "response.custom_tool_call_input.done", "item_id": item["id"],
                                 "output_index": index, "input": done["input"]})
            item.clear()
            item.update(done)
            self.args = []
        self.open = None
        self._emit(out, {"type": "response.output_item.done", "output_index": index, "item": dict(item)})

    def _finish(self, out: list[bytes]) -> None:
        self.ended = True
        self._close(out)
        response = dict(self.response, output=self.items, usage=_usage(self.usage))
        _finished(response, self.finish)
        self.final = response
        kind = "response.completed" if response["status"] == "completed" else "response.incomplete"
        self._emit(out, {"type": kind, "response": response})
