"""The aiohttp application factory and the lifecycle of what it owns.

Every resource (the pooled upstream ``ClientSession``, the serving gateway with its
backends and load monitor, the policy reloader) opens and closes in one
``cleanup_ctx`` generator.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
from aiohttp import web

from policies import LoadedPolicy
from router.dashboard import routes as dashboard_routes
from router.gateway import open_gateway
from router.middlewares import authenticate, errors_and_ids, observe, stamp_headers
from router.reload import SERVING, Serving
from router.routes import routes
from router.settings import SETTINGS, Settings
from router.state.stats import Stats
from router.state.store import Store, StoreUnavailable
from router.telemetry import Telemetry

__all__ = ["TELEMETRY", "create_app", "open_store"]
log = logging.getLogger("switchyard")
TELEMETRY = web.AppKey("telemetry", Telemetry)


def create_app(settings: Settings, loaded: LoadedPolicy, policy_path: Path | None = None,
               telemetry: Telemetry | None = None) -> web.Application:
    """``policy_path``: the file to reload on SIGHUP / change (``None``: no reloads).
    ``telemetry``: given by tests (an in-memory span exporter); else built from ``settings``."""
    max_body = int(loaded.policy.settings.max_body_mb * 1024 * 1024)
    app = web.Application(client_max_size=max_body, middlewares=[errors_and_ids, observe, authenticate])
    app[SETTINGS] = settings
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
            gateway = await open_gateway(loaded, session, store, telemetry=telemetry, stats=stats)
            serving = Serving(gateway, path, session, store)
            app[SERVING] = serving
            _announce(loaded)
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
