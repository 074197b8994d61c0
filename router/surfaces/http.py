"""What every aiohttp surface shares: the ``Call`` built from a request, an SSE ``Sink``
over ``web.StreamResponse``, and writing an ``Outcome`` as a response."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from policies import Endpoint
from router.body import ParsedBody
from router.middlewares import PRINCIPAL, RECORD, REQUEST_ID
from router.pipeline import CALL_HEADERS, Call, Outcome, Reply

__all__ = ["SSESink", "call_for", "respond"]


def call_for(request: web.Request, endpoint: Endpoint, body: ParsedBody,
             native: Mapping[str, object] | None = None) -> Call:
    headers = request.headers
    wanted = {name: value for name in CALL_HEADERS if (value := headers.get(name)) is not None}
    return Call(endpoint, body, request.get(PRINCIPAL), request[REQUEST_ID], wanted, request[RECORD], native)


class SSESink:
    """A ``router.streaming.Sink`` writing server-sent events to the client as they come."""

    __slots__ = ("_request", "response")

    def __init__(self, request: web.Request) -> None:
        self._request = request
        self.response: web.StreamResponse | None = None

    async def open(self, headers: Mapping[str, str]) -> None:
        response = self.response = web.StreamResponse(status=200, headers=headers)
        response.content_type = "text/event-stream"
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Accel-Buffering"] = "no"
        await response.prepare(self._request)

    async def write(self, event: bytes) -> None:
        assert self.response is not None, "write before open"
        await self.response.write(event)

    async def write_many(self, events: list[bytes]) -> None:
        assert self.response is not None, "write before open"
        await self.response.write(b"".join(events))

    async def close(self) -> None:
        if self.response is not None:
            await self.response.write_eof()


async def respond(request: web.Request, outcome: Outcome) -> web.StreamResponse:
    """Write an OpenAI-shaped outcome: JSON as is, a stream as SSE."""
    if isinstance(outcome, Reply):
        return web.Response(body=outcome.body, status=outcome.status, content_type="application/json",
                            headers=outcome.headers)
    sink = SSESink(request)
    await outcome.send(sink)
    return sink.response if sink.response is not None else web.Response(status=499)
