"""``Lane``: one pipelined Redis connection for the request path's commands (the admission and
settlement scripts of ``RedisStore``, cache reads), without the client library's per-command
machinery.

Why: through ``redis.asyncio`` one script call costs about 3× the CPU of the round trip itself
(a pooled connection taken and given back, the command packed in Python, a timeout context per
write and per read, the reply parsed through a reader stream, retry and event hooks). Here a
call is: the command packed by hiredis (C), one ``transport.write``, a future appended to a
FIFO; replies are parsed by hiredis in ``data_received`` and resolve the futures in order —
Redis answers the commands of one connection in the order it received them, so concurrent
requests share the connection (pipelining) instead of taking one each.

What it keeps from the client library: opening a connection (address, TLS, AUTH, SELECT, client
name — the handshake) is ``RedisStore``'s opener (``redis.asyncio``'s own connection class);
this module only takes the connected transport over. It imports no Redis client.

Failure semantics (``RedisStore`` turns each into ``StoreUnavailable``, as for its other calls):

- each call has a deadline (``timeout_s`` after it started, connecting included); past it the
  call fails with ``TimeoutError``, and the connection is retired, as the client library
  disconnects a connection that timed out: new calls open a new one, while the calls already
  waiting on the old one keep their own deadlines; it is closed once none is left waiting.
- the connection lost under a call (Redis restarted or closed it): ``ConnectionError``, and the
  call is sent once more, at once, on a new connection (the client library's policy: one
  immediate retry on a connection error, none on a timeout). An idle connection that Redis
  closes is noticed when it closes (the transport always reads), so the next call reconnects.
- an error reply: ``hiredis.ReplyError`` (``NOSCRIPT`` included: the caller resends with EVAL).
- concurrent calls on a lane without a connection share one connect.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import hiredis

__all__ = ["Lane", "Opener"]

_TIMER_SLACK_S = 0.001  # a timer may fire this much before its time (uvloop's clock counts whole ms)

#: opens a connection and hands it over (the lane owns it from then on): its stream writer, kept
#: for its transport (a writer that is garbage-collected closes its transport)
Opener = Callable[[], Awaitable[asyncio.StreamWriter]]


class _Wire(asyncio.Protocol):
    """One connection once taken over: a FIFO of (future, deadline), replies parsed by hiredis.
    Deadlines are kept by one timer per connection, armed for the earliest (not one per call)."""

    def __init__(self, writer: asyncio.StreamWriter, loop: asyncio.AbstractEventLoop,
                 timed_out: Callable[[_Wire], None]) -> None:
        self._writer = writer  # kept alive: see ``Opener``
        self.transport: Any = writer.transport
        self.loop = loop
        self._timed_out = timed_out  # called after calls on this connection timed out
        self._reader = hiredis.Reader()
        self._pending: deque[tuple[asyncio.Future[Any], float]] = deque()
        self._watch: asyncio.TimerHandle | None = None
        self._watch_at = math.inf
        self.lost: BaseException | None = None  # set once the connection is gone
        self.retired = False

    def send(self, packed: bytes, deadline: float) -> asyncio.Future[Any]:
        """Send one command; its future fails with ``TimeoutError`` at ``deadline`` (loop time)."""
        future = self.loop.create_future()
        self.transport.write(packed)
        self._pending.append((future, deadline))
        if deadline < self._watch_at:
            self._arm(deadline)
        return future

    def _arm(self, when: float) -> None:
        if self._watch is not None:
            self._watch.cancel()
        self._watch_at, self._watch = when, self.loop.call_at(when, self._check)

    def _check(self) -> None:
        """Fail the calls past their deadline; re-arm for the earliest of the others."""
        self._watch, self._watch_at = None, math.inf
        now = self.loop.time() + _TIMER_SLACK_S
        expired, earliest = False, math.inf
        for future, deadline in self._pending:
            if future.done():
                continue
            if deadline <= now:
                future.set_exception(TimeoutError())
                expired = True
            elif deadline < earliest:
                earliest = deadline
        if earliest < math.inf:
            self._arm(earliest)
        if expired:
            self._timed_out(self)

    def data_received(self, data: bytes) -> None:
        reader, pending = self._reader, self._pending
        reader.feed(data)
        try:
            while (reply := reader.gets()) is not False:
                if not pending:
                    raise hiredis.ProtocolError("a reply no call is waiting for")
                future = pending.popleft()[0]
                if not future.done():  # done: its caller timed out or was cancelled
                    future.set_result(reply)
        except hiredis.ProtocolError as exc:
            self.close(ConnectionError(f"protocol error: {exc}"))

    def eof_received(self) -> bool:
        return False  # close the transport: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self._drop(ConnectionError("Connection closed by server." if exc is None else f"Connection lost: {exc}"))

    def close(self, exc: BaseException) -> None:
        """Close the connection; the calls still waiting on it fail with ``exc``."""
        self._drop(exc)
        try:
            self.transport.close()
        except RuntimeError:  # its event loop is closed (a store reused on a new loop)
            pass

    def retire(self) -> None:
        """Take no new calls; close once every call waiting on it has its reply or gave up."""
        self.retired = True
        waiting = [f for f, _ in self._pending if not f.done()]
        if not waiting:
            self.close(ConnectionError("connection retired"))
        for future in waiting:
            future.add_done_callback(self._drained)

    def _drained(self, _: asyncio.Future[Any]) -> None:
        if self.lost is None and all(f.done() for f, _ in self._pending):
            self.close(ConnectionError("connection retired"))

    def _drop(self, exc: BaseException) -> None:
        if self.lost is None:
            self.lost = exc
        if self._watch is not None:
            self._watch.cancel()
            self._watch, self._watch_at = None, math.inf
        pending, self._pending = self._pending, deque()
        for future, _ in pending:
            if not future.done():
                future.set_exception(self.lost)


class Lane:
    """One connection, opened on first use and after it is lost or retired; ``call`` sends
    one packed command and returns its reply (see the module doc for the failure semantics)."""

    def __init__(self, opener: Opener, timeout_s: float) -> None:
        self._opener = opener
        self._timeout_s = timeout_s
        self._wire: _Wire | None = None
        self._retired: set[_Wire] = set()  # closed when drained; tracked to close them with the lane
        self._connecting: asyncio.Task[_Wire] | None = None
        self._closed = False

    def deadline(self) -> float:
        """``timeout_s`` from now, on the running loop's clock (for calls that share one)."""
        return asyncio.get_running_loop().time() + self._timeout_s

    async def call(self, packed: bytes, deadline: float | None = None) -> Any:
        """The reply to ``packed`` (one RESP command), by ``deadline`` (default: ``timeout_s``
        from now); raises ``TimeoutError``, ``ConnectionError`` or ``hiredis.ReplyError``."""
        loop = asyncio.get_running_loop()
        if deadline is None:
            deadline = loop.time() + self._timeout_s
        try:
            return await self._once(packed, loop, deadline)
        except ConnectionError:
            return await self._once(packed, loop, deadline)  # one immediate retry

    async def _once(self, packed: bytes, loop: asyncio.AbstractEventLoop, deadline: float) -> Any:
        wire = self._wire
        if wire is None or wire.lost is not None or wire.retired or wire.loop is not loop:
            wire = await self._connect(loop, deadline)
        reply = await wire.send(packed, deadline)
        if isinstance(reply, hiredis.ReplyError):
            raise reply
        return reply

    def _timed_out(self, wire: _Wire) -> None:
        """Calls on ``wire`` passed their deadline without a reply: it is retired (if it still
        is the lane's connection)."""
        if wire is self._wire:
            self._wire = None
            self._retire(wire)

    def _retire(self, wire: _Wire) -> None:
        if wire.lost is None:
            self._retired.add(wire)
            wire.retire()
        self._retired = {w for w in self._retired if w.lost is None}

    async def _connect(self, loop: asyncio.AbstractEventLoop, deadline: float) -> _Wire:
        """The connection, opened by this call or by a concurrent one (one connect at a time)."""
        if self._closed:
            raise ConnectionError("the store is closed")
        connecting = self._connecting
        if connecting is None or connecting.done() or connecting.get_loop() is not loop:
            connecting = self._connecting = loop.create_task(self._open(loop))
        try:
            async with asyncio.timeout_at(deadline):
                return await asyncio.shield(connecting)
        finally:
            if connecting.done() and self._connecting is connecting:
                self._connecting = None

    async def _open(self, loop: asyncio.AbstractEventLoop) -> _Wire:
        old, self._wire = self._wire, None
        if old is not None:
            self._retire(old)
        writer = await asyncio.wait_for(self._opener(), self._timeout_s)
        if self._closed or writer.transport.is_closing():
            writer.close()
            raise ConnectionError("the connection closed while it was opened")
        wire = _Wire(writer, loop, self._timed_out)
        writer.transport.set_protocol(wire)
        self._wire = wire
        return wire

    async def close(self) -> None:
        """Close the connections; calls after this fail with ``ConnectionError``."""
        self._closed = True
        connecting, self._connecting = self._connecting, None
        if connecting is not None:
            connecting.cancel()  # an open that completes anyway sees _closed and closes its transport
        wires = [w for w in (self._wire, *self._retired) if w is not None]
        self._wire, self._retired = None, set()
        for wire in wires:
            wire.close(ConnectionError("the store is closed"))
