"""Server-sent events: split a byte stream into complete events, and build events.

Owns the SSE framing only; knows nothing of HTTP clients. Must not import ``router``
or ``policies``.
"""

from __future__ import annotations

import orjson

__all__ = ["DONE", "SSESplitter", "data_event", "error_event"]

DONE = b"data: [DONE]\n\n"


class SSESplitter:
    """Feed raw bytes, get back complete events (each ending in a blank line, ``\\n``
    line endings). Partial events are kept until the rest arrives."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        buf = self._buf + chunk if self._buf else chunk
        held = b""
        if b"\r" in buf:
            if buf.endswith(b"\r"):  # the first half of a CRLF: keep only it for the next chunk
                buf, held = buf[:-1], b"\r"
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        events = buf.split(b"\n\n")
        self._buf = events.pop() + held
        # A lone blank keep-alive line leaves a leading "\n" on the next event: strip it.
        return [e.lstrip(b"\n") + b"\n\n" for e in events if e.strip()]

    @property
    def pending(self) -> bytes:
        return self._buf


def data_event(payload: object) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def error_event(message: str, error_type: str, code: str | None = None) -> bytes:
    """An in-band error in OpenAI's error shape (the status line is already sent)."""
    return data_event({"error": {"message": message, "type": error_type, "param": None, "code": code}})
