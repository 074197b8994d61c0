"""Answers in an agent API passed through natively (a backend that ``speaks`` Anthropic's
Messages or OpenAI's Responses): their usage in chat terms — what costs, budgets and
records read — and, for streams, a tracker that watches the events go by (usage, whether
the answer is complete, how much text was produced) without changing them.

Pure; no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson

__all__ = ["NativeTracker", "native_usage"]

#: The estimate of produced tokens from relayed text, as for chat streams.
_CHARS_PER_TOKEN = 4


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def native_usage(api: str, usage: object) -> dict[str, object] | None:
    """A Messages or Responses ``usage`` object as chat usage (``prompt_tokens`` counts every
    input token, cache reads in ``prompt_tokens_details.cached_tokens``, Anthropic's cache
    writes in ``cache_creation_input_tokens``); ``None`` when there is none."""
    if not isinstance(usage, Mapping):
        return None
    if api == "messages":
        read, written = _int(usage.get("cache_read_input_tokens")), _int(usage.get("cache_creation_input_tokens"))
        prompt = _int(usage.get("input_tokens")) + read + written
        out: dict[str, object] = {"prompt_tokens": prompt, "completion_tokens": _int(usage.get("output_tokens")),
                                  "prompt_tokens_details": {"cached_tokens": read}}
        if written:
            out["cache_creation_input_tokens"] = written
    else:
        details = usage.get("input_tokens_details")
        cached = _int(details.get("cached_tokens")) if isinstance(details, Mapping) else 0
        out = {"prompt_tokens": _int(usage.get("input_tokens")), "completion_tokens": _int(usage.get("output_tokens")),
               "prompt_tokens_details": {"cached_tokens": cached}}
    out["total_tokens"] = _int(out["prompt_tokens"]) + _int(out["completion_tokens"])
    return out


class NativeTracker:
    """Reads the events of a native Messages or Responses stream: ``usage`` (chat terms) as
    the upstream reports it, ``complete`` once the answer's last event (``message_stop``,
    ``response.completed`` / ``response.incomplete``) went by, ``produced_tokens`` estimated
    from the text relayed (what is billed if the stream breaks before its usage)."""

    __slots__ = ("api", "complete", "_chars", "_input", "_output", "_raw")

    def __init__(self, api: str) -> None:
        self.api = api
        self.complete = False
        self._chars = 0
        self._raw: dict[str, object] = {}  # Anthropic: usage merged over message_start and message_delta
        self._input: dict[str, object] | None = None
        self._output: dict[str, object] | None = None

    @property
    def usage(self) -> dict[str, object] | None:
        return self._output

    @property
    def produced_tokens(self) -> int:
        return -(-self._chars // _CHARS_PER_TOKEN)

    def feed(self, event: bytes) -> None:
        data = event.find(b"data:")
        if data < 0:
            return
        try:
            payload = orjson.loads(event[data + 5:])
        except orjson.JSONDecodeError:
            return
        if isinstance(payload, dict):
            self._read(payload)

    def _read(self, payload: Mapping[str, object]) -> None:
        kind = payload.get("type")
        if self.api == "messages":
            if kind == "content_block_delta":
                delta = payload.get("delta")
                if isinstance(delta, Mapping):
                    text = delta.get("text", delta.get("partial_json", delta.get("thinking")))
                    self._chars += len(text) if isinstance(text, str) else 0
            elif kind in ("message_start", "message_delta"):
                message = payload.get("message") if kind == "message_start" else payload
                usage = message.get("usage") if isinstance(message, Mapping) else None
                if isinstance(usage, Mapping):
                    self._raw.update({k: v for k, v in usage.items() if v is not None})
                    self._output = native_usage("messages", self._raw)
            elif kind == "message_stop":
                self.complete = True
            return
        if kind == "response.output_text.delta" or kind == "response.function_call_arguments.delta":
            delta = payload.get("delta")
            self._chars += len(delta) if isinstance(delta, str) else 0
        elif kind in ("response.completed", "response.incomplete"):
            response = payload.get("response")
            if isinstance(response, Mapping):
                self._output = native_usage("responses", response.get("usage"))
            self.complete = True
