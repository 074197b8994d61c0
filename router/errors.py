"""Gateway errors and the one table that turns any failure into an OpenAI-shaped
error response: ``{"error": {"message", "type", "param", "code"}}`` with its status.

Tree::

    GatewayError                    raised by the router itself
    ├── InvalidRequest       400    malformed JSON, wrong types, missing fields
    ├── Unauthorized         401    missing, unknown, revoked or expired virtual key
    ├── RateLimited          429    a team's or key's requests/tokens per minute
    ├── BudgetExceeded       429    a team's USD budget for the day or month
    ├── BudgetStoreUnavailable, KeyStoreUnavailable   503   the shared store cannot answer
    ├── ModelNotFound        404    unknown model alias (lists the available ones)
    ├── ResponseNotFound     404    no stored response of this team by that id (/v1/responses)
    ├── PolicyDenied         403    a rule denies the request (``route.deny``)
    ├── Forbidden            403    the caller's key does not reach what it asked for
    ├── NoBackendAvailable   503    the plan has no usable target
    ├── Overloaded           503    this process has ``settings.max_in_flight`` requests in flight
    ├── ShuttingDown         503    this process is draining (SIGTERM): retry, another replica answers
    └── AllBackendsFailed    502/503/504/429  every target was tried and failed

Backend errors (``backends.errors.BackendError``) keep their own status and type;
aiohttp's HTTP exceptions (404/405/413…) keep their status.

What a client sees is scrubbed (``error_info``'s ``scrubber``: the policy's, else the
generic one): no credential, no internal address, whatever raised it. Backend errors are
scrubbed once already where they leave ``backends``; this catches everything else (a
store's address in a 503, say). Logs get ``log_detail``: credentials removed, addresses kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from aiohttp import web

from backends import Scrubber
from backends.errors import BackendError, UpstreamRateLimited, UpstreamTimeout

__all__ = [
    "AllBackendsFailed",
    "BudgetExceeded",
    "BudgetStoreUnavailable",
    "KeyStoreUnavailable",
    "ErrorInfo",
    "Forbidden",
    "GatewayError",
    "InvalidRequest",
    "ModelNotFound",
    "NoBackendAvailable",
    "Overloaded",
    "PolicyDenied",
    "PreviousResponseNotFound",
    "ResponseNotFound",
    "ResponseStoreUnavailable",
    "RateLimited",
    "ShuttingDown",
    "Unauthorized",
    "error_info",
    "error_json",
    "log_detail",
    "StatsStoreUnavailable",
    "TelemetryOff",
]


class GatewayError(Exception):
    status = 500
    error_type = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class InvalidRequest(GatewayError):
    status = 400
    error_type = "invalid_request_error"


class Unauthorized(GatewayError):
    status = 401
    error_type = "invalid_request_error"

    def __init__(self, message: str, code: str = "invalid_api_key") -> None:
        super().__init__(message)
        self.code = code


class RateLimited(GatewayError):
    status = 429
    error_type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, retry_after: float, headers: dict[str, str]) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.headers = headers


class BudgetExceeded(GatewayError):
    status = 429
    error_type = "budget_exceeded"
    code = "budget_exceeded"


class BudgetStoreUnavailable(GatewayError):
    status = 503
    error_type = "service_unavailable"
    code = "budget_store_unavailable"


class KeyStoreUnavailable(GatewayError):
    status = 503
    error_type = "service_unavailable"
    code = "key_store_unavailable"


class StatsStoreUnavailable(GatewayError):
    status = 503
    error_type = "service_unavailable"
    code = "stats_store_unavailable"


class TelemetryOff(GatewayError):
    status = 404
    error_type = "not_found_error"
    code = "telemetry_off"


class ModelNotFound(GatewayError):
    status = 404
    error_type = "invalid_request_error"
    code = "model_not_found"


class ResponseNotFound(GatewayError):
    """``/v1/responses/{id}`` or ``previous_response_id`` names no stored response of this team."""

    status = 404
    error_type = "invalid_request_error"
    code = "response_not_found"


class ResponseStoreUnavailable(GatewayError):
    status = 503
    error_type = "service_unavailable"
    code = "response_store_unavailable"


class PreviousResponseNotFound(InvalidRequest):
    code = "previous_response_not_found"


class PolicyDenied(GatewayError):
    status = 403
    error_type = "permission_error"
    code = "policy_denied"


class Forbidden(GatewayError):
    status = 403
    error_type = "permission_error"
    code = "forbidden"


class Overloaded(GatewayError):
    status = 503
    error_type = "service_unavailable"
    code = "overloaded"
    retry_after = 1.0


class ShuttingDown(GatewayError):
    status = 503
    error_type = "service_unavailable"
    code = "shutting_down"
    retry_after = 1.0


class NoBackendAvailable(GatewayError):
    status = 503
    error_type = "service_unavailable"
    code = "no_backend_available"


class AllBackendsFailed(GatewayError):
    """Every target failed; ``failures`` is ``[(backend, error), …]`` in the order tried."""

    error_type = "upstream_error"
    code = "all_backends_failed"

    def __init__(self, alias: str, failures: list[tuple[str, BackendError]],
                 skipped: list[tuple[str, str]] | None = None, rule: str | None = None) -> None:
        self.failures = failures
        under = f" under rule {rule!r}" if rule else ""
        self._head = f"all backends failed for model {alias!r}{under}: "
        self._tail = "; skipped " + ", ".join(f"{name} ({why})" for name, why in skipped) if skipped else ""
        super().__init__(self._describe(detail=False))
        errors = [err for _, err in failures]
        self.retry_after = min((e.retry_after for e in errors if e.retry_after), default=None)
        if all(isinstance(e, UpstreamTimeout) for e in errors):
            self.status = 504
        elif all(isinstance(e, UpstreamRateLimited) for e in errors):
            self.status, self.error_type, self.code = 429, "rate_limit_error", "rate_limit_exceeded"
        elif any(e.status in (429, 503) for e in errors):
            self.status = 503
        else:
            self.status = 502

    def _describe(self, *, detail: bool) -> str:
        """Each failure as ``backend (error type): message`` (its log ``detail`` when asked),
        without naming the backend twice when its message already starts with its name."""
        parts = []
        for name, err in self.failures:
            text = err.detail if detail else err.message
            text = text.removeprefix(f"{name}: ") if text.startswith(f"{name}: ") else text
            parts.append(f"{name} ({err.error_type}): {text}")
        return self._head + "; ".join(parts) + self._tail

    @property
    def tried(self) -> str:
        return ",".join(dict.fromkeys(name for name, _ in self.failures))

    @property
    def detail(self) -> str:
        """The message with each failure's log detail (addresses kept) instead of its message."""
        return self._describe(detail=True)


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    status: int
    message: str
    error_type: str
    code: str | None = None
    param: str | None = None
    retry_after: float | None = None


_HTTP_TYPES = {404: ("not_found_error", "not_found"), 405: ("invalid_request_error", "method_not_allowed"),
               413: ("invalid_request_error", "request_too_large")}


_GENERIC = Scrubber()  # no configured secrets: the credential and address patterns only


def error_info(exc: BaseException, scrubber: Scrubber | None = None) -> ErrorInfo:
    """The one mapping from an exception to what the client sees (its message scrubbed by
    ``scrubber``: pass the policy's, which also knows every configured key and backend
    address; without one, the credential and address patterns still apply)."""
    scrubber = scrubber or _GENERIC
    if isinstance(exc, GatewayError):
        return ErrorInfo(exc.status, scrubber.public(exc.message), exc.error_type, exc.code, exc.param,
                         getattr(exc, "retry_after", None))
    if isinstance(exc, BackendError):
        prefix = f"{exc.backend}: " if exc.backend and not exc.message.startswith(exc.backend) else ""
        return ErrorInfo(exc.status, scrubber.public(prefix + exc.message), exc.error_type, exc.code, exc.param,
                         exc.retry_after)
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return ErrorInfo(413, f"request body too large: {exc.text} Raise settings.max_body_mb to allow more.",
                         "invalid_request_error", "request_too_large")
    if isinstance(exc, web.HTTPException):
        etype, code = _HTTP_TYPES.get(exc.status, ("invalid_request_error" if exc.status < 500
                                                   else "server_error", None))
        return ErrorInfo(exc.status, exc.reason if exc.status != 404 else "no such route", etype, code)
    return ErrorInfo(500, "internal gateway error (see the gateway log for this request id)", "server_error")


def log_detail(exc: BaseException, scrubber: Scrubber | None = None) -> str:
    """What the log says about ``exc``: the detail behind the client's message (addresses
    kept), never a credential."""
    detail = exc.detail if isinstance(exc, BackendError | AllBackendsFailed) else str(exc)
    return (scrubber or _GENERIC).credentials(detail)


def error_json(info: ErrorInfo) -> bytes:
    return orjson.dumps({"error": {"message": info.message, "type": info.error_type,
                                   "param": info.param, "code": info.code}})
