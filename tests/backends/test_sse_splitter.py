"""Unit tests for ``backends.sse`` (no network): SSE framing must not depend on where the
transport happens to cut the byte stream."""

from __future__ import annotations

import itertools

import orjson
import pytest

from backends.sse import DONE, SSESplitter, data_event, error_event

EVENTS = [
    b'data: {"id":"c1","choices":[{"delta":{"content":"Hel"}}]}\n\n',
    b": keep-alive\n\n",
    b'event: message\ndata: {"id":"c1","choices":[{"delta":{"content":"lo"}}]}\n\n',
    b'data: {"id":"c1","choices":[{"delta":{},"finish_reason":"stop"}]}\n\n',
    DONE,
]
STREAM = b"".join(EVENTS)


def feed_all(chunks: list[bytes]) -> tuple[list[bytes], bytes]:
    splitter = SSESplitter()
    out: list[bytes] = []
    for chunk in chunks:
        out.extend(splitter.feed(chunk))
    return out, splitter.pending


def cut(data: bytes, *positions: int) -> list[bytes]:
    bounds = [0, *positions, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def test_one_chunk_gives_every_event() -> None:
    assert feed_all([STREAM]) == (EVENTS, b"")


def test_split_at_every_byte_position() -> None:
    for position in range(len(STREAM) + 1):
        assert feed_all(cut(STREAM, position)) == (EVENTS, b""), position


def test_split_at_every_pair_of_positions() -> None:
    for i in range(len(STREAM) + 1):
        for j in range(i, len(STREAM) + 1):
            assert feed_all(cut(STREAM, i, j)) == (EVENTS, b""), (i, j)


def test_one_byte_at_a_time() -> None:
    assert feed_all([STREAM[i:i + 1] for i in range(len(STREAM))]) == (EVENTS, b"")


def test_partial_event_is_pending_until_its_blank_line() -> None:
    splitter = SSESplitter()
    assert splitter.feed(b'data: {"a":') == []
    assert splitter.pending == b'data: {"a":'
    assert splitter.feed(b"1}\n") == []
    assert splitter.feed(b"\n") == [b'data: {"a":1}\n\n']
    assert splitter.pending == b""


def test_multiple_events_in_one_chunk_keep_order_and_the_tail() -> None:
    splitter = SSESplitter()
    assert splitter.feed(b"data: 1\n\ndata: 2\n\ndata: 3\n\ndata: 4") == [
        b"data: 1\n\n", b"data: 2\n\n", b"data: 3\n\n"]
    assert splitter.pending == b"data: 4"


# -- CRLF ----------------------------------------------------------------------------------

CRLF_STREAM = STREAM.replace(b"\n", b"\r\n")


def test_crlf_split_at_every_position_is_normalised_to_lf() -> None:
    for position in range(len(CRLF_STREAM) + 1):
        assert feed_all(cut(CRLF_STREAM, position)) == (EVENTS, b""), position


def test_crlf_split_at_every_pair_of_positions() -> None:
    for i in range(len(CRLF_STREAM) + 1):
        for j in range(i, len(CRLF_STREAM) + 1):
            assert feed_all(cut(CRLF_STREAM, i, j)) == (EVENTS, b""), (i, j)


def test_cr_at_chunk_boundary_is_not_taken_for_a_line_end_of_its_own() -> None:
    splitter = SSESplitter()
    # "\r" then "\n" is ONE line ending; read as two ("\r" -> "\n", then "\n") it would
    # end the event early.
    assert splitter.feed(b"data: a\r") == []
    assert splitter.feed(b"\ndata: b\r\n\r\n") == [b"data: a\ndata: b\n\n"]
    assert splitter.pending == b""


def test_crlf_blank_line_split_between_its_two_line_endings() -> None:
    splitter = SSESplitter()
    assert splitter.feed(b"data: a\r\n\r") == []
    assert splitter.feed(b"\n") == [b"data: a\n\n"]


def test_complete_event_is_not_held_back_by_a_trailing_cr() -> None:
    splitter = SSESplitter()
    assert splitter.feed(b"data: a\r\n\r\ndata: b\r") == [b"data: a\n\n"]


def test_mixed_line_endings() -> None:
    # A lone CR is a line ending too (SSE spec). One at the very end of a chunk cannot be told
    # from the first half of a CRLF, so it must wait; mid-chunk it counts.
    assert feed_all([b"data: a\r\n\ndata: b\n\r\ndata: c\r\rdata: d"]) == (
        [b"data: a\n\n", b"data: b\n\n", b"data: c\n\n"], b"data: d")


# -- blank lines ----------------------------------------------------------------------------

def test_extra_blank_line_pairs_between_events_are_dropped() -> None:
    assert feed_all([b"data: a\n\n\n\n\n\ndata: b\n\n"]) == ([b"data: a\n\n", b"data: b\n\n"], b"")


def test_keepalive_of_only_blank_lines_yields_nothing() -> None:
    assert feed_all([b"\n\n", b"\n\n\n\n", b"\r\n\r\n"]) == ([], b"")


@pytest.mark.parametrize("stream", [
    b"data: a\n\n\ndata: b\n\n",
    b"\ndata: a\n\ndata: b\n\n",
    b"data: a\r\n\r\n\r\ndata: b\r\n\r\n",
])
def test_single_blank_keepalive_line_does_not_leak_into_the_next_event(stream: bytes) -> None:
    assert feed_all([stream]) == ([b"data: a\n\n", b"data: b\n\n"], b"")


# -- builders -------------------------------------------------------------------------------

def test_data_event_is_one_compact_json_event() -> None:
    event = data_event({"a": [1, "x"]})
    assert event == b'data: {"a":[1,"x"]}\n\n'
    assert feed_all([event]) == ([event], b"")


def test_error_event_has_openai_error_shape() -> None:
    event = error_event("upstream went away", "upstream_stream_error", code="cut")
    assert event.startswith(b"data: ") and event.endswith(b"\n\n")
    assert orjson.loads(event[len(b"data: "):]) == {"error": {
        "message": "upstream went away", "type": "upstream_stream_error", "param": None, "code": "cut"}}


def test_done_sentinel() -> None:
    assert DONE == b"data: [DONE]\n\n"
