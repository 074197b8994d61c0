"""Unit tests for the fault script, stream fault placement and error-shape mapping."""

from __future__ import annotations

from tests.fakes import anthropic_upstream, openai_upstream
from tests.fakes.base import SSEEvent, count_words, split_pieces, trigger_index
from tests.fakes.faults import Fault, FaultScript
from tests.fakes.sse_client import parse_sse


def test_fifo_then_always_then_normal():
    script = FaultScript()
    first, second, background = Fault(status=500), Fault(reset=True), Fault(hang=True)
    script.push(first, second).always(background)
    assert [script.next(), script.next(), script.next()] == [first, second, background]
    script.always(None)
    assert script.next() is None and script.pending == 0


async def test_release_wakes_holders_and_pauses():
    script = FaultScript()
    assert await script.pause(0.01) is False
    script.release()
    await script.hold()  # returns immediately once released
    assert script.released and await script.pause(5) is True


def test_trigger_index_places_faults_after_n_content_events():
    events = [
        SSEEvent("h", phase="head"),
        SSEEvent("c1"),
        SSEEvent("c2"),
        SSEEvent("t", phase="tail"),
        SSEEvent("[DONE]", phase="tail", terminal=True),
    ]
    assert trigger_index(events, None) is None
    assert trigger_index(events, 0) == 1
    assert trigger_index(events, 2) == 3
    assert trigger_index(events, 99) == 3  # clamps to the start of the tail


def test_pieces_words_and_sse_parsing():
    assert split_pieces("Hello  big\nworld") == ["Hello", "  big", "\nworld"]
    assert count_words([{"role": "user", "content": [{"type": "text", "text": "a b"}]}, "c"]) == 3
    parsed = parse_sse("event: ping\ndata: {}\n\ndata: a\ndata: b\n\ndata: partial")
    assert [(r.event, r.data) for r in parsed] == [("ping", "{}"), (None, "a\nb")]


def test_openai_error_mapping():
    status, body = openai_upstream.fault_to_error(Fault(status=429))
    assert status == 429
    assert body == {
        "error": {
            "message": body["error"]["message"],
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }
    status, body = openai_upstream.fault_to_error(Fault(error_type="context_length_exceeded"))
    assert (status, body["error"]["code"], body["error"]["param"]) == (
        400,
        "context_length_exceeded",
        "messages",
    )
    status, body = openai_upstream.fault_to_error(Fault(status=502, error_type="weird", message="m"))
    assert (status, body["error"]) == (
        502,
        {"message": "m", "type": "server_error", "param": None, "code": "weird"},
    )


def test_anthropic_error_mapping():
    assert anthropic_upstream.fault_to_error(Fault(status=529)) == (
        529,
        "overloaded_error",
        "Overloaded",
    )
    assert anthropic_upstream.fault_to_error(Fault(error_type="rate_limit_error"))[:2] == (
        429,
        "rate_limit_error",
    )
    assert anthropic_upstream.fault_to_error(Fault(status=503)) == (
        503,
        "api_error",
        "Internal server error",
    )
    status, type_, message = anthropic_upstream.fault_to_error(Fault(error_type="context_length_exceeded"))
    assert (status, type_) == (400, "invalid_request_error")
    assert message.startswith("prompt is too long: ") and message.endswith(" maximum")
