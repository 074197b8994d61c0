"""HTTP middlewares: request id, and mapping every exception to an OpenAI-shaped error.

Plain ``async def (request, handler)`` functions. Headers every response carries
(``x-request-id``, ``x-switchyard-backend``, ``x-switchyard-route``) are stamped in
``stamp_headers`` (``on_response_prepare``), so streamed responses get them too.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import os
import time

from aiohttp import web
from aiohttp.typedefs import Handler

from router.errors import AllBackendsFailed, KeyStoreUnavailable, RateLimited, Unauthorized, error_info, error_json
from router.record import RequestRecord
from router.reload import SERVING
from router.settings import SETTINGS
from router.state.keys import AuthError, Principal, bearer_token

__all__ = ["PRINCIPAL", "RECORD", "REQUEST_ID", "authenticate", "errors_and_ids", "observe", "stamp_headers"]

log = logging.getLogger("switchyard.http")

REQUEST_ID = web.RequestKey("request_id", str)
PRINCIPAL = web.RequestKey("principal", Principal)
RECORD = web.RequestKey("record", RequestRecord)
_OPERATIONS = {"/v1/chat/completions": "chat", "/v1/completions": "text_completion", "/v1/embeddings": "embeddings"}


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
    if isinstance(exc, RateLimited):
        response.headers.update(exc.headers)
    return response


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Generation requests: a ``RequestRecord`` filled in along the way, the request's trace
    span, and — when it is over (a stream: when its last byte is sent) — its metrics and
    dashboard counters. Errors are recorded as what the client gets (``error_info``)."""
    operation = _OPERATIONS.get(request.path)
    if operation is None or request.method != "POST":
        return await handler(request)
    rec = request[RECORD] = RequestRecord(operation, started=time.perf_counter())
    serving = request.app[SERVING]
    telemetry = serving.gateway.telemetry
    with telemetry.request_span(rec, request.headers):
        try:
            return await handler(request)
        except asyncio.CancelledError:
            rec.error_type, rec.status = "client_closed", 499
            raise
        except Exception as exc:
            info = error_info(exc)
            rec.error_type, rec.status = info.code or info.error_type, info.status
            raise
        finally:
            rec.duration_s = time.perf_counter() - rec.started
            telemetry.record(rec)
            serving.gateway.stats.record(rec)


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """``/v1/*``: a virtual key → its team (unless the gateway is open: no keys configured).
    ``/admin/*``: the admin key; ``/metrics`` and ``/dashboard/data``: the admin key or the
    read-only dashboard key — both only when an admin key is configured."""
    path = request.path
    if path.startswith("/v1/"):
        gateway = request.app[SERVING].gateway
        if gateway.auth_required:
            try:
                request[PRINCIPAL] = await gateway.keys.authenticate(request.headers)
            except AuthError as exc:
                if exc.code == "key_store_unavailable":
                    raise KeyStoreUnavailable(exc.message) from None
                raise Unauthorized(exc.message, exc.code) from None
    elif path.startswith("/admin/"):
        _check_admin(request)
    elif path in _READER_PATHS:
        _check_reader(request)
    return await handler(request)


_READER_PATHS = frozenset({"/metrics", "/dashboard/data"})  # the page and its assets hold no data


def _check_admin(request: web.Request) -> None:
    settings = request.app[SETTINGS]
    if settings.admin_key is None:
        if request.path.startswith("/admin/keys"):
            raise Unauthorized("key management needs an admin key: set SWITCHYARD_ADMIN_KEY", "admin_key_not_set")
        return
    if not _bearer_is(request, settings.admin_key):
        raise Unauthorized("this endpoint needs the admin key (Authorization: Bearer <SWITCHYARD_ADMIN_KEY>)",
                           "invalid_admin_key")


def _check_reader(request: web.Request) -> None:
    settings = request.app[SETTINGS]
    if settings.admin_key is not None and not _bearer_is(request, settings.admin_key, settings.dashboard_key):
        raise Unauthorized("this endpoint needs the dashboard key or the admin key (Authorization: Bearer …)",
                           "invalid_dashboard_key")


def _bearer_is(request: web.Request, *keys: str | None) -> bool:
    """The request's bearer token is one of ``keys`` (constant-time; ``None`` keys never match)."""
    token = (bearer_token(request.headers) or "").encode()
    return any(key is not None and hmac.compare_digest(token, key.encode()) for key in keys)


async def stamp_headers(request: web.Request, response: web.StreamResponse) -> None:
    headers = response.headers
    headers["x-request-id"] = request.get(REQUEST_ID) or _request_id(request)
    if "x-switchyard-backend" not in headers:
        headers["x-switchyard-backend"] = "none"
    rec = request.get(RECORD)
    if "x-switchyard-route" not in headers:
        headers["x-switchyard-route"] = rec.route if rec is not None and rec.route else "none"
    if "x-switchyard-rule" not in headers and rec is not None and rec.rule is not None:
        headers["x-switchyard-rule"] = rec.rule
