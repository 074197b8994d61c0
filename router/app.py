"""The aiohttp application factory, the lifecycle of what it owns, and serving it.

Every resource (the pooled upstream ``ClientSession``, the serving gateway with its
backends and load monitor, the policy reloader) opens and closes in one
``cleanup_ctx`` generator. ``run_app`` serves until SIGTERM/SIGINT, then shuts down in
this order: stop accepting, drain the requests in flight up to ``Settings.drain_s``
(``router.inflight``, the app's ``on_shutdown``), close the connections, then close what
the app owns — the store last of all, after every settlement.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
from aiohttp import web
from aiohttp.web_log import AccessLogger

from policies import LoadedPolicy
from router.dashboard import routes as dashboard_routes
from router.gateway import open_gateway
from router.inflight import IN_FLIGHT, InFlight, bound, drain
from router.middlewares import authenticate, errors_and_ids, log_access_mode, observe, stamp_headers
from router.openapi import RENDERED, Rendered
from router.reload import SERVING, Serving
from router.routes import routes
from router.settings import SETTINGS, Settings
from router.state.stats import Stats
from router.state.store import Store, StoreUnavailable
from router.telemetry import Telemetry

__all__ = ["TELEMETRY", "create_app", "open_store", "run_app"]
log = logging.getLogger("switchyard")
TELEMETRY = web.AppKey("telemetry", Telemetry)


def create_app(settings: Settings, loaded: LoadedPolicy, policy_path: Path | None = None,
               telemetry: Telemetry | None = None) -> web.Application:
    """``policy_path``: the file to reload on SIGHUP / change (``None``: no reloads).
    ``telemetry``: given by tests (an in-memory span exporter); else built from ``settings``."""
    max_body = int(loaded.policy.settings.max_body_mb * 1024 * 1024)
    app = web.Application(client_max_size=max_body, middlewares=[bound, errors_and_ids, observe, authenticate])
    app[SETTINGS] = settings
    app[IN_FLIGHT] = InFlight()
    app[RENDERED] = Rendered()
    app.on_shutdown.append(drain)  # before the cleanup_ctx below closes the store
    if telemetry is not None:
        app[TELEMETRY] = telemetry
    app.cleanup_ctx.append(_serving_ctx(loaded, policy_path))
    app.on_response_prepare.append(stamp_headers)
    app.add_routes(routes() + dashboard_routes())
    return app


def _serving_ctx(loaded: LoadedPolicy, path: Path | None
                 ) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        connector = aiohttp.TCPConnector(limit=settings.upstream_connections, ttl_dns_cache=300,
                                         keepalive_timeout=30)
        session = aiohttp.ClientSession(connector=connector, raise_for_status=False)
        store = open_store(settings)
        try:
            await store.warm()
        except StoreUnavailable as exc:
            log.warning("shared store not ready at start (%s): serving degraded until it answers", exc)
        telemetry = app.get(TELEMETRY) or Telemetry(enabled=settings.telemetry)
        stats = Stats(store)
        try:
            gateway = await open_gateway(loaded, session, store, telemetry=telemetry, stats=stats,
                                         deadline=app[IN_FLIGHT].deadline)
            serving = Serving(gateway, path, session, store)
            app[SERVING] = serving
            _announce(loaded)
            log_access_mode(settings, gateway.auth_required)
            serving.start(watch=path is not None and loaded.policy.settings.watch)
            stats.start()
            yield
            await serving.stop()
        finally:
            await stats.stop()
            await session.close()
            await store.close()
            telemetry.shutdown()

    return ctx


#: aiohttp's own wait for handlers, once the drain is over (it waits up to twice this): a
#: backstop for a handler that outlives its cut, not part of the drain.
_BACKSTOP_S = 0.5
#: a young-generation collection after this many net container allocations (CPython: 700)
_GC_THRESHOLDS = (7000, 10, 10)
#: how long a thread holding the GIL keeps it while another waits (CPython: 5 ms)
_GIL_SWITCH_S = 0.001


def run_app(app: web.Application, settings: Settings, *, sock: socket.socket | None = None, reuse_port: bool = False,
            access_log: logging.Logger | None = None,
            access_log_format: str = AccessLogger.LOG_FORMAT) -> None:
    """Serve ``app`` on ``sock`` (or ``settings.host:port``) until SIGTERM or SIGINT, then shut
    down within ``settings.drain_s`` plus the settle bound (``router.inflight``), on the event
    loop ``settings.loop`` names."""
    with asyncio.Runner(loop_factory=loop_factory(settings.loop)) as runner:
        runner.run(_serve(app, settings, sock, reuse_port, access_log, access_log_format))


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """``uvloop.new_event_loop`` for ``uvloop`` (when it is installed: it is a locked dependency,
    but has no Windows build), else ``None``: asyncio's default loop."""
    if name != "uvloop":
        return None
    try:
        import uvloop
    except ImportError:
        log.warning("uvloop is not installed; serving on asyncio's event loop")
        return None
    return uvloop.new_event_loop


async def _serve(app: web.Application, settings: Settings, sock: socket.socket | None, reuse_port: bool,
                 access_log: logging.Logger | None, access_log_format: str) -> None:
    runner = web.AppRunner(app, handler_cancellation=True, access_log=access_log, access_log_format=access_log_format,
                           keepalive_timeout=75, shutdown_timeout=_BACKSTOP_S)
    await runner.setup()
    try:
        site = (web.SockSite(runner, sock) if sock is not None
                else web.TCPSite(runner, settings.host, settings.port, reuse_port=reuse_port or None))
        await site.start()
        _tune_interpreter()
        log.info("serving on the %s event loop", _loop_name())
        signum = await _signalled(signal.SIGTERM, signal.SIGINT)
        log.info("%s: stopped accepting; draining (deadline %g s)", signal.Signals(signum).name, settings.drain_s)
    finally:
        await runner.cleanup()  # closes the listener, drains (on_shutdown), then the cleanup_ctx


def _tune_interpreter() -> None:
    """Once serving. The collector: what start-up built (modules, the policy, the app) lives as
    long as the process, so it is moved out of the collector's sight (``gc.freeze``) and a full
    collection no longer walks it (4-10 % of the instructions per request before: bench/README.md);
    fewer, larger young collections also catch fewer requests in flight. The GIL: a large body
    is scanned in a worker thread while the loop serves everything else (``router.gateway``),
    and the loop waits up to the switch interval for the GIL each time it wakes. At CPython's
    5 ms, /healthz p99 during a 9 MB scan was 57-82 ms on uvloop (under 50 ms on asyncio's
    loop); at 1 ms, 14-18 ms (tests/e2e/test_scan_off_loop.py allows 50 ms). The interval only
    matters while another thread runs Python: the loop is alone the rest of the time."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*_GC_THRESHOLDS)
    sys.setswitchinterval(_GIL_SWITCH_S)


def _loop_name() -> str:
    return "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else "asyncio"


async def _signalled(*signals: signal.Signals) -> int:
    """Wait for the first of ``signals``; later ones change nothing (the drain has its deadline)."""
    loop = asyncio.get_running_loop()
    got: asyncio.Future[int] = loop.create_future()

    def arrived(signum: int) -> None:
        if not got.done():
            got.set_result(signum)

    for sig in signals:
        loop.add_signal_handler(sig, arrived, sig)
    return await got


def open_store(settings: Settings) -> Store:
    """Redis when a URL is configured (shared by every replica), else in-memory (one process)."""
    if settings.redis_url:
        from router.state.redis_store import RedisStore  # the Redis client only when configured

        return RedisStore(settings.redis_url)
    from router.state.memory_store import MemoryStore

    return MemoryStore()


def _announce(loaded: LoadedPolicy) -> None:
    policy = loaded.policy
    log.info("policy %s: %d backends, models: %s, rules: %s", loaded.source, len(policy.backends),
             ", ".join(policy.models), ", ".join(r.name for r in loaded.rules) or "none")
    for warning in loaded.warnings:
        log.warning("%s", warning)
