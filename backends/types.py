"""Wire types shared by every backend: the request as the router hands it over, and
what comes back. The body travels as the client's parsed JSON (every field passes
through untouched) beside a few typed fields the adapters act on.

Must not import ``router`` or ``policies``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

__all__ = ["Api", "BackendRequest", "BackendResponse", "BackendStream", "Health", "stream_ready"]

#: The upstream API a request is for (its path below an OpenAI-compatible ``base_url`` is
#: ``ENDPOINT_PATHS[api]``).
Api = Literal["chat", "completions", "embeddings", "messages", "responses"]

#: URL path of each API below an OpenAI-compatible ``base_url``.
ENDPOINT_PATHS: dict[Api, str] = {
    "chat": "/chat/completions",
    "completions": "/completions",
    "embeddings": "/embeddings",
    "messages": "/messages",  # Anthropic's Messages API, natively (llama.cpp, vLLM, Ollama)
    "responses": "/responses",  # OpenAI's Responses API, natively (llama.cpp, vLLM)
}


@dataclass(frozen=True, slots=True)
class BackendRequest:
    """One request for one attempt. ``body`` is the client's JSON object, never mutated."""

    endpoint: Api
    body: Mapping[str, object]
    stream: bool
    request_id: str
    traceparent: str | None = None
    #: The last message is a partial assistant answer the backend must continue (stream recovery).
    prefill: bool = False
    #: The same request in the client's own API (``messages`` / ``responses``), for a target
    #: that serves that API natively (``speaks``): sent instead of this translation.
    native: BackendRequest | None = None
    #: Headers for this request only (a native Messages request: ``anthropic-version``, ``-beta``).
    headers: tuple[tuple[str, str], ...] = ()
    #: The client's conversation key (``x-session-id``): a replica pool keeps it on one replica.
    session: str | None = None


@dataclass(frozen=True, slots=True)
class BackendResponse:
    """A complete (non-streaming) answer in OpenAI's JSON format."""

    body: bytes
    status: int = 200
    #: which replica of a pool answered (its index in ``replicas``); None for one server
    replica: int | None = None


class BackendStream(Protocol):
    """An open streaming answer: complete SSE events (``data: {...}\\n\\n``) in OpenAI's
    chunk format, ending with ``data: [DONE]\\n\\n``. Raises ``BackendError`` if the
    upstream fails; ``aclose`` releases the upstream connection (and cancels it)."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


def _never() -> bool:
    return False


def stream_ready(stream: BackendStream) -> Callable[[], bool]:
    """The stream's ``ready()`` — true when its next event is already received, so that the
    relay can write what arrived together to the client in one write — or, for a stream
    without one (events one at a time, e.g. litellm's), a function that always says no."""
    ready = getattr(stream, "ready", None)
    return ready if callable(ready) else _never


@dataclass(frozen=True, slots=True)
class Health:
    ok: bool
    detail: str

