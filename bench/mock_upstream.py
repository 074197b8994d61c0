"""A fast, fixed-answer OpenAI-compatible upstream for benchmarks.

    python bench/mock_upstream.py --port P [--host 127.0.0.1] [--max-seconds 900]

Raw ``asyncio.Protocol`` HTTP/1.1 with keep-alive, so the mock costs as little CPU
as possible and the numbers measured through it are dominated by the code under test.

- ``POST /v1/chat/completions``: a fixed ~400-byte ``chat.completion`` JSON; with
  ``"stream": true`` a fixed SSE stream (role chunk, 3 content chunks, finish chunk,
  ``data: [DONE]``), sent as HTTP chunked encoding, one write per event, no delays.
- any ``GET`` (e.g. ``/v1/models``, used as a readiness probe): a tiny model list.

It only understands what benchmark clients send: ``Content-Length`` bodies (no
chunked requests). It exits on SIGTERM/SIGINT, or after ``--max-seconds`` so a
benchmark that dies without cleaning up never leaves it running for long.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import orjson

__all__ = ["CHAT_BODY", "SSE_EVENTS", "SSE_BODY", "main"]

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


def _sse_events() -> tuple[bytes, ...]:
    words = ("Hello", " from the", " mock.")
    return (_chunk({"role": "assistant", "content": ""}, None),
            *(_chunk({"content": w}, None) for w in words),
            _chunk({}, "stop"),
            b"data: [DONE]\n\n")


CHAT_BODY: bytes = _chat_body()
SSE_EVENTS: tuple[bytes, ...] = _sse_events()
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
_SSE_CHUNKS: tuple[bytes, ...] = tuple(b"%x\r\n%s\r\n" % (len(e), e) for e in SSE_EVENTS) + (b"0\r\n\r\n",)
_MAX_HEAD = 64 * 1024


def _content_length(head: bytes) -> int | None:
    """``Content-Length`` of a lower-cased request head; ``None`` when chunked (unsupported)."""
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

    def __init__(self) -> None:
        self._buf = bytearray()
        self._transport: asyncio.Transport | None = None

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
        length = _content_length(head)
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
        elif _wants_stream(body):
            transport.write(_SSE_HEAD)
            for chunk in _SSE_CHUNKS:
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


async def serve(host: str, port: int, max_seconds: float) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = await loop.create_server(MockProtocol, host, port, backlog=1024, reuse_address=True)
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
    args = parser.parse_args(argv)
    asyncio.run(serve(args.host, args.port, args.max_seconds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
