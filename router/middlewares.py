"""HTTP middlewares: request id, and mapping every exception to an OpenAI-shaped error.

Plain ``async def (request, handler)`` functions. Headers every response carries
(``x-request-id``, ``x-switchyard-backend``, ``x-switchyard-route``) are stamped in
``stamp_headers`` (``on_response_prepare``), so streamed responses get them too.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os

from aiohttp import web
from aiohttp.typedefs import Handler

from router.errors import AllBackendsFailed, error_info, error_json

__all__ = ["REQUEST_ID", "ROUTE", "RULE", "errors_and_ids", "stamp_headers"]

log = logging.getLogger("switchyard.http")

REQUEST_ID = web.RequestKey("request_id", str)
ROUTE = web.RequestKey("route", str)
RULE = web.RequestKey("rule", str)


def _request_id(request: web.Request) -> str:
    given = request.headers.get("x-request-id")
    if given and len(given) <= 128 and given.isprintable():
        return given
    return os.urandom(12).hex()


@web.middleware
async def errors_and_ids(request: web.Request, handler: Handler) -> web.StreamResponse:
    request[REQUEST_ID] = _request_id(request)
    try:
        return await handler(request)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - the one place every error becomes a response
        return _error_response(request, exc)


def _error_response(request: web.Request, exc: Exception) -> web.Response:
    info = error_info(exc)
    if info.status >= 500 and not isinstance(exc, web.HTTPException):
        level = logging.ERROR if info.status == 500 else logging.WARNING
        log.log(level, "request %s failed: %s", request[REQUEST_ID], info.message,
                exc_info=info.status == 500)
    response = web.Response(status=info.status, body=error_json(info), content_type="application/json")
    if info.retry_after is not None:
        response.headers["Retry-After"] = str(max(1, math.ceil(info.retry_after)))
    if isinstance(exc, AllBackendsFailed):
        response.headers["x-switchyard-tried"] = exc.tried
    return response


async def stamp_headers(request: web.Request, response: web.StreamResponse) -> None:
    headers = response.headers
    headers["x-request-id"] = request.get(REQUEST_ID) or _request_id(request)
    if "x-switchyard-backend" not in headers:
        headers["x-switchyard-backend"] = "none"
    if "x-switchyard-route" not in headers:
        headers["x-switchyard-route"] = request.get(ROUTE, "none")
    if "x-switchyard-rule" not in headers and RULE in request:
        headers["x-switchyard-rule"] = request[RULE]
