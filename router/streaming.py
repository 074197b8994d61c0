"""SSE relay from an open backend stream to the client.

Once the response has started, an error cannot change the status: it travels in the
stream as an OpenAI-shaped error event, followed by ``[DONE]``, so a truncated answer
is never presented as a clean finish. A client that goes away closes (cancels) the
upstream request.
"""

from __future__ import annotations

import logging

from aiohttp import web

from backends import BackendError
from backends.sse import DONE, error_event
from router.engine import StreamAnswer

__all__ = ["relay"]

log = logging.getLogger("switchyard.stream")


async def relay(request: web.Request, answer: StreamAnswer, headers: dict[str, str]) -> web.StreamResponse:
    response = web.StreamResponse(status=200, headers=headers)
    response.content_type = "text/event-stream"
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    try:
        await response.prepare(request)
        await response.write(answer.first)
        async for event in answer.events:
            await response.write(event)
    except BackendError as exc:
        log.warning("stream from %s broke after it started: %s", answer.backend, exc.message)
        await _write_error(response, exc)
    except (ConnectionResetError, ConnectionError):
        log.info("client went away mid-stream; closing the %s upstream", answer.backend)
    finally:
        await answer.stream.aclose()
    return response


async def _write_error(response: web.StreamResponse, exc: BackendError) -> None:
    try:
        await response.write(error_event(exc.message, exc.error_type, exc.code))
        await response.write(DONE)
        await response.write_eof()
    except (ConnectionResetError, ConnectionError):
        pass
