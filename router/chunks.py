"""``ChunkTracker``: reads OpenAI streaming chunks as they pass through the gateway.

It knows what has been said so far (per choice), whether the answer is complete
(every choice finished, and the usage chunk arrived when it was asked for), and it
drops events that are not valid JSON. After a stream recovery it *stitches* the
continuation into the client's stream: one ``id``, no repeated text (some servers echo
the prefilled partial answer), usage summed over both parts, and a ``switchyard``
field on the final chunk recording the recovery.

Pure bytes-in, bytes-out; no I/O.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import orjson

from backends.sse import DONE, data_event

__all__ = ["ChunkTracker", "Recovery"]

log = logging.getLogger("switchyard.stream")

#: The estimate of relayed tokens from their text (as for prompts: ``router.facts``).
_CHARS_PER_TOKEN = 4


@dataclass(slots=True)
class Recovery:
    """One mid-stream recovery, as reported to the client on the final chunk."""

    broken: str
    continued_by: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"broken": self.broken, "continued_by": self.continued_by, "reason": self.reason}


@dataclass(slots=True)
class _Stitch:
    echo: str | None  # the prefill the continuation may repeat first
    ws: str = ""  # whitespace the prefill left off (already sent): not to be sent twice
    held: str = ""
    tokens_before: int = 0


@dataclass
class ChunkTracker:
    n: int = 1
    want_usage: bool = False  # the client asked for usage (stream_options.include_usage)
    expect_usage: bool = False  # the current upstream was asked for usage
    id: str | None = None
    text: dict[int, list[str]] = field(default_factory=dict)
    finished: set[int] = field(default_factory=set)
    finish_reasons: dict[int, str] = field(default_factory=dict)
    model: str | None = None
    created: int | None = None
    chat: bool = False  # chat.completion.chunk events (not text completions)
    usage: dict[str, int] | None = None
    tool_calls: bool = False
    content_events: int = 0  # content deltas of the current part (reset by a continuation)
    produced_events: int = 0  # content and tool-call deltas relayed, over every part
    produced_chars: int = 0  # their characters
    malformed: int = 0
    done: bool = False
    recoveries: list[Recovery] = field(default_factory=list)
    _stitch: _Stitch | None = None

    # -- reading -----------------------------------------------------------------------
    def feed(self, event: bytes) -> bytes | None:
        """The bytes to send the client for ``event`` (``None``: send nothing)."""
        if event == DONE:
            self.done = True
            return DONE
        if not event.startswith(b"data:"):
            return event  # comments / keep-alives: harmless, pass them on
        try:
            chunk = orjson.loads(event[5:])
        except orjson.JSONDecodeError:
            self.malformed += 1
            log.warning("skipped a malformed SSE event (%d bytes)", len(event))
            return None
        if not isinstance(chunk, dict):
            self.malformed += 1
            return None
        if self._stitch is not None:
            return self._stitched(chunk)
        self._observe(chunk)
        return event

    def _observe(self, chunk: dict[str, object]) -> None:
        if self.id is None and isinstance(chunk.get("id"), str):
            self.id = chunk["id"]  # type: ignore[assignment]
            model, created = chunk.get("model"), chunk.get("created")
            self.model = model if isinstance(model, str) else None
            self.created = created if isinstance(created, int) else None
            self.chat = chunk.get("object") == "chat.completion.chunk"
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, dict):
                continue
            index = choice.get("index", 0)
            delta = choice.get("delta")
            piece = delta.get("content") if isinstance(delta, dict) else choice.get("text")
            if isinstance(delta, dict) and delta.get("tool_calls"):
                self.tool_calls = True
                self._produced(_tool_chars(delta["tool_calls"]))
            if isinstance(piece, str) and piece:
                self.text.setdefault(index, []).append(piece)
                self.content_events += 1
                self._produced(len(piece))
            if choice.get("finish_reason"):
                self.finished.add(index)
                self.finish_reasons[index] = str(choice["finish_reason"])

    def _produced(self, chars: int) -> None:
        self.produced_events += 1
        self.produced_chars += chars

    @property
    def produced_tokens(self) -> int:
        """Completion tokens relayed so far, over every part and choice, for billing when no
        usage came: one per delta, or characters / 4 when that is more (providers that send
        several tokens in a delta)."""
        return max(self.produced_events, -(-self.produced_chars // _CHARS_PER_TOKEN))

    @property
    def complete(self) -> bool:
        """Every choice finished and, if usage was asked of the upstream, it arrived."""
        return len(self.finished) >= self.n and (self.usage is not None or not self.expect_usage)

    def as_answer(self) -> dict[str, object] | None:
        """The stream as the ``chat.completion`` JSON it stands for — only for a clean chat
        stream: every choice finished, usage reported, no tool calls, nothing recovered or
        skipped (``None`` otherwise). What the response cache stores for a streamed request."""
        if (not self.chat or not self.complete or self.usage is None or self.tool_calls or self.recoveries
                or self.malformed or len(self.finish_reasons) < self.n):
            return None
        choices = [{"index": i, "message": {"role": "assistant", "content": "".join(self.text.get(i, ()))},
                    "finish_reason": self.finish_reasons[i]} for i in range(self.n)]
        return {"id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
                "choices": choices, "usage": self.usage}

    def partial(self) -> str:
        return "".join(self.text.get(0, ()))

    def prefill(self) -> str:
        """The partial answer to continue from. Trailing whitespace is left off: Anthropic
        rejects it, and tokenizers continue better without it."""
        return self.partial().rstrip()

    def why_not_continuable(self) -> str | None:
        if self.n != 1:
            return "n > 1 cannot be continued"
        if self.tool_calls:
            return "a partial tool call cannot be continued"
        return None

    # -- stitching a continuation ------------------------------------------------------
    def continue_with(self, recovery: Recovery) -> None:
        """The next events come from a continuation of ``partial()``."""
        self.recoveries.append(recovery)
        before = self.content_events + (self._stitch.tokens_before if self._stitch else 0)
        partial = self.partial()
        prefill = partial.rstrip()
        self._stitch = _Stitch(echo=prefill, ws=partial[len(prefill):], tokens_before=before)
        self.usage, self.expect_usage, self.content_events = None, True, 0
        self.finished.clear()

    def _stitched(self, chunk: dict[str, object]) -> bytes | None:
        stitch = self._stitch
        assert stitch is not None
        chunk["id"] = self.id or chunk.get("id")
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.usage = _sum_usage(usage, stitch.tokens_before)
            chunk["usage"] = self.usage
            if not self.want_usage:
                return None
        keep = False
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            keep = self._stitch_choice(choice, stitch) or keep
        if usage is not None or self.finished:
            chunk["switchyard"] = {"recovered": [r.as_dict() for r in self.recoveries]}
        return data_event(chunk) if keep or usage is not None else None

    def _stitch_choice(self, choice: object, stitch: _Stitch) -> bool:
        if not isinstance(choice, dict):
            return False
        delta = choice.get("delta")
        if isinstance(delta, dict):
            delta.pop("role", None)
            piece = delta.get("content")
            if isinstance(piece, str) and piece:
                new = self._strip_echo(piece, stitch)
                if new:
                    delta["content"] = new
                    self.text.setdefault(choice.get("index", 0), []).append(new)
                    self.content_events += 1
                    self._produced(len(new))
                else:
                    delta.pop("content")
            elif "content" in delta and not piece:
                delta.pop("content")
        if choice.get("finish_reason"):
            self.finished.add(choice.get("index", 0))
            return True
        return bool(delta)

    @staticmethod
    def _strip_echo(piece: str, stitch: _Stitch) -> str:
        """Some servers (llama.cpp) start a continuation by repeating the prefill; drop it,
        and drop the whitespace the prefill left off if the continuation starts with it."""
        if stitch.echo is not None:
            held, echo = stitch.held + piece, stitch.echo
            if len(held) < len(echo) and echo.startswith(held):
                stitch.held = held  # still possibly an echo: wait for more
                return ""
            stitch.echo, stitch.held = None, ""
            piece = held[len(echo):] if held.startswith(echo) else held
        if stitch.ws and piece:
            piece = piece[len(stitch.ws):] if piece.startswith(stitch.ws) else piece
            stitch.ws = ""
        return piece


def _tool_chars(calls: object) -> int:
    """Characters of a tool-call delta's names and arguments."""
    total = 0
    for call in calls if isinstance(calls, list) else ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            total += sum(len(v) for k in ("name", "arguments") if isinstance(v := function.get(k), str))
    return total


def _sum_usage(usage: dict[str, object], tokens_before: int) -> dict[str, int]:
    prompt = int(usage.get("prompt_tokens") or 0)  # type: ignore[call-overload]
    completion = int(usage.get("completion_tokens") or 0) + tokens_before  # type: ignore[call-overload]
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
