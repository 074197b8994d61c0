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
    ├── PolicyDenied         403    a rule denies the request (``route.deny``)
    ├── NoBackendAvailable   503    the plan has no usable target
    └── AllBackendsFailed    502/503/504/429  every target was tried and failed

Backend errors (``backends.errors.BackendError``) keep their own status and type;
aiohttp's HTTP exceptions (404/405/413…) keep their status.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from aiohttp import web

from backends.errors import BackendError, UpstreamRateLimited, UpstreamTimeout

__all__ = [
    "AllBackendsFailed",
    "BudgetExceeded",
    "BudgetStoreUnavailable",
    "KeyStoreUnavailable",
    "ErrorInfo",
    "GatewayError",
    "InvalidRequest",
    "ModelNotFound",
    "NoBackendAvailable",
    "PolicyDenied",
    "RateLimited",
    "Unauthorized",
    "error_info",
    "error_json",
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


class PolicyDenied(GatewayError):
    status = 403
    error_type = "permission_error"
    code = "policy_denied"


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
        detail = "; ".join(f"{name}: {err.message}" for name, err in failures)
        if skipped:
            detail += "; skipped " + ", ".join(f"{name} ({why})" for name, why in skipped)
        under = f" under rule {rule!r}" if rule else ""
        super().__init__(f"all backends failed for model {alias!r}{under}: {detail}")
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

    @property
    def tried(self) -> str:
        return ",".join(dict.fromkeys(name for name, _ in self.failures))


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


def error_info(exc: BaseException) -> ErrorInfo:
    """The one mapping from an exception to what the client sees."""
    if isinstance(exc, GatewayError):
        return ErrorInfo(exc.status, exc.message, exc.error_type, exc.code, exc.param,
                         getattr(exc, "retry_after", None))
    if isinstance(exc, BackendError):
        prefix = f"{exc.backend}: " if exc.backend and not exc.message.startswith(exc.backend) else ""
        return ErrorInfo(exc.status, prefix + exc.message, exc.error_type, exc.code, exc.param,
                         exc.retry_after)
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return ErrorInfo(413, f"request body too large: {exc.text} Raise settings.max_body_mb to allow more.",
                         "invalid_request_error", "request_too_large")
    if isinstance(exc, web.HTTPException):
        etype, code = _HTTP_TYPES.get(exc.status, ("invalid_request_error" if exc.status < 500
                                                   else "server_error", None))
        return ErrorInfo(exc.status, exc.reason if exc.status != 404 else "no such route", etype, code)
    return ErrorInfo(500, "internal gateway error (see the gateway log for this request id)", "server_error")


def error_json(info: ErrorInfo) -> bytes:
    return orjson.dumps({"error": {"message": info.message, "type": info.error_type,
                                   "param": info.param, "code": info.code}})
