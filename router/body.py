"""Request bodies: parsed once (orjson), checked for the few fields the gateway acts
on, and otherwise left untouched so every other field passes through to upstreams.

Wrong types get a 400 naming the ``param``, as OpenAI does; so do integers out of range
(every integer field of the OpenAI API the gateway reads or forwards: counts are 32-bit,
``seed`` 64-bit, ``n`` and ``best_of`` at most ``settings.max_n``) — nothing a client sends
can overflow an estimate, a counter in the store or an upstream. A body nested deeper
than the sensitivity scanner reads (``MAX_DEPTH``) is a 400 too: every body the gateway
accepts is scanned whole, and serialised again without error when it is forwarded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import orjson

from policies import Endpoint
from policies.sensitivity import MAX_DEPTH as _SCANNED_DEPTH
from router.errors import InvalidRequest

__all__ = ["INT32_MAX", "MAX_DEPTH", "ParsedBody", "check_body", "load_json", "parse_body"]

#: The largest count (``max_tokens``, ``top_logprobs``, ``dimensions``, …) a body may hold.
INT32_MAX = 2**31 - 1
_INT64 = (-(2**63), 2**63 - 1)
#: Objects and arrays may sit at most this many levels inside a body's top-level object:
#: as deep as the sensitivity scanner reads (no API shape comes close).
MAX_DEPTH = _SCANNED_DEPTH
_CONTAINERS = frozenset({dict, list})

Check = Callable[[object], bool]


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _int_in(low: int, high: int) -> tuple[Check, str]:
    """An integer from ``low`` to ``high``, and how to say so."""
    want = f"an integer from {low} to {high}" if high != _INT64[1] else "a 64-bit integer"
    return _opt(lambda v: isinstance(v, int) and not isinstance(v, bool) and low <= v <= high), want


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
    "n": _int_in(1, INT32_MAX),  # and at most settings.max_n (``_choices``)
    "best_of": _int_in(1, INT32_MAX),  # idem; completions, and servers that take it on chat (vLLM)
    "max_tokens": _int_in(0, INT32_MAX),
    "max_completion_tokens": _int_in(0, INT32_MAX),
    "seed": _int_in(*_INT64),
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
    "chat": {"tools": (_opt(lambda v: isinstance(v, list)), "an array of tools"),
             "top_logprobs": _int_in(0, INT32_MAX)},
    "completions": {"logprobs": _int_in(0, INT32_MAX)},
    "embeddings": {"dimensions": _int_in(1, INT32_MAX)},
}


@dataclass(frozen=True, slots=True)
class ParsedBody:
    data: dict[str, object]
    model: str | None
    stream: bool
    size: int = 0  # bytes on the wire (large bodies are scanned off the event loop)
    #: Answers the request asks for: ``n`` (``best_of`` when larger), times the prompts of a
    #: completions batch. Output-token estimates (costs, reservations, TPM) scale with it.
    choices: int = 1


def parse_body(raw: bytes, endpoint: Endpoint, max_n: int | None = None) -> ParsedBody:
    """``max_n``: the most ``n`` / ``best_of`` may ask for (``settings.max_n``; ``None``: no cap)."""
    return check_body(load_json(raw), endpoint, max_n, len(raw))


def load_json(raw: bytes) -> dict[str, object]:
    """A request body's JSON object, no deeper than ``MAX_DEPTH`` (else ``InvalidRequest``)."""
    if not raw:
        raise InvalidRequest("request body is empty; expected a JSON object")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if str(exc).startswith("depth limit exceeded"):
            raise InvalidRequest(_TOO_DEEP) from None
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidRequest("request body must be a JSON object")
    if _may_be_deep(raw) and _nested_deeper(data, MAX_DEPTH):
        raise InvalidRequest(_TOO_DEEP)
    return data


def check_body(data: dict[str, object], endpoint: Endpoint, max_n: int | None, size: int,
               translated_from: bytes | None = None) -> ParsedBody:
    """The checks of an OpenAI-shaped body. ``translated_from``: the raw body a surface built
    it from (another format): its nesting is checked again, translation may add a level."""
    if translated_from is not None and _may_be_deep(translated_from, slack=1) and _nested_deeper(data, MAX_DEPTH):
        raise InvalidRequest(_TOO_DEEP)
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
    choices = _choices(data, endpoint, max_n)
    return ParsedBody(data, model if isinstance(model, str) else None, stream, size, choices)


_TOO_DEEP = f"request body is nested too deeply: objects and arrays may be at most {MAX_DEPTH} levels inside it"


def _may_be_deep(raw: bytes, slack: int = 0) -> bool:
    """Too few brackets to be too deep (a small body: two C-level counts, ~100 ns)? A large
    body is walked instead: counting 9 MB blocks the event loop ~7 ms, walking prose's few
    containers costs microseconds."""
    return len(raw) > 65536 or raw.count(b"{") + raw.count(b"[") > MAX_DEPTH + 1 - slack


def _nested_deeper(body: dict[str, object], limit: int) -> bool:
    """Whether an object or array sits more than ``limit`` levels inside ``body``. Level by
    level, no recursion (no depth can exhaust the stack); a container's members are looked
    at in C (``map(type)``), and only containers are kept for the next level."""
    level: list[dict[str, object] | list[object]] = [body]
    for _ in range(limit + 1):
        below: list[dict[str, object] | list[object]] = []
        for container in level:
            members = container.values() if type(container) is dict else container
            if not _CONTAINERS.isdisjoint(map(type, members)):
                below.extend(m for m in members if type(m) is dict or type(m) is list)
        if not below:
            return False
        level = below
    return True


def _choices(data: dict[str, object], endpoint: Endpoint, max_n: int | None) -> int:
    """``ParsedBody.choices``, after ``n`` and ``best_of`` are checked against ``max_n``."""
    n, best_of = data.get("n"), data.get("best_of")
    for name, value in (("n", n), ("best_of", best_of)):
        if max_n is not None and isinstance(value, int) and value > max_n:
            raise InvalidRequest(f"'{name}' must be at most {max_n} (this gateway's settings.max_n)", param=name)
    if isinstance(n, int) and isinstance(best_of, int) and best_of < n:
        raise InvalidRequest("'best_of' must be at least 'n'", param="best_of")
    most = max(n if isinstance(n, int) else 1, best_of if isinstance(best_of, int) else 1)
    prompt = data.get("prompt")
    if endpoint == "completions" and isinstance(prompt, list) and prompt and not isinstance(prompt[0], int):
        most *= len(prompt)  # a batch: every prompt gets its own answers
    return most
