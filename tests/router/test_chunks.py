"""ChunkTracker: pure unit tests of stream tracking and continuation stitching."""

from __future__ import annotations

import orjson
import pytest

from backends.sse import DONE
from router.chunks import ChunkTracker, Recovery


def ev(content: str | None = None, *, role: bool = False, finish: str | None = None, id_: str = "c1",
       usage: dict | None = None, index: int = 0) -> bytes:
    delta: dict = {}
    if role:
        delta["role"] = "assistant"
    if content is not None:
        delta["content"] = content
    chunk: dict = {"id": id_, "object": "chat.completion.chunk", "model": "m",
                   "choices": [] if usage else [{"index": index, "delta": delta, "finish_reason": finish}]}
    if usage:
        chunk["usage"] = usage
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def text_of(out: list[bytes | None]) -> str:
    parts = []
    for e in out:
        if e and e.startswith(b"data: {"):
            for choice in orjson.loads(e[6:]).get("choices", []):
                parts.append(choice.get("delta", {}).get("content") or "")
    return "".join(parts)


def run(tracker: ChunkTracker, events: list[bytes]) -> list[bytes | None]:
    return [tracker.feed(e) for e in events]


def test_tracks_text_finish_usage_and_completion():
    t = ChunkTracker(want_usage=True, expect_usage=True)
    out = run(t, [ev(role=True), ev("Hel"), ev("lo"), ev(finish="stop")])
    assert t.partial() == "Hello" and not t.complete  # usage still expected
    run(t, [ev(usage={"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5})])
    assert t.complete and t.usage["completion_tokens"] == 2
    assert out[1] == ev("Hel")  # events pass through byte for byte
    assert t.feed(DONE) == DONE and t.done


def test_complete_without_usage_when_not_asked():
    t = ChunkTracker()
    run(t, [ev("a"), ev(finish="length")])
    assert t.complete


def test_n_choices_complete_only_when_all_finished():
    t = ChunkTracker(n=2)
    run(t, [ev("a", index=0), ev(finish="stop", index=0)])
    assert not t.complete
    run(t, [ev(finish="stop", index=1)])
    assert t.complete
    assert t.why_not_continuable() == "n > 1 cannot be continued"


@pytest.mark.parametrize("bad", [b"data: {not json\n\n", b"data: [1, 2]\n\n", b'data: "x"\n\n'])
def test_malformed_events_are_dropped_and_counted(bad):
    t = ChunkTracker()
    assert t.feed(bad) is None and t.malformed == 1


def test_comments_pass_through():
    assert ChunkTracker().feed(b": keep-alive\n\n") == b": keep-alive\n\n"


def _stitch(partial_pieces: list[str], continuation: list[bytes], want_usage: bool = True) -> tuple[str, ChunkTracker]:
    t = ChunkTracker(want_usage=want_usage, expect_usage=want_usage)
    first = run(t, [ev(role=True), *[ev(p) for p in partial_pieces]])
    t.continue_with(Recovery("a", "b", "cut"))
    rest = run(t, continuation)
    return text_of(first) + text_of(rest), t


def test_continuation_without_echo():
    text, t = _stitch(["Hello", " wor"], [ev(role=True, id_="c2"), ev("ld"), ev(finish="stop", id_="c2")])
    assert text == "Hello world"


def test_continuation_that_echoes_the_prefill_in_one_piece():
    text, _ = _stitch(["Hello", " wor"], [ev("Hello world"), ev("!"), ev(finish="stop")])
    assert text == "Hello world!"


def test_continuation_that_echoes_the_prefill_in_several_pieces():
    text, _ = _stitch(["Hello", " wor"], [ev("Hel"), ev("lo w"), ev("or"), ev("ld"), ev(finish="stop")])
    assert text == "Hello world"


def test_trailing_whitespace_left_off_the_prefill_is_not_sent_twice():
    _, t = _stitch(["Hello", " "], [])
    assert t.prefill() == "Hello"
    text, _ = _stitch(["Hello", " "], [ev(" world"), ev(finish="stop")])
    assert text == "Hello world"
    text, _ = _stitch(["Hello", " "], [ev("Hello"), ev(" world"), ev(finish="stop")])  # echo, then the space
    assert text == "Hello world"
    text, _ = _stitch(["Hello", " "], [ev("world"), ev(finish="stop")])  # no space: keep as is
    assert text == "Hello world"


def test_stitched_chunks_keep_the_first_id_and_sum_usage():
    t = ChunkTracker(want_usage=True, expect_usage=True)
    run(t, [ev(role=True, id_="first"), ev("a", id_="first"), ev("b", id_="first")])
    t.continue_with(Recovery("a", "b", "cut"))
    out = run(t, [ev("c", id_="second"), ev(finish="stop", id_="second"),
                  ev(usage={"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10}, id_="second")])
    chunks = [orjson.loads(e[6:]) for e in out if e]
    assert {c["id"] for c in chunks} == {"first"}
    assert chunks[-1]["usage"] == {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}
    assert chunks[-1]["switchyard"] == {"recovered": [{"broken": "a", "continued_by": "b", "reason": "cut"}]}
    assert t.complete


def test_continuation_usage_is_hidden_when_the_client_did_not_ask():
    t = ChunkTracker()
    run(t, [ev("a")])
    t.continue_with(Recovery("a", "b", "cut"))
    assert t.feed(ev(usage={"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2})) is None


def test_partial_tool_calls_cannot_be_continued():
    t = ChunkTracker()
    chunk = {"id": "x", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"name": "f"}}]}}]}
    t.feed(b"data: " + orjson.dumps(chunk) + b"\n\n")
    assert t.why_not_continuable() == "a partial tool call cannot be continued"


# -- what was produced, for billing without usage (issue 11) ------------------------------------------
def test_produced_tokens_count_deltas_or_characters_whichever_is_more():
    t = ChunkTracker()
    run(t, [ev("", role=True), ev("Hi"), ev(" there")])
    assert (t.produced_events, t.produced_chars, t.produced_tokens) == (2, 8, 2)
    run(t, [ev(" " + "x" * 39)])  # one delta of many tokens (as some providers send them)
    assert (t.produced_events, t.produced_chars, t.produced_tokens) == (3, 48, 12)


def test_produced_tokens_count_tool_call_deltas():
    def tool(arguments: str) -> bytes:
        call = {"index": 0, "function": {"name": "lookup", "arguments": arguments}}
        chunk = {"id": "c1", "object": "chat.completion.chunk", "model": "m",
                 "choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}]}
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    t = ChunkTracker()
    run(t, [tool('{"q": '), tool('"weather in Paris"}')])
    assert t.content_events == 0 and t.produced_events == 2
    assert t.produced_chars == len('{"q": ') + len('"weather in Paris"}') + 2 * len("lookup")


def test_produced_tokens_span_a_continuation():
    t = ChunkTracker()
    run(t, [ev("", role=True), ev("Hello"), ev(" wor")])
    t.continue_with(Recovery("a", "b", "broke"))
    run(t, [ev("Hello wor", id_="c2"), ev("ld", id_="c2"), ev(finish="stop", id_="c2")])
    assert t.content_events == 1  # this part's
    assert (t.produced_events, t.produced_chars) == (3, len("Hello world"))
