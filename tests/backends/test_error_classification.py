"""Unit tests for ``backends.errors.error_from_status`` (the classification table) and
``backends.litellm_backend.translate`` for exceptions the fakes cannot easily provoke."""

from __future__ import annotations

import pytest

from backends.errors import (
    BackendError,
    ContentPolicyViolation,
    ContextLengthExceeded,
    UpstreamAuthError,
    UpstreamConnectError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamServerError,
    UpstreamTimeout,
    UpstreamUnavailable,
    error_from_status,
)

# status, message, code -> class, client-facing status, retryable
TABLE = [
    (429, "slow down", None, UpstreamRateLimited, 429, True),
    (429, "This model's maximum context length is 10", None, UpstreamRateLimited, 429, True),
    (401, "Incorrect API key provided", "invalid_api_key", UpstreamAuthError, 502, True),
    (403, "Forbidden.", None, UpstreamAuthError, 502, True),
    (408, "request timeout", None, UpstreamServerError, 502, True),
    (500, "boom", None, UpstreamServerError, 502, True),
    (502, "bad gateway", None, UpstreamServerError, 502, True),
    (503, "overloaded", None, UpstreamServerError, 503, True),
    (504, "gateway timeout", None, UpstreamServerError, 502, True),
    (529, "Overloaded", None, UpstreamServerError, 503, True),
    (500, "maximum context length exceeded", None, UpstreamServerError, 502, True),  # 5xx first
    (400, "x", "context_length_exceeded", ContextLengthExceeded, 400, False),
    (400, "This model's maximum context length is 8192 tokens.", None, ContextLengthExceeded, 400, False),
    (400, "the request exceeds the available context size (exceed_context_size_error)", None,
     ContextLengthExceeded, 400, False),  # llama.cpp
    (400, "prompt is too long: 210000 tokens > 200000 maximum", None, ContextLengthExceeded, 400, False),
    (413, "input exceeds the context window", None, ContextLengthExceeded, 400, False),
    (400, "x", "content_policy_violation", ContentPolicyViolation, 400, False),
    (400, "Your request was rejected as a result of our safety system.", None, ContentPolicyViolation,
     400, False),
    (400, "output blocked by content_filter", None, ContentPolicyViolation, 400, False),
    (404, "The model does not exist", "model_not_found", UpstreamServerError, 502, True),
    (400, "Invalid request.", None, UpstreamRejected, 400, False),
    (422, "unprocessable", None, UpstreamRejected, 422, False),
    (409, "conflict", None, UpstreamRejected, 409, False),
]


@pytest.mark.parametrize(("status", "message", "code", "cls", "client_status", "retryable"), TABLE,
                         ids=[f"{row[0]}-{row[3].__name__}-{i}" for i, row in enumerate(TABLE)])
def test_error_from_status_table(status: int, message: str, code: str | None, cls: type,
                                 client_status: int, retryable: bool) -> None:
    exc = error_from_status(status, message, backend="b1", code=code, retry_after=2.5, param="messages")
    assert type(exc) is cls
    assert exc.status == client_status
    assert exc.retryable is retryable
    assert exc.backend == "b1"
    assert exc.retry_after == 2.5 and exc.code == code and exc.param == "messages"
    assert message in exc.message


def test_unavailable_branch_of_the_tree() -> None:
    for status in (408, 500, 503):
        assert isinstance(error_from_status(status, "m", backend="b"), UpstreamUnavailable)
    assert not isinstance(error_from_status(429, "m", backend="b"), UpstreamUnavailable)


def test_rejected_status_is_always_a_4xx() -> None:
    # Whatever odd status reaches the fall-through branch, the client gets a 4xx.
    assert error_from_status(302, "redirect?", backend="b").status == 400
    assert error_from_status(451, "legal", backend="b").status == 451


def test_auth_message_names_the_backend() -> None:
    exc = error_from_status(401, "bad key", backend="claude-main")
    assert "claude-main" in exc.message and "bad key" in exc.message


# -- litellm translate() -------------------------------------------------------------------

def test_translate_litellm_exceptions() -> None:
    import litellm

    from backends.litellm_backend import translate

    timeout = translate(litellm.Timeout("read timed out", model="m", llm_provider="openai"), "c")
    assert isinstance(timeout, UpstreamTimeout) and timeout.backend == "c"
    conn = translate(litellm.APIConnectionError("refused", llm_provider="openai", model="m"), "c")
    assert isinstance(conn, UpstreamConnectError)
    ctx = translate(litellm.ContextWindowExceededError("too many tokens", model="m",
                                                       llm_provider="anthropic"), "c")
    assert isinstance(ctx, ContextLengthExceeded) and ctx.code == "context_length_exceeded"
    assert not ctx.retryable


def test_translate_unknown_exception_is_a_backend_error() -> None:
    from backends.litellm_backend import translate

    exc = translate(RuntimeError("weird"), "c")
    assert isinstance(exc, BackendError) and exc.retryable
    assert "weird" in exc.message
