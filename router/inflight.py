"""Requests in flight in one gateway process: the bound that sheds load, and the drain
that keeps the shutdown's word.

**Overload.** ``bound`` is the outermost middleware. A ``/v1/*`` request that arrives while
``settings.max_in_flight`` are already being handled gets an immediate 503 ``overloaded``
with ``Retry-After: 1`` — before its body is read, its key looked up or anything queued —
and is counted in ``switchyard_requests_shed_total{switchyard_reason="overloaded"}``.
Probes, ``/metrics``, the dashboard and ``/admin/*`` are neither counted nor refused: an
overloaded gateway still says how it is.

**Drain** (``drain``, the app's ``on_shutdown``: aiohttp calls it once the listening socket
is closed and idle keep-alive connections are told to close; SIGTERM in ``switchyard
serve``)::

    0 ─ requests in flight finish on their own (new ones on open connections are served)
    drain_s ─ the deadline: router.deadline cuts what still waits on an upstream — a stream
              ends with an SSE error event and [DONE], a request with no answer yet gets
              503 shutting_down — admission and settlement are never interrupted
    + SETTLE_S at most ─ the cut requests settle (their budget, their record)
    then ─ /v1 requests still arriving get 503 shutting_down without touching the store,
           aiohttp closes the connections, and the app's cleanup_ctx closes the store

So the deadline holds (the cut happens at ``drain_s``, nothing waits for aiohttp's own
``shutdown_timeout`` twice over) and every settlement completes before the store closes.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from router.deadline import Deadline
from router.errors import GatewayError, Overloaded, ShuttingDown, error_info, error_json
from router.reload import SERVING
from router.settings import SETTINGS

__all__ = ["IN_FLIGHT", "SETTLE_S", "Drained", "InFlight", "bound", "drain"]

log = logging.getLogger("switchyard")

#: After the deadline's cut: how long the cut requests get to settle (store calls time out
#: in 0.25 s; this is a bound, not a wait).
SETTLE_S = 2.0


@dataclass(frozen=True, slots=True)
class Drained:
    """How a drain went: its length, requests cut at the deadline (they were waiting on an
    upstream), and requests still running after the settle bound (left to aiohttp's backstop;
    0 unless something hangs)."""

    seconds: float
    cut: int
    left: int


class InFlight:
    """The ``/v1/*`` requests this process is handling (their tasks), and its drain deadline."""

    __slots__ = ("tasks", "deadline", "closed")

    def __init__(self, deadline: Deadline | None = None) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()
        self.deadline = deadline or Deadline()
        self.closed = False  # drained: a request arriving now is refused

    async def drain(self, drain_s: float, settle_s: float = SETTLE_S) -> Drained:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await self._wait(started + drain_s)
        cut = self.deadline.pass_now()
        await self._wait(loop.time() + settle_s)
        self.closed = True
        return Drained(loop.time() - started, cut, len(self.tasks))

    async def _wait(self, until: float) -> None:
        """Until no request is in flight (requests may still arrive meanwhile) or ``until``."""
        loop = asyncio.get_running_loop()
        while self.tasks and (left := until - loop.time()) > 0:
            await asyncio.wait(set(self.tasks), timeout=left)


IN_FLIGHT = web.AppKey("in_flight", InFlight)


def _refusal(exc: GatewayError) -> web.Response:
    info = error_info(exc)
    return web.Response(status=info.status, body=error_json(info), content_type="application/json",
                        headers={"Retry-After": str(int(info.retry_after or 1))})


_OVERLOADED = Overloaded("this gateway is at its limit of requests in flight; retry shortly")
_SHUTTING_DOWN = ShuttingDown("this gateway is shutting down; retry the request (another replica will answer)")


@web.middleware
async def bound(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count ``/v1/*`` requests in flight; refuse one over ``settings.max_in_flight`` at once."""
    if not request.path.startswith("/v1/"):
        return await handler(request)
    flights = request.app[IN_FLIGHT]
    gateway = request.app[SERVING].gateway
    if flights.closed:
        gateway.telemetry.shed("shutting_down")
        return _refusal(_SHUTTING_DOWN)
    tasks = flights.tasks
    if len(tasks) >= gateway.runtime.loaded.policy.settings.max_in_flight:
        gateway.telemetry.shed("overloaded")
        return _refusal(_OVERLOADED)
    task = asyncio.current_task()
    assert task is not None
    tasks.add(task)
    try:
        return await handler(request)
    except asyncio.CancelledError:
        if not flights.deadline.absorb():
            raise  # the client went away
        return _refusal(_SHUTTING_DOWN)  # cut at the drain deadline before it had an answer
    finally:
        tasks.discard(task)


async def drain(app: web.Application) -> None:
    """``on_shutdown``: drain the requests in flight (see the module docstring)."""
    flights, drain_s = app[IN_FLIGHT], app[SETTINGS].drain_s
    if flights.tasks:
        log.info("draining %d requests in flight (deadline %g s)", len(flights.tasks), drain_s)
    done = await flights.drain(drain_s)
    if done.cut or done.left:
        log.warning("drain deadline (%g s): %d requests were cut short; %d still running after %g s",
                    drain_s, done.cut, done.left, done.seconds)
    elif done.seconds >= 0.01:
        log.info("drained in %.2f s", done.seconds)
