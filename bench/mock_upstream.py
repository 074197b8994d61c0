"""A fast, fixed-answer OpenAI-compatible upstream for benchmarks.

    python bench/mock_upstream.py --port P [--host 127.0.0.1] [--max-seconds 900]
                                  [--delay-ms MS] [--slots N] [--chunks N]

Raw ``asyncio.Protocol`` HTTP/1.1 with keep-alive, so the mock costs as little CPU
as possible and the numbers measured through it are dominated by the code under test.

- ``POST /v1/chat/completions``: a fixed ~400-byte ``chat.completion`` JSON; with
  ``"stream": true`` a fixed SSE stream of ``--chunks`` chunk events (default 5: role chunk,
  3 content chunks, finish chunk) and ``data: [DONE]``, sent as HTTP chunked encoding, one
  write per event, no delays. ``sse_events(chunks)`` builds the same events for a client
  that checks what it got.
- any ``GET`` (e.g. ``/v1/models``, used as a readiness probe): a tiny model list.

It only understands what benchmark clients send: ``Content-Length`` bodies (no
chunked requests). It exits on SIGTERM/SIGINT, or after ``--max-seconds`` so a
benchmark that dies without cleaning up never leaves it running for long.

Opt-in behaviours (off by default, so ``overhead.py`` measures the same thing as before):

- ``--delay-ms MS``: every answer is sent MS after its request arrived (a model's answer time);
- ``--slots N``: at most N requests are being answered at once, the others wait in arrival
  order (a GPU server's parallel slots: past them, requests queue at the upstream);
- a request whose body carries ``"user": "mock:error"`` gets a 500 in OpenAI's error shape;
  ``"mock:big"`` a 64 KB answer; ``"mock:slow"`` (streamed) its events 50 ms apart, 40 of
  them (``bench/soak.py`` uses these for upstream errors, large cache entries and clients
  that leave mid-stream).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections import deque
from collections.abc import Callable

import orjson

__all__ = ["CHAT_BODY", "DEFAULT_CHUNKS", "SSE_EVENTS", "SSE_BODY", "main", "sse_body", "sse_events", "content_length"]

_MODEL = "mock-model"
_CREATED = 1_700_000_000
_ID = "chatcmpl-bench0000000000000000000000"


def _chat_body() -> bytes:
    message = {"role": "assistant", "content": "Hello! This is the fixed answer of the Switchyard benchmark "
                                               "mock upstream. It never changes."}
    return orjson.dumps({
        "id": _ID, "object": "chat.completion", "created": _CREATED, "model": _MODEL,
        "system_fingerprint": "fp_bench",
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 24, "completion_tokens": 18, "total_tokens": 42},
    })


def _chunk(delta: dict[str, str], finish: str | None) -> bytes:
    payload = {"id": _ID, "object": "chat.completion.chunk", "created": _CREATED, "model": _MODEL,
               "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
    return b"data: " + orjson.dumps(payload) + b"\n\n"


DEFAULT_CHUNKS = 5  # role, 3 content, finish: the stream every benchmark used before --chunks existed
MIN_CHUNKS = 3      # role, at least one content chunk ("Hello", which translating surfaces are checked for), finish


def sse_events(chunks: int = DEFAULT_CHUNKS) -> tuple[bytes, ...]:
    """The streamed answer's SSE events: ``chunks`` chunk events (role chunk, ``chunks - 2``
    content chunks, finish chunk), then ``data: [DONE]``. The default is the original stream."""
    if chunks < MIN_CHUNKS:
        raise ValueError(f"a stream has at least {MIN_CHUNKS} chunks, not {chunks}")
    content = chunks - 2
    words = ("Hello", *(" from the",) * (content - 2), " mock.") if content >= 2 else ("Hello",)
    return (_chunk({"role": "assistant", "content": ""}, None),
            *(_chunk({"content": w}, None) for w in words),
            _chunk({}, "stop"),
            b"data: [DONE]\n\n")


def sse_body(chunks: int = DEFAULT_CHUNKS) -> bytes:
    """The whole streamed body (all of ``sse_events(chunks)``), as a client reads it."""
    return b"".join(sse_events(chunks))


def _wire(events: tuple[bytes, ...]) -> tuple[bytes, ...]:
    """``events`` as HTTP chunked-encoding frames, then the last-chunk marker."""
    return tuple(b"%x\r\n%s\r\n" % (len(e), e) for e in events) + (b"0\r\n\r\n",)


CHAT_BODY: bytes = _chat_body()
SSE_EVENTS: tuple[bytes, ...] = sse_events()
SSE_BODY: bytes = b"".join(SSE_EVENTS)
_MODELS_BODY = orjson.dumps({"object": "list", "data": [{"id": _MODEL, "object": "model", "created": 0,
                                                         "owned_by": "bench"}]})


def _fixed(status: str, body: bytes) -> bytes:
    head = (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n")
    return head.encode() + body


_JSON_RESPONSE = _fixed("200 OK", CHAT_BODY)
_MODELS_RESPONSE = _fixed("200 OK", _MODELS_BODY)
_BAD_REQUEST = _fixed("400 Bad Request",
                      b'{"error":{"message":"bad request","type":"invalid_request_error"}}')
_SSE_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
             b"Transfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n")
_SSE_CHUNKS: tuple[bytes, ...] = _wire(SSE_EVENTS)
_MAX_HEAD = 64 * 1024
_ERROR_RESPONSE = _fixed("500 Internal Server Error",
                         b'{"error":{"message":"mock upstream error","type":"server_error","param":null,"code":null}}')
_BIG_RESPONSE = _fixed("200 OK", orjson.dumps({
    "id": _ID, "object": "chat.completion", "created": _CREATED, "model": _MODEL,
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "big " * 16384}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 24, "completion_tokens": 16384, "total_tokens": 16408}}))
_SLOW_CHUNKS: tuple[bytes, ...] = _wire((
    _chunk({"role": "assistant", "content": ""}, None), *(_chunk({"content": " tok"}, None) for _ in range(38)),
    _chunk({}, "stop"), b"data: [DONE]\n\n"))
_SLOW_INTERVAL_S = 0.05


class Pace:
    """``--delay-ms`` and ``--slots``: when an answer may be sent. With neither, at once."""

    def __init__(self, delay_s: float = 0.0, slots: int = 0) -> None:
        self.delay_s, self.slots = delay_s, slots
        self.busy = 0
        self._waiting: deque[Callable[[], None]] = deque()

    @property
    def immediate(self) -> bool:
        return self.delay_s <= 0 and self.slots <= 0

    def run(self, answer: Callable[[], None]) -> None:
        """Call ``answer`` once a slot is free and the delay has passed."""
        if self.slots and self.busy >= self.slots:
            self._waiting.append(answer)
            return
        self.busy += 1
        asyncio.get_running_loop().call_later(self.delay_s, self._done, answer)

    def _done(self, answer: Callable[[], None]) -> None:
        try:
            answer()
        finally:
            self.busy -= 1
            if self._waiting:
                self.run(self._waiting.popleft())


def content_length(head: bytes) -> int | None:
    """``Content-Length`` of a lower-cased HTTP head (0 when absent); ``None`` when chunked."""
    if b"\r\ntransfer-encoding:" in head:
        return None
    at = head.find(b"\r\ncontent-length:")
    if at < 0:
        return 0
    end = head.find(b"\r\n", at + 2)
    return int(head[at + 17:end if end >= 0 else len(head)].strip())


def _wants_stream(body: bytes) -> bool:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return isinstance(data, dict) and data.get("stream") is True


class MockProtocol(asyncio.Protocol):
    """One keep-alive connection: parse pipelined requests, answer each with a fixed response."""

    def __init__(self, pace: Pace | None = None, sse_chunks: tuple[bytes, ...] = _SSE_CHUNKS) -> None:
        self._buf = bytearray()
        self._transport: asyncio.Transport | None = None
        self._pace = pace if pace is not None and not pace.immediate else None
        self._sse_chunks = sse_chunks  # the stream's wire frames (``--chunks``)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._buf += data
        for _ in range(1024):  # bounded: at most this many pipelined requests per read
            if not self._answer_one():
                return

    def _answer_one(self) -> bool:
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > _MAX_HEAD:
                self._reply_and_close(_BAD_REQUEST)
            return False
        head = bytes(self._buf[:end]).lower()
        length = content_length(head)
        if length is None:
            self._reply_and_close(_BAD_REQUEST)
            return False
        total = end + 4 + length
        if len(self._buf) < total:
            return False
        body = bytes(self._buf[end + 4:total])
        del self._buf[:total]
        self._reply(head, body)
        return True

    def _reply(self, head: bytes, body: bytes) -> None:
        transport = self._transport
        assert transport is not None
        if head.startswith(b"get "):
            transport.write(_MODELS_RESPONSE)
        elif self._pace is not None:
            self._pace.run(lambda: self._answer(transport, head, body))
            return
        else:
            self._answer(transport, head, body)
            return
        if b"\r\nconnection: close" in head:
            transport.close()

    def _answer(self, transport: asyncio.Transport, head: bytes, body: bytes) -> None:
        if transport.is_closing():
            return  # the client left while its answer was pending
        if b'"mock:' in body and _special(transport, body):
            pass
        elif _wants_stream(body):
            transport.write(_SSE_HEAD)
            for chunk in self._sse_chunks:
                transport.write(chunk)
        else:
            transport.write(_JSON_RESPONSE)
        if b"\r\nconnection: close" in head:
            transport.close()

    def _reply_and_close(self, response: bytes) -> None:
        if self._transport is not None:
            self._transport.write(response)
            self._transport.close()
        self._buf.clear()


def _special(transport: asyncio.Transport, body: bytes) -> bool:
    """The opt-in behaviours a request asks for in its ``user`` field; False: none."""
    if b'"mock:error"' in body:
        transport.write(_ERROR_RESPONSE)
    elif b'"mock:big"' in body:
        transport.write(_BIG_RESPONSE)
    elif b'"mock:slow"' in body and _wants_stream(body):
        transport.write(_SSE_HEAD)
        loop = asyncio.get_running_loop()
        for i, chunk in enumerate(_SLOW_CHUNKS):
            loop.call_later(i * _SLOW_INTERVAL_S, _write_if_open, transport, chunk)
    else:
        return False
    return True


def _write_if_open(transport: asyncio.Transport, data: bytes) -> None:
    if not transport.is_closing():
        transport.write(data)


async def serve(host: str, port: int, max_seconds: float, pace: Pace | None = None,
                chunks: int = DEFAULT_CHUNKS) -> None:
    loop = asyncio.get_running_loop()
    frames = _wire(sse_events(chunks))
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = await loop.create_server(lambda: MockProtocol(pace, frames), host, port, backlog=1024,
                                      reuse_address=True)
    async with server:
        try:
            await asyncio.wait_for(stop.wait(), timeout=max_seconds)
        except TimeoutError:
            pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-seconds", type=float, default=900.0, help="exit after this long (safety)")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="send each answer this long after its request")
    parser.add_argument("--slots", type=int, default=0, help="answer at most this many at once (0: no limit)")
    parser.add_argument("--chunks", type=int, default=DEFAULT_CHUNKS,
                        help=f"chunk events per streamed answer, role and finish included (>= {MIN_CHUNKS})")
    args = parser.parse_args(argv)
    if args.chunks < MIN_CHUNKS:
        parser.error(f"--chunks must be at least {MIN_CHUNKS}")
    asyncio.run(serve(args.host, args.port, args.max_seconds, Pace(args.delay_ms / 1000, args.slots), args.chunks))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
