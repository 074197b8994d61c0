"""The backend error tree. Every upstream failure becomes one of these, once, at the
adapter boundary (aiohttp and litellm exceptions never leave ``backends``).

Tree::

    BackendError                     status, retryable, retry_after, backend, code
    ├── UpstreamUnavailable          could not get an answer (fail over)
    │   ├── UpstreamConnectError     connect refused / reset before any byte     502
    │   ├── UpstreamTimeout          connect, first-token, idle or total limit    504
    │   └── UpstreamServerError      upstream 5xx (and 408)                       502/503
    ├── UpstreamRateLimited          upstream 429                                 429
    ├── UpstreamRejected             upstream 4xx about the request itself        4xx
    │   ├── ContextLengthExceeded                                                 400
    │   ├── ContentPolicyViolation                                                400
    │   └── UnsupportedInput         refused before sending: this target cannot   400
    │                                take it (another one may: the engine fails over)
    ├── UpstreamAuthError            our credentials were refused (401/403)       502
    ├── UpstreamProtocolError        the upstream answered something unparsable   502
    └── StreamBroken                 the stream failed after it had started       (in-band)

``retryable`` means "another attempt (same or next target) may succeed"; a rejected
request would be rejected anywhere, so it is not. ``message`` is what a client sees and
``detail`` what a log keeps: every adapter is wrapped by ``backends.scrub.ScrubbedBackend``,
which removes credentials from both and internal addresses from ``message``.
Must not import ``router`` or ``policies``.
"""

from __future__ import annotations

from typing import TypedDict

__all__ = [
    "BackendError",
    "ContentPolicyViolation",
    "ContextLengthExceeded",
    "StreamBroken",
    "UnsupportedInput",
    "UpstreamAuthError",
    "UpstreamConnectError",
    "UpstreamProtocolError",
    "UpstreamRateLimited",
    "UpstreamRejected",
    "UpstreamServerError",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "error_from_status",
]


class BackendError(Exception):
    status: int = 502
    retryable: bool = False
    error_type: str = "upstream_error"

    def __init__(self, message: str, *, backend: str = "", status: int | None = None,
                 retry_after: float | None = None, code: str | None = None,
                 param: str | None = None) -> None:
        super().__init__(message)
        self.message = message  # what a client may see (``backends.scrub``: no credentials, no addresses)
        self.detail = message  # what a log may keep (no credentials)
        self.backend = backend
        self.retry_after = retry_after
        self.code = code
        self.param = param
        if status is not None:
            self.status = status


class UpstreamUnavailable(BackendError):
    retryable = True


class UpstreamConnectError(UpstreamUnavailable):
    status = 502
    error_type = "upstream_connection_error"


class UpstreamTimeout(UpstreamUnavailable):
    status = 504
    error_type = "upstream_timeout"


class UpstreamServerError(UpstreamUnavailable):
    status = 502
    error_type = "upstream_error"


class UpstreamRateLimited(BackendError):
    status = 429
    retryable = True
    error_type = "rate_limit_error"


class UpstreamRejected(BackendError):
    status = 400
    error_type = "invalid_request_error"


class ContextLengthExceeded(UpstreamRejected):
    pass


class ContentPolicyViolation(UpstreamRejected):
    pass


class UnsupportedInput(UpstreamRejected):
    """The adapter refused the request before sending it (e.g. a URL it would have to fetch,
    ``backends.urls``). Says nothing about the upstream's health; another target may take it."""


class UpstreamAuthError(BackendError):
    status = 502
    retryable = True  # another target has other credentials
    error_type = "upstream_auth_error"


class UpstreamProtocolError(BackendError):
    status = 502
    retryable = True
    error_type = "upstream_protocol_error"


class StreamBroken(BackendError):
    status = 502
    retryable = True
    error_type = "upstream_stream_error"


_CONTEXT_MARKERS = ("context_length_exceeded", "exceed_context_size", "context window", "too long",
                    "maximum context length")
_POLICY_MARKERS = ("content_policy", "content_filter", "safety")


class _Details(TypedDict):
    """What every error of one upstream answer carries, whatever its class."""

    backend: str
    code: str | None
    retry_after: float | None
    param: str | None


def error_from_status(status: int, message: str, *, backend: str, code: str | None = None,
                      retry_after: float | None = None, param: str | None = None) -> BackendError:
    """Classify an upstream HTTP error status (and its code/message) into the tree."""
    kwargs: _Details = {"backend": backend, "code": code, "retry_after": retry_after, "param": param}
    hay = f"{code or ''} {message}".lower()
    if status == 429:
        return UpstreamRateLimited(message, **kwargs)
    if status in (401, 403):
        return UpstreamAuthError(f"{backend} refused the gateway's credentials: {message}", **kwargs)
    if status == 408 or status >= 500:
        return UpstreamServerError(message, status=503 if status in (503, 529) else 502, **kwargs)
    if any(m in hay for m in _CONTEXT_MARKERS):
        return ContextLengthExceeded(message, status=400, **kwargs)
    if any(m in hay for m in _POLICY_MARKERS):
        return ContentPolicyViolation(message, status=400, **kwargs)
    if status == 404:
        # The upstream does not know the model/route we were configured with: our config, not the
        # client's request, so another target may well work.
        return UpstreamServerError(f"{backend} answered 404: {message}", status=502, **kwargs)
    return UpstreamRejected(message, status=status if 400 <= status < 500 else 400, **kwargs)
