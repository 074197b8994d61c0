"""Native answers (Messages, Responses passed through): usage in chat terms, and the tracker
that watches a native stream go by without changing it."""

from __future__ import annotations

import orjson

from router.native import NativeTracker, native_usage


def event(name: str, payload: dict) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps({"type": name, **payload}) + b"\n\n"


def test_messages_usage_counts_cache_reads_and_writes_as_input() -> None:
    usage = native_usage("messages", {"input_tokens": 10, "output_tokens": 4, "cache_read_input_tokens": 30,
                                      "cache_creation_input_tokens": 5})
    assert usage == {"prompt_tokens": 45, "completion_tokens": 4, "prompt_tokens_details": {"cached_tokens": 30},
                     "cache_creation_input_tokens": 5, "total_tokens": 49}
    assert native_usage("messages", None) is None


def test_responses_usage_keeps_cached_input() -> None:
    usage = native_usage("responses", {"input_tokens": 12, "output_tokens": 3,
                                       "input_tokens_details": {"cached_tokens": 8}})
    assert usage == {"prompt_tokens": 12, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": 8},
                     "total_tokens": 15}


def test_a_messages_stream_is_complete_at_message_stop_with_merged_usage() -> None:
    tracker = NativeTracker("messages")
    tracker.feed(event("message_start", {"message": {"usage": {"input_tokens": 20, "output_tokens": 1}}}))
    tracker.feed(event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "Hello there"}}))
    assert not tracker.complete and tracker.produced_tokens == 3  # 11 characters
    tracker.feed(event("message_delta", {"delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 6}}))
    tracker.feed(event("message_stop", {}))
    assert tracker.complete
    assert tracker.usage is not None and (tracker.usage["prompt_tokens"], tracker.usage["completion_tokens"]) == (20, 6)


def test_a_responses_stream_is_complete_at_its_final_event() -> None:
    for final in ("response.completed", "response.incomplete"):
        tracker = NativeTracker("responses")
        tracker.feed(event("response.output_text.delta", {"delta": "abcd"}))
        assert tracker.produced_tokens == 1 and not tracker.complete and tracker.usage is None
        tracker.feed(event(final, {"response": {"usage": {"input_tokens": 5, "output_tokens": 2}}}))
        assert tracker.complete and tracker.usage is not None and tracker.usage["total_tokens"] == 7


def test_what_is_not_json_is_ignored() -> None:
    tracker = NativeTracker("messages")
    tracker.feed(b": keep-alive\n\n")
    tracker.feed(b"event: ping\ndata: {not json\n\n")
    assert not tracker.complete and tracker.usage is None and tracker.produced_tokens == 0
