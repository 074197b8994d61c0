"""The aiohttp application factory and the lifecycle of what it owns.

Every resource (the pooled upstream ``ClientSession``, the backends) opens and
closes in one ``cleanup_ctx`` generator.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from policies import LoadedPolicy
from router.engine import Engine
from router.handlers import GATEWAY, Gateway, routes
from router.health import Circuits
from router.middlewares import errors_and_ids, stamp_headers
from router.runtime import build_runtime
from router.settings import Settings

__all__ = ["SETTINGS", "create_app"]

SETTINGS = web.AppKey("settings", Settings)
log = logging.getLogger("switchyard")


def create_app(settings: Settings, loaded: LoadedPolicy) -> web.Application:
    max_body = int(loaded.policy.settings.max_body_mb * 1024 * 1024)
    app = web.Application(client_max_size=max_body, middlewares=[errors_and_ids])
    app[SETTINGS] = settings
    app.cleanup_ctx.append(_gateway_ctx(loaded))
    app.on_response_prepare.append(stamp_headers)
    app.add_routes(routes())
    return app


def _gateway_ctx(loaded: LoadedPolicy):  # noqa: ANN202 - aiohttp cleanup_ctx factory
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        connector = aiohttp.TCPConnector(limit=settings.upstream_connections, ttl_dns_cache=300,
                                         keepalive_timeout=30)
        session = aiohttp.ClientSession(connector=connector, raise_for_status=False)
        try:
            runtime = build_runtime(loaded, session)
            circuits = Circuits({name: loaded.policy.backends[name].circuit for name in runtime.backends})
            app[GATEWAY] = Gateway(runtime, Engine(runtime, circuits))
            _announce(loaded)
            yield
            await runtime.close()
        finally:
            await session.close()

    return ctx


def _announce(loaded: LoadedPolicy) -> None:
    policy = loaded.policy
    log.info("policy %s: %d backends, models: %s", loaded.source, len(policy.backends),
             ", ".join(policy.models))
    for warning in loaded.warnings:
        log.warning("%s", warning)
