"""What the gateway shows about itself: ``GET /metrics`` (Prometheus text), the built-in
dashboard (``GET /dashboard``, its assets, and ``GET /dashboard/data``).

Access is checked by the ``authenticate`` middleware by each route's level
(``router.routes.ACCESS``): ``/metrics`` and ``/dashboard/data`` need the admin key or the
read-only dashboard key (``SWITCHYARD_DASHBOARD_KEY``), open only while no key of any kind
is configured; the page and its assets hold no data and are public (the page asks for the key).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from backends import ReplicaPool
from policies import cost, gpu_economics
from router.errors import InvalidRequest, StatsStoreUnavailable, TelemetryOff
from router.gateway import Gateway
from router.reload import SERVING
from router.state.store import Store, StoreUnavailable

__all__ = ["routes"]

ASSETS = Path(__file__).resolve().parent / "static" / "dashboard"
_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html"}
_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache",
            "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"}
_MAX_MINUTES = 90 * 1440
#: replica states (``backends_now``) in which a replica gets requests
_TAKES_REQUESTS = frozenset({"ok", "saturated"})


async def refresh_gauges(gateway: Gateway, store: Store) -> None:
    """Point-in-time gauges, read when scraped: backend load and circuits, budget left per
    team and window, and whether the shared store answers."""
    telemetry = gateway.telemetry
    for backend in backends_now(gateway):  # the same view the dashboard's "Backends now" table shows
        name = backend["name"]
        telemetry.backend_state(name, backend["queue"], backend["in_flight"], backend["circuit"])
        for replica in backend.get("replicas", ()):
            telemetry.replica_state(name, replica["address"], replica["in_flight"], replica["queue"],
                                    replica["state"] in _TAKES_REQUESTS)
    try:
        async with asyncio.timeout(1.0):
            await store.ping()
            for (team, window), usd in (await gateway.budgets.left()).items():
                telemetry.budget_remaining(team, window, usd)
        telemetry.store_degraded("store", False)
    except (StoreUnavailable, TimeoutError):
        telemetry.store_degraded("store", True)
    telemetry.store_degraded("rate_limits", gateway.limits.degraded_since is not None)


async def metrics(request: web.Request) -> web.Response:
    gateway = request.app[SERVING].gateway
    if not gateway.telemetry.enabled:
        raise TelemetryOff("metrics are off on this gateway (SWITCHYARD_TELEMETRY=off)")
    await refresh_gauges(gateway, request.app[SERVING].store)
    return web.Response(body=gateway.telemetry.metrics_text(),
                        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


async def page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(ASSETS / "index.html", headers={**_HEADERS, "Content-Type": "text/html; charset=utf-8"})


async def asset(request: web.Request) -> web.FileResponse:
    name = request.match_info["name"]
    path = ASSETS / name
    if name not in ("app.js", "app.css") or not path.is_file():
        raise web.HTTPNotFound()
    return web.FileResponse(path, headers={**_HEADERS, "Content-Type": f"{_TYPES[path.suffix]}; charset=utf-8"})


async def data(request: web.Request) -> web.Response:
    """``?minutes=60``: the counters of every replica (Redis) or this process (memory)."""
    try:
        minutes = int(request.query.get("minutes", "60"))
    except ValueError:
        raise InvalidRequest("minutes must be an integer", param="minutes") from None
    if not 1 <= minutes <= _MAX_MINUTES:
        raise InvalidRequest(f"minutes must be between 1 and {_MAX_MINUTES}", param="minutes")
    body = await dashboard_json(request.app[SERVING].gateway, request.app[SERVING].store.kind, minutes)
    return web.Response(body=orjson.dumps(body), content_type="application/json")


async def dashboard_json(gateway: Gateway, source: str, minutes: int) -> dict[str, Any]:
    await gateway.stats.flush()  # this process's own counts are exact
    try:
        body = await gateway.stats.read(minutes)
    except StoreUnavailable as exc:
        raise StatsStoreUnavailable(f"the dashboard counters cannot be read now ({exc})") from None
    body["source"] = source
    teams: dict[str, Any] = body["teams"]
    try:
        left = await gateway.budgets.left()
    except StoreUnavailable:
        left = {}
    for team in gateway.runtime.loaded.policy.teams:
        entry = teams.setdefault(team, {"spend_usd": 0.0, "input_tokens": 0, "output_tokens": 0,
                                        "budget_remaining_usd": None})
        usd = left.get((team, "day"), left.get((team, "month")))  # the day's budget when there is one
        entry["budget_remaining_usd"] = None if usd is None else round(usd, 9)
    body["backends"] = backends_now(gateway)
    body["economics"] = economics(gateway, body)
    return body


def economics(gateway: Gateway, body: dict[str, Any]) -> dict[str, Any]:
    """The cost views for finance over the window: what was spent (closed providers at their
    prices, self-hosted at the amortised per-token price), what the GPUs cost by the hour
    whether busy or idle, what the same traffic would have cost all-closed, and each GPU's
    utilisation and break-even utilisation against each closed model (``policies.pricing``)."""
    policy, prices = gateway.runtime.loaded.policy, gateway.runtime.planner.prices
    served = {b: (int(v["input"]), int(v["output"])) for b, v in body.get("served_tokens", {}).items()}
    seconds = float(body["minutes"]) * 60
    reference = policy.telemetry.reference_backend
    gpus = gpu_economics(policy, prices, served, seconds, reference)
    totals = body["totals"]
    spend, savings = float(totals["spend_usd"]), float(totals["savings_usd"])
    self_hosted_spend = sum(cost(prices[g.backend], *served.get(g.backend, (0, 0))) for g in gpus)
    return {
        "spend_usd": round(spend, 9),  # as billed: closed at their prices, GPUs per token (amortised)
        "marginal_usd": round(spend - self_hosted_spend, 9),  # the GPUs' tokens at ~0: they are paid anyway
        "owned_usd": round(spend - self_hosted_spend + sum(g.amortised_usd for g in gpus), 9),  # + GPU hours
        "all_closed_usd": round(spend + savings, 9) if gateway.reference_price is not None else None,
        "gpus": [{"backend": g.backend, "gpu_hour_usd": g.gpu_hour_usd, "tokens_per_s": g.tokens_per_s,
                  "served_tokens": g.served_tokens, "utilisation": round(g.utilisation, 6),
                  "amortised_usd": round(g.amortised_usd, 9),
                  "amortised_usd_per_mtok": None if g.amortised_usd_per_mtok is None
                  else round(g.amortised_usd_per_mtok, 6),
                  "break_even": {n: round(u, 6) for n, u in g.break_even.items()}} for g in gpus],
    }


def _address(url: str) -> str:
    """host:port of a replica's URL (what the metrics label it with; no path, no credentials)."""
    return url.split("://", 1)[-1].split("/", 1)[0].rsplit("@", 1)[-1]


def backends_now(gateway: Gateway) -> list[dict[str, Any]]:
    """Each backend as it is now: circuit, in flight, scraped queue and, for a pool, each replica
    (address, in flight, queue, whether it takes requests and why not)."""
    load, circuits = gateway.load.snapshot(), gateway.engine.circuits.snapshot()
    out: list[dict[str, Any]] = []
    for name, backend in gateway.runtime.backends.items():
        sample = load.get(name)
        entry: dict[str, Any] = {
            "name": name, "self_hosted": gateway.engine.spec(name).is_self_hosted,
            "circuit": str(circuits.get(name, {}).get("state", "closed")),
            "in_flight": sample.in_flight if sample else 0, "queue": sample.queue if sample else None}
        if isinstance(backend, ReplicaPool):
            entry["replicas"] = [
                {"address": _address(str(r["url"])), "in_flight": r["in_flight"], "queue": r["queue"],
                 "state": "draining" if r["draining"] else "out" if r["out_for_s"] else
                 "saturated" if r["saturated"] else "ok"}
                for r in backend.snapshot()]
        out.append(entry)
    return out


def routes() -> list[web.RouteDef]:
    return [
        web.get("/metrics", metrics),
        web.get("/dashboard", page),
        web.get("/dashboard/", page),
        web.get("/dashboard/assets/{name}", asset),
        web.get("/dashboard/data", data),
    ]
