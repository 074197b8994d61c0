"""HTTP middlewares: request id, mapping every exception to an OpenAI-shaped error
(scrubbed: no credential, no internal address), and access by each route's level
(``router.routes.ACCESS``).

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

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from router.errors import (
    AllBackendsFailed,
    KeyStoreUnavailable,
    RateLimited,
    ShuttingDown,
    Unauthorized,
    error_info,
    error_json,
    log_detail,
)
from router.inflight import IN_FLIGHT
from router.record import RequestRecord
from router.reload import SERVING
from router.routes import Access, access_of
from router.settings import SETTINGS, Settings
from router.state.keys import AuthError, Principal, bearer_token
from router.surfaces import messages as messages_surface

__all__ = ["PRINCIPAL", "RECORD", "REQUEST_ID", "authenticate", "errors_and_ids", "is_admin", "is_open",
           "log_access_mode", "observe", "stamp_headers"]

log = logging.getLogger("switchyard.http")

#: Client errors a retry cannot fix: answered with ``x-should-retry: false`` (Claude Code retried
#: a 401 ten times, backing off for minutes, without it).
_FINAL_STATUSES = frozenset({400, 401, 403, 404, 405, 413, 422})
REQUEST_ID = web.RequestKey("request_id", str)
PRINCIPAL = web.RequestKey("principal", Principal)
RECORD = web.RequestKey("record", RequestRecord)
#: path → (gen_ai.operation.name, switchyard.endpoint) of the generation routes
_OPERATIONS = {"/v1/chat/completions": ("chat", "chat"), "/v1/completions": ("text_completion", "completions"),
               "/v1/embeddings": ("embeddings", "embeddings"), "/v1/messages": ("chat", "messages"),
               "/v1/responses": ("chat", "responses")}


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
    serving = request.app.get(SERVING)
    scrubber = serving.gateway.runtime.scrubber if serving is not None else None  # every configured key
    info = error_info(exc, scrubber)
    if info.status >= 500 and not isinstance(exc, web.HTTPException):
        level = logging.ERROR if info.status == 500 else logging.WARNING
        log.log(level, "request %s failed: %s", request[REQUEST_ID], log_detail(exc, scrubber),
                exc_info=info.status == 500)
    if request.path.startswith("/v1/messages"):  # Anthropic's error shape on its surface
        shaped = messages_surface.error_body(info.status, info.message)
        body = orjson.dumps(shaped | {"request_id": request[REQUEST_ID]})
    else:
        body = error_json(info)
    response = web.Response(status=info.status, body=body, content_type="application/json")
    if info.status in _FINAL_STATUSES:  # the official SDKs (and Claude Code) retry less when told not to
        response.headers["x-should-retry"] = "false"
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
    kind = _OPERATIONS.get(request.path)
    if kind is None or request.method != "POST":
        return await handler(request)
    rec = request[RECORD] = RequestRecord(kind[0], kind[1], started=time.perf_counter())
    serving = request.app[SERVING]
    telemetry = serving.gateway.telemetry
    with telemetry.request_span(rec, request.headers):
        try:
            return await handler(request)
        except asyncio.CancelledError:
            flights = request.app.get(IN_FLIGHT)
            if flights is not None and flights.deadline.cutting():  # the gateway cut it, not the client
                rec.error_type, rec.status = ShuttingDown.code, ShuttingDown.status
            else:
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
            if rec.backend is not None and rec.error_type is None and rec.cache != "hit":
                serving.gateway.load.observe(rec.backend, rec.input_tokens, rec.output_tokens, rec.ttft_s,
                                             rec.duration_s, waited=rec.predicted_wait)


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Let the caller in by the level of the route it matched (``router.routes``)."""
    level = access_of(request)
    if level is Access.CLIENT or level is Access.CLIENT_OR_ADMIN:
        if not (level is Access.CLIENT_OR_ADMIN and is_admin(request)):
            await _check_client(request)
    elif level is Access.DASHBOARD:
        _check_dashboard(request)
    elif level is Access.ADMIN:
        _check_admin(request)
    return await handler(request)


def is_open(request: web.Request) -> bool:
    """No credential of any kind is configured: no virtual key, no admin or dashboard key."""
    settings = request.app[SETTINGS]
    return (settings.admin_key is None and settings.dashboard_key is None
            and not request.app[SERVING].gateway.auth_required)


def is_admin(request: web.Request) -> bool:
    """The request carries the admin key (never true when none is configured)."""
    return _bearer_is(request, request.app[SETTINGS].admin_key)


async def _check_client(request: web.Request) -> None:
    gateway = request.app[SERVING].gateway
    if not gateway.auth_required:
        return
    try:
        request[PRINCIPAL] = await gateway.keys.authenticate(request.headers)
    except AuthError as exc:
        if exc.code == "key_store_unavailable":
            raise KeyStoreUnavailable(exc.message) from None
        raise Unauthorized(exc.message, exc.code) from None


_SET_ADMIN_KEY = "set SWITCHYARD_ADMIN_KEY on the gateway and send it as Authorization: Bearer <admin key>"


def _check_admin(request: web.Request) -> None:
    settings = request.app[SETTINGS]
    if settings.admin_key is not None:
        if not is_admin(request):
            raise Unauthorized("this endpoint needs the admin key (Authorization: Bearer <SWITCHYARD_ADMIN_KEY>)",
                               "invalid_admin_key")
        return
    if request.path.startswith("/admin/keys"):
        raise Unauthorized(f"key management needs an admin key: {_SET_ADMIN_KEY}", "admin_key_not_set")
    if not is_open(request):
        raise Unauthorized(f"the admin API is closed: this gateway has keys but no admin key; {_SET_ADMIN_KEY}",
                           "admin_key_not_set")


def _check_dashboard(request: web.Request) -> None:
    settings = request.app[SETTINGS]
    if _bearer_is(request, settings.admin_key, settings.dashboard_key) or is_open(request):
        return
    if settings.admin_key is None and settings.dashboard_key is None:
        raise Unauthorized("this endpoint is closed: this gateway has keys but no dashboard or admin key; set "
                           "SWITCHYARD_DASHBOARD_KEY (read-only) or SWITCHYARD_ADMIN_KEY", "admin_key_not_set")
    raise Unauthorized("this endpoint needs the dashboard key or the admin key (Authorization: Bearer …)",
                       "invalid_dashboard_key")


def log_access_mode(settings: Settings, keys_exist: bool) -> None:
    """Say at start-up who may use the admin API and the dashboard data, and how to close them."""
    if settings.admin_key is None and settings.dashboard_key is None and not keys_exist:
        log.warning("ADMIN API OPEN: /admin/*, /metrics and /dashboard/data answer anyone (no virtual keys, no "
                    "admin key). Set SWITCHYARD_ADMIN_KEY=<long random secret, e.g. `openssl rand -hex 32`> to "
                    "close them (and SWITCHYARD_DASHBOARD_KEY for read-only /metrics and dashboard access).")
        return
    if settings.admin_key is None:
        log.warning("the admin API (/admin/*) refuses every request: no admin key is set. Set "
                    "SWITCHYARD_ADMIN_KEY=<long random secret, e.g. `openssl rand -hex 32`> and send it as "
                    "Authorization: Bearer <admin key>.")
    if settings.admin_key is None and settings.dashboard_key is None:
        log.warning("/metrics and /dashboard/data refuse every request: set SWITCHYARD_DASHBOARD_KEY (read-only) "
                    "or SWITCHYARD_ADMIN_KEY.")
    else:
        log.info("admin API: %s; /metrics and /dashboard/data: %s",
                 "admin key" if settings.admin_key else "closed (no admin key)",
                 " or ".join(k for k, v in (("dashboard key", settings.dashboard_key),
                                            ("admin key", settings.admin_key)) if v))


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
