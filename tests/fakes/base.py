"""Shared HTTP machinery for the fake upstreams.

This module owns what every fake has in common: the server lifecycle (bind
127.0.0.1 on port 0, read the real port, `close()` releases held handlers first),
request recording (`Received`), the fault pre-phase (delay, reset, hang, scripted
error status) as an aiohttp middleware, deterministic ids/word counting, and the SSE
writer that applies stream faults (stall after headers, cut, stall, malformed event,
missing terminator). Provider modules own routes, bodies and error shapes.

A parked handler (hang, stall) ends when its client disconnects (aiohttp handler
cancellation) or when the server closes, so `in_flight` counts requests that still
have a connection, like a real upstream's queue gauge.

Faults, in-flight counting and `received` cover only API paths (those under `/v1/`).
Operational endpoints such as `/health` and `/metrics` always answer normally and are
recorded separately in `probes`, so a gateway's health/metrics scraping never consumes
scripted faults nor disturbs assertions like `fake.received == []`.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Self

import orjson
from aiohttp import web

from tests.fakes.faults import Fault, FaultScript

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Phase = Literal["head", "content", "tail"]

DEFAULT_REPLY = "Hello from the fake upstream."
BODY: web.RequestKey[Any] = web.RequestKey("fake_json_body", object)
BODY_INVALID: web.RequestKey[bool] = web.RequestKey("fake_json_invalid", bool)
FAULT: web.RequestKey[Fault | None] = web.RequestKey("fake_fault", object)
DEFAULT_CREATED = 1_700_000_000
_PIECE_RE = re.compile(r"\s*\S+")


@dataclass(frozen=True)
class Received:
    """One recorded request. Header names are lower-cased; `body` is None unless a JSON object."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None
    method: str = "POST"
    at: float = 0.0  # time.monotonic() when the request arrived (gaps between attempts)


@dataclass(frozen=True)
class SSEEvent:
    """One server-sent event plus where it sits in the stream (for fault placement)."""

    data: str
    event: str | None = None
    phase: Phase = "content"
    terminal: bool = False  # the end-of-stream marker that `Fault.no_done` suppresses

    def encode(self) -> bytes:
        head = f"event: {self.event}\n" if self.event else ""
        return f"{head}data: {self.data}\n\n".encode()


class Rejected(Exception):
    """Raised by handlers to short-circuit with a ready-made (error) response."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


def dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(obj), status=status, content_type="application/json", headers=headers
    )


def split_pieces(text: str) -> list[str]:
    """Split text into word pieces that keep their leading whitespace ("a b" -> ["a", " b"])."""
    return _PIECE_RE.findall(text)


def count_words(value: Any) -> int:
    """Deterministic token stand-in: whitespace words in strings, `text`/`content` fields, lists."""
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(count_words(item) for item in value)
    if isinstance(value, dict):
        return count_words(value.get("text")) + count_words(value.get("content"))
    return 0


def trigger_index(events: Sequence[SSEEvent], after_chunks: int | None) -> int | None:
    """Index of the event before which a stream fault fires: after N content events
    (and never inside the head); if the stream has fewer, right before the tail."""
    if after_chunks is None:
        return None
    seen = 0
    for index, event in enumerate(events):
        if event.phase == "head":
            continue
        if event.phase == "tail" or seen >= after_chunks:
            return index
        seen += 1
    return len(events)


class FakeUpstream:
    """Base class: lifecycle, recording, fault pre-phase and SSE writing."""

    request_id_header: ClassVar[str] = "x-request-id"
    request_id_prefix: ClassVar[str] = "req_fake"

    def __init__(
        self,
        *,
        name: str,
        model_name: str,
        api_key: str | None,
        reply_text: str,
        created: int = DEFAULT_CREATED,
    ) -> None:
        self.name = name
        self.model_name = model_name
        self.api_key = api_key
        self.reply_text = reply_text
        self.created = created
        self.received: list[Received] = []  # API requests (/v1/...), faulted ones included
        self.probes: list[Received] = []  # everything else: /health, /metrics, unknown paths
        self.faults = FaultScript()
        self.in_flight = 0
        self._seq = 0
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._idle: asyncio.Future[None] | None = None

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> Self:
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        app.on_response_prepare.append(self._stamp_headers)
        self.add_routes(app.router)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = self._runner.addresses[0][1]
        return self

    async def close(self) -> None:
        self.faults.release()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"{type(self).__name__} {self.name!r} is not started")
        return self._port

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        raise NotImplementedError

    def calls(self, path: str) -> list[Received]:
        """Recorded requests whose path equals `path` (e.g. "/v1/chat/completions")."""
        return [r for r in self.received if r.path == path]

    async def wait_received(self, count: int = 1) -> list[Received]:
        """Wait (without polling) until `count` API requests have arrived; they are already
        counted in `in_flight` when this returns. Bound it with `asyncio.timeout`."""
        if len(self.received) < count:
            waiter = (count, asyncio.get_running_loop().create_future())
            self._waiters.append(waiter)
            try:
                await waiter[1]
            finally:
                self._waiters.remove(waiter)
        return list(self.received)

    async def wait_idle(self) -> None:
        """Wait (without polling) until no API request is in flight."""
        if self.in_flight:
            if self._idle is None or self._idle.done():
                self._idle = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._idle)

    def _notify_arrival(self) -> None:
        for count, future in self._waiters:
            if len(self.received) >= count and not future.done():
                future.set_result(None)

    def _leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0 and self._idle is not None and not self._idle.done():
            self._idle.set_result(None)

    def next_id(self, prefix: str) -> str:
        """Deterministic per-server id: prefix + zero-padded sequence number."""
        self._seq += 1
        return f"{prefix}{self._seq:06d}"

    # -- provider hooks -----------------------------------------------------------------

    def add_routes(self, router: web.UrlDispatcher) -> None:
        raise NotImplementedError

    def fault_error(self, fault: Fault) -> web.Response:
        """Provider-shaped error reply for a fault with `status`/`error_type`."""
        raise NotImplementedError

    def gate_error(self, request: web.Request) -> web.Response | None:
        """Auth/header/JSON checks run before API handlers; return an error reply or None."""
        return None

    def malformed_event(self, before: SSEEvent) -> SSEEvent:
        """An event whose data is not valid JSON: the next real event cut in half."""
        return SSEEvent(data=before.data[: max(1, len(before.data) // 2)], event=before.event)

    # -- middleware ---------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        entry = await self._record(request)
        if not request.path.startswith("/v1/"):
            self.probes.append(entry)
            return await handler(request)
        self.received.append(entry)
        fault = self.faults.next()
        request[FAULT] = fault
        self.in_flight += 1
        self._notify_arrival()
        try:
            return await self._guarded(request, handler, fault)
        except Rejected as rejected:
            return rejected.response
        finally:
            self._leave()

    async def _guarded(
        self, request: web.Request, handler: Handler, fault: Fault | None
    ) -> web.StreamResponse:
        early = await self._pre_fault(request, fault)
        if early is not None:
            return early
        gate = self.gate_error(request)
        if gate is not None:
            return gate
        return await handler(request)

    async def _record(self, request: web.Request) -> Received:
        raw = await request.read() if request.can_read_body else b""
        body: Any = None
        request[BODY_INVALID] = False
        if raw:
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                request[BODY_INVALID] = True
        if raw and not isinstance(body, dict):
            request[BODY_INVALID] = True
            body = None
        request[BODY] = body
        headers = {k.lower(): v for k, v in request.headers.items()}
        return Received(request.path, headers, body, request.method, time.monotonic())

    async def _pre_fault(self, request: web.Request, fault: Fault | None) -> web.StreamResponse | None:
        if fault is None:
            return None
        if fault.delay_s > 0 and await self.faults.pause(fault.delay_s):
            return self.drop(request)
        if fault.reset:
            return self.drop(request)
        if fault.hang:
            await self.faults.hold()
            return self.drop(request)
        if fault.is_error:
            return self.fault_error(fault)
        return None

    async def _stamp_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        response.headers["x-fake-upstream"] = self.name
        if self.request_id_header not in response.headers:
            response.headers[self.request_id_header] = self.next_id(self.request_id_prefix)
        fault = request.get(FAULT)
        if fault is not None and fault.retry_after is not None and response.status >= 400:
            response.headers["retry-after"] = f"{fault.retry_after:g}"

    # -- wire helpers -------------------------------------------------------------------

    @staticmethod
    def drop(request: web.Request, response: web.StreamResponse | None = None) -> web.StreamResponse:
        """Close the TCP connection now (nothing more is sent, chunked body left unterminated)."""
        if request.transport is not None:
            request.transport.close()
        return response if response is not None else web.Response(status=499)

    async def send_sse(
        self, request: web.Request, events: Sequence[SSEEvent], fault: Fault | None
    ) -> web.StreamResponse:
        """Write `events` as text/event-stream, applying any stream fault."""
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
            }
        )
        await response.prepare(request)
        try:
            await self._write_events(request, response, events, fault or Fault())
        except ConnectionError:
            pass  # the client went away mid-stream; nothing left to do
        return response

    async def _write_events(
        self,
        request: web.Request,
        response: web.StreamResponse,
        events: Sequence[SSEEvent],
        fault: Fault,
    ) -> None:
        if fault.headers_then_stall_s and await self.faults.pause(fault.headers_then_stall_s):
            self.drop(request)
            return
        cut = trigger_index(events, fault.cut_after_chunks)
        stall = trigger_index(events, fault.stall_after_chunks)
        bad = trigger_index(events, fault.malformed_after_chunks)
        for index, event in enumerate([*events, None]):
            if index == bad and event is not None:
                await response.write(self.malformed_event(event).encode())
            if index in (cut, stall):
                if index == stall:
                    await self.faults.hold()
                self.drop(request)
                return
            if event is not None and not (event.terminal and fault.no_done):
                await response.write(event.encode())
        if fault.linger:
            await self.faults.hold()
            self.drop(request)
            return
        await response.write_eof()
