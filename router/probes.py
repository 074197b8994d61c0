"""Probes: liveness (``/healthz``) and readiness (``/readyz``: a policy is loaded and some
alias has a reachable target; the shared store's health).

Both are public, so ``/readyz`` tells anyone only ``ready`` (200) or ``not ready`` (503);
the details (each alias and backend, the reload and store state — backend addresses and
store errors among them) only to a caller with the admin key."""

from __future__ import annotations

import orjson
from aiohttp import web

from router.middlewares import is_admin
from router.reload import SERVING
from router.state.store import StoreUnavailable

__all__ = ["healthz", "readyz", "root"]


async def root(request: web.Request) -> web.Response:
    """``GET``/``HEAD /``: what this is and where its API document is (agents probe their base URL)."""
    return web.json_response({"service": "switchyard", "openapi": "/openapi.json"})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready when the policy is loaded and at least one alias has a reachable target."""
    runtime = request.app[SERVING].gateway.runtime
    health = await runtime.probe()
    aliases = {}
    for alias, spec in runtime.loaded.policy.models.items():
        targets = [t for t in spec.targets if t in health]
        aliases[alias] = {"ready": any(health[t].ok for t in targets),
                          "targets": {t: health[t].ok for t in targets}}
    ready = any(a["ready"] for a in aliases.values())
    body: dict[str, object] = {"status": "ready" if ready else "not ready"}
    if is_admin(request):
        body |= {"policy": runtime.loaded.source, "models": aliases,
                 "backends": {n: {"ok": h.ok, "detail": h.detail} for n, h in health.items()},
                 "reload": request.app[SERVING].status(), "store": await _store_status(request)}
    return web.Response(status=200 if ready else 503, body=orjson.dumps(body),
                        content_type="application/json")


async def _store_status(request: web.Request) -> dict[str, object]:
    """The shared store's health; while it is down, rate limits are counted per process."""
    serving = request.app[SERVING]
    try:
        await serving.store.ping()
        ok, error = True, None
    except StoreUnavailable as exc:
        ok, error = False, str(exc)
    degraded = serving.gateway.limits.degraded_since
    return {"kind": serving.store.kind, "ok": ok, "error": error,
            "rate_limits": "per-process" if (degraded is not None or not ok) else "shared",
            "auth": "keys" if serving.gateway.auth_required else "open"}
