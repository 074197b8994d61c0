"""The admin API (``/admin/*``, admin key): backends, the active policy and its reload,
virtual keys, spend."""

from __future__ import annotations

import time

import orjson
from aiohttp import web

from backends import ReplicaPool
from router.errors import InvalidRequest
from router.reload import SERVING
from router.state.keys import KeyIdTooShort, create_key, find_key

__all__ = ["admin_backends", "admin_create_key", "admin_policy", "admin_reload", "admin_spend", "list_keys",
           "revoke_key"]


async def admin_backends(request: web.Request) -> web.Response:
    """Each backend's configuration summary, circuit state, load and recent error counts."""
    gateway = request.app[SERVING].gateway
    engine = gateway.engine
    circuits = engine.circuits.snapshot()
    load = gateway.load.describe()
    policy = gateway.runtime.loaded.policy
    body = {name: {"kind": (spec := engine.spec(name)).kind, "self_hosted": spec.is_self_hosted,
                   "supports_prefill": spec.can_prefill, "max_sensitivity": policy.max_level(name),
                   "circuit": circuits[name], "load": load.get(name),
                   **_replicas(engine.runtime.backends[name])}
            for name in engine.runtime.backends}
    return web.Response(body=orjson.dumps({"backends": body, "spilling": sorted(gateway.spilling)}),
                        content_type="application/json")


def _replicas(backend: object) -> dict[str, object]:
    """A pool's replicas: address, in-flight, scraped queue, failures, time out, saturated."""
    return {"replicas": backend.snapshot()} if isinstance(backend, ReplicaPool) else {}


async def admin_policy(request: web.Request) -> web.Response:
    """The active policy: file, sha256, version, load time, reload history."""
    return web.Response(body=orjson.dumps(request.app[SERVING].status()), content_type="application/json")


async def admin_reload(request: web.Request) -> web.Response:
    status = await request.app[SERVING].reload("admin")
    return web.Response(status=200 if status["ok"] else 422, body=orjson.dumps(status),
                        content_type="application/json")


async def admin_create_key(request: web.Request) -> web.Response:
    """``POST /admin/keys {"team", "name"?, "expires_in_s"?}`` → the new key, shown once."""
    try:
        data = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise InvalidRequest("body must be JSON: {\"team\": …}") from None
    team = data.get("team") if isinstance(data, dict) else None
    gateway = request.app[SERVING].gateway
    if not isinstance(team, str) or team not in gateway.runtime.loaded.policy.teams:
        known = ", ".join(gateway.runtime.loaded.policy.teams) or "none"
        raise InvalidRequest(f"'team' must be a team of the policy (teams: {known})", param="team")
    expires_in, budget = data.get("expires_in_s"), data.get("budget_monthly_usd")
    for name, value in (("expires_in_s", expires_in), ("budget_monthly_usd", budget)):
        if value is not None and (not isinstance(value, int | float) or isinstance(value, bool) or value <= 0):
            raise InvalidRequest(f"'{name}' must be a positive number", param=name)
    expires_at = time.time() + expires_in if expires_in else None
    key, record = await create_key(request.app[SERVING].store, team, str(data.get("name") or ""), expires_at,
                                   float(budget) if budget else None)
    gateway.keys.forget(record.key_hash)  # in case it was tried (and remembered as unknown) before
    gateway.auth_required = True
    body = {"key": key, "id": record.key_hash[:12], "team": team, "name": record.name,
            "expires_at": record.expires_at, "budget_monthly_usd": record.budget_monthly_usd}
    return web.Response(status=201, body=orjson.dumps(body), content_type="application/json")


async def list_keys(request: web.Request) -> web.Response:
    records = await request.app[SERVING].store.list_keys(request.query.get("team"))
    body = [{"id": r.key_hash[:12], "team": r.team, "name": r.name, "created_at": r.created_at,
             "expires_at": r.expires_at, "revoked": r.revoked} for r in records]
    return web.Response(body=orjson.dumps({"keys": body}), content_type="application/json")


async def revoke_key(request: web.Request) -> web.Response:
    """``DELETE /admin/keys/{id}``: ``id`` is the key's id (12 hex; at least its first 8) or the
    plain key itself."""
    ident = request.match_info["id"]
    store = request.app[SERVING].store
    try:
        record = await find_key(store, ident)
    except KeyIdTooShort as exc:
        raise InvalidRequest(str(exc), param="id") from None
    if record is None:
        raise InvalidRequest(f"no single key matches {ident[:12]!r}", param="id")
    await store.revoke_key(record.key_hash)
    return web.Response(body=orjson.dumps({"id": record.key_hash[:12], "revoked": True}),
                        content_type="application/json")


async def admin_spend(request: web.Request) -> web.Response:
    """``GET /admin/spend?team=T&window=day|month``: spend in the current UTC window."""
    team, window = request.query.get("team"), request.query.get("window", "day")
    gateway = request.app[SERVING].gateway
    if team not in gateway.runtime.loaded.policy.teams:
        raise InvalidRequest(f"unknown team {team!r}", param="team")
    if window not in ("day", "month"):
        raise InvalidRequest("window must be day or month", param="window")
    spent, limit = await gateway.budgets.spent(team, window)
    body = {"team": team, "window": window, "spent_usd": round(spent, 9), "limit_usd": limit,
            "remaining_usd": None if limit is None else round(max(0.0, limit - spent), 9)}
    return web.Response(body=orjson.dumps(body), content_type="application/json")
