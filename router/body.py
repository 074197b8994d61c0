"""Request bodies: parsed once (orjson), checked for the few fields the gateway acts
on, and otherwise left untouched so every other field passes through to upstreams.

Wrong types get a 400 naming the ``param``, as OpenAI does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import orjson

from policies import Endpoint
from router.errors import InvalidRequest

__all__ = ["ParsedBody", "parse_body"]

Check = Callable[[object], bool]


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _int_at_least(low: int) -> Check:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low


def _is_num(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _opt(check: Check) -> Check:
    return lambda v: v is None or check(v)


def _str_list(v: object) -> bool:
    return isinstance(v, list) and all(isinstance(s, str) for s in v)


def _str_or_list(v: object) -> bool:
    return isinstance(v, str) or (isinstance(v, list) and len(v) > 0)


# field → (check, what the client should send)
_COMMON: dict[str, tuple[Check, str]] = {
    "model": (lambda v: isinstance(v, str) and v != "", "a non-empty string"),
    "stream": (_opt(lambda v: isinstance(v, bool)), "a boolean"),
    "stream_options": (_opt(lambda v: isinstance(v, dict)), "an object"),
    "n": (_opt(_int_at_least(1)), "an integer >= 1"),
    "max_tokens": (_opt(_int_at_least(0)), "an integer >= 0"),
    "max_completion_tokens": (_opt(_int_at_least(0)), "an integer >= 0"),
    "temperature": (_opt(_is_num), "a number"),
    "top_p": (_opt(_is_num), "a number"),
    "user": (_opt(lambda v: isinstance(v, str)), "a string"),
    "stop": (_opt(lambda v: isinstance(v, str) or _str_list(v)), "a string or an array of strings"),
    "metadata": (_opt(lambda v: isinstance(v, dict)), "an object"),
}
_REQUIRED: dict[str, dict[str, tuple[Check, str]]] = {
    "chat": {"messages": (lambda v: isinstance(v, list) and len(v) > 0
                          and all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in v),
                          "a non-empty array of message objects, each with a 'role'")},
    "completions": {"prompt": (_str_or_list, "a string or a non-empty array")},
    "embeddings": {"input": (_str_or_list, "a string or a non-empty array")},
}
_EXTRA: dict[str, dict[str, tuple[Check, str]]] = {
    "chat": {"tools": (_opt(lambda v: isinstance(v, list)), "an array of tools")},
    "completions": {},
    "embeddings": {},
}


@dataclass(frozen=True, slots=True)
class ParsedBody:
    data: dict[str, object]
    model: str | None
    stream: bool
    size: int = 0  # bytes on the wire (large bodies are scanned off the event loop)


def parse_body(raw: bytes, endpoint: Endpoint) -> ParsedBody:
    if not raw:
        raise InvalidRequest("request body is empty; expected a JSON object")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidRequest("request body must be a JSON object")
    for name, (check, want) in _REQUIRED[endpoint].items():
        if name not in data:
            raise InvalidRequest(f"missing required parameter '{name}'", param=name)
        if not check(data[name]):
            raise InvalidRequest(f"'{name}' must be {want}", param=name)
    for table in (_COMMON, _EXTRA[endpoint]):
        for name, (check, want) in table.items():
            if name in data and not check(data[name]):
                raise InvalidRequest(f"'{name}' must be {want}", param=name)
    stream = data.get("stream") is True
    if stream and endpoint == "embeddings":
        raise InvalidRequest("embeddings cannot be streamed", param="stream")
    model = data.get("model")
    return ParsedBody(data, model if isinstance(model, str) else None, stream, len(raw))
