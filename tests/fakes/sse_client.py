"""Client-side SSE reading for tests.

This module owns turning a raw `aiohttp.ClientResponse` event stream into parsed
events while recording *how* the stream ended (cleanly, cut, or timed out), so tests
can assert on fault behaviour without the SDKs' own parsing getting in the way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson


@dataclass(frozen=True)
class SSERecord:
    """One parsed event: optional `event:` name and the joined `data:` payload."""

    event: str | None
    data: str

    def json(self) -> Any:
        return orjson.loads(self.data)

    @property
    def is_json(self) -> bool:
        try:
            orjson.loads(self.data)
        except orjson.JSONDecodeError:
            return False
        return True


@dataclass(frozen=True)
class SSERead:
    """All complete events received, and whether the body ended cleanly."""

    events: list[SSERecord]
    complete: bool
    error: BaseException | None = None

    @property
    def has_done(self) -> bool:
        return any(e.data == "[DONE]" for e in self.events)

    @property
    def names(self) -> list[str | None]:
        return [e.event for e in self.events]

    def json_events(self) -> list[Any]:
        return [e.json() for e in self.events if e.data != "[DONE]" and e.is_json]


def parse_sse(text: str) -> list[SSERecord]:
    """Parse complete events (a trailing block without its blank line is discarded)."""
    blocks = text.replace("\r\n", "\n").split("\n\n")[:-1]
    return [r for r in (_parse_block(b) for b in blocks) if r is not None]


def _parse_block(block: str) -> SSERecord | None:
    event: str | None = None
    data: list[str] = []
    for line in block.split("\n"):
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            event = value
        elif field == "data":
            data.append(value)
    return SSERecord(event, "\n".join(data)) if data or event else None


async def read_sse(response: aiohttp.ClientResponse) -> SSERead:
    """Read the body to the end (or until it breaks) and parse what arrived."""
    buffer = bytearray()
    error: BaseException | None = None
    try:
        async for chunk in response.content.iter_any():
            buffer.extend(chunk)
    except (aiohttp.ClientError, TimeoutError) as exc:
        error = exc
    return SSERead(parse_sse(buffer.decode()), complete=error is None, error=error)
