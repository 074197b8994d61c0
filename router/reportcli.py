"""``switchyard report``: spend, tokens, savings and top rules for a time window, as a table or
``--json``. Reads the dashboard's counters straight from Redis (``--redis-url`` /
``SWITCHYARD_REDIS_URL``: every replica's traffic), or asks a running gateway
(``--url``, default ``http://127.0.0.1:4000``, with the dashboard or admin key)."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
import orjson

from router.keyscli import parse_duration
from router.state.stats import Stats
from router.state.store import StoreUnavailable

__all__ = ["render", "run_report"]


def run_report(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    try:
        seconds = parse_duration(args.since)
    except ValueError as exc:
        print(f"switchyard: {exc}", file=sys.stderr)
        return 2
    minutes = max(1, round(seconds / 60))
    try:
        data = asyncio.run(_fetch(args, env, minutes))
    except (StoreUnavailable, aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
        print(f"switchyard: cannot read the counters: {exc}", file=sys.stderr)
        return 1
    if args.json:
        sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(render(data, args.since))
    return 0


async def _fetch(args: argparse.Namespace, env: Mapping[str, str], minutes: int) -> dict[str, Any]:
    redis_url = args.redis_url or (None if args.url else env.get("SWITCHYARD_REDIS_URL"))
    if redis_url:
        from router.state.redis_store import RedisStore

        store = RedisStore(redis_url, timeout_s=5.0)
        try:
            stored = await Stats(store).read(minutes)
        finally:
            await store.close()
        stored["source"] = "redis"
        return stored
    url = (args.url or "http://127.0.0.1:4000").rstrip("/")
    key = args.key or env.get("SWITCHYARD_DASHBOARD_KEY") or env.get("SWITCHYARD_ADMIN_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        async with session.get(f"{url}/dashboard/data", params={"minutes": str(minutes)}, headers=headers) as r:
            body = await r.read()
            if r.status != 200:
                raise ValueError(f"{url} answered {r.status}: {body[:300].decode(errors='replace')}")
    data: dict[str, Any] = orjson.loads(body)
    return data


def _usd(value: float | None) -> str:
    return "-" if value is None else f"${value:,.6f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _table(title: str, head: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    if not rows:
        return f"{title}\n  (none)\n\n"
    widths = [max(len(str(c)) for c in col) for col in zip(head, *rows, strict=True)]
    line = "  " + "  ".join((f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}") for i, w in enumerate(widths))
    out = [title, line.format(*head), "  " + "  ".join("-" * w for w in widths)]
    out += [line.format(*row) for row in rows]
    return "\n".join(out) + "\n\n"


def render(data: Mapping[str, Any], since: str) -> str:
    """The report as plain-text tables."""
    t = data["totals"]
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(data["generated_at"]))
    out = [f"Switchyard report: last {since} (to {when}; counters from {data.get('source', '?')})\n\n"]
    out.append(_table("Totals", ("", "value"), [
        ("spend", _usd(t["spend_usd"])), ("savings vs the reference closed model", _usd(t["savings_usd"])),
        ("requests", str(t["requests"])), ("input tokens", str(t.get("input_tokens", 0))),
        ("output tokens", str(t.get("output_tokens", 0))), ("self-hosted share", _pct(t["self_hosted_share"])),
        ("cache hit rate", _pct(t["cache_hit_rate"])),
        ("fallbacks / spillovers / recoveries", f"{t['fallbacks']} / {t['spillovers']} / {t['recoveries']}"),
        ("errors / denied", f"{t['errors']} / {t['denied']}"),
        ("latency p50 / p99 (ms)", f"{t['latency_p50_ms']} / {t['latency_p99_ms']}")]))
    teams = sorted(data["teams"].items(), key=lambda kv: -kv[1]["spend_usd"])
    out.append(_table("By team", ("team", "spend", "input tok", "output tok", "budget left"), [
        (team, _usd(v["spend_usd"]), str(v.get("input_tokens", 0)), str(v.get("output_tokens", 0)),
         _usd(v.get("budget_remaining_usd"))) for team, v in teams]))
    for key, title in (("spend_by_model", "By model alias"), ("spend_by_provider", "By provider")):
        rows = sorted(((name, sum(values)) for name, values in data["series"][key].items()), key=lambda r: -r[1])
        out.append(_table(title, ("name", "spend"), [(name, _usd(v)) for name, v in rows]))
    out.append(_table("Top rules", ("rule", "requests", "spend"), [
        (r["rule"], str(r["requests"]), _usd(r["spend_usd"])) for r in data["top_rules"]]))
    out.append(_economics(data.get("economics")))
    return "".join(out)


def _economics(eco: Mapping[str, Any] | None) -> str:
    """The cost views and each GPU's utilisation and break-even (only a gateway knows the prices)."""
    if not eco:
        return "GPU economics\n  (ask a running gateway, --url: it knows the policy's prices)\n\n"
    views = _table("Cost views", ("", "value"), [
        ("billed (GPUs at their amortised per-token price)", _usd(eco.get("spend_usd"))),
        ("marginal (GPU tokens at ~0: their hours are paid anyway)", _usd(eco.get("marginal_usd"))),
        ("owned (closed spend + GPU hours, busy or idle)", _usd(eco.get("owned_usd"))),
        ("the same traffic all-closed (reference model)", _usd(eco.get("all_closed_usd")))])
    gpus = _table("GPU economics", ("backend", "$/hour", "tokens served", "utilisation", "amortised $/M tok",
                                    "break-even utilisation"), [
        (g["backend"], _usd(g["gpu_hour_usd"]), str(g["served_tokens"]), _pct(g["utilisation"]),
         _usd(g["amortised_usd_per_mtok"]),
         ", ".join(f"{m} {_pct(u)}{' (never)' if u > 1 else ''}" for m, u in sorted(g["break_even"].items())) or "-")
        for g in eco.get("gpus", [])])
    return views + gpus
