"""The dashboard's counters: what every request did, summed per minute and per hour in the
store (Redis when configured, so every replica shows the same numbers), and read back as the
JSON the built-in dashboard and ``switchyard report`` show.

Recording is cheap and off the request path: each request adds to this process's pending
sums (a dict); a background task flushes them every ``flush_s`` (1 s) in one pipeline. A
replica's last second may be missing from a read on another replica; ``flush()`` before
reading makes this process's own counts exact.

Fields of a bucket (all floats): ``n`` requests; ``o:<outcome>``; ``sh`` requests answered by a
self-hosted backend; ``c`` cost; ``c:t:<team>``, ``c:m:<alias>``, ``c:p:<provider>``; ``s``
savings; ``ti``/``to`` input/output tokens (also ``ti:t:<team>``, ``to:t:<team>``);
``r:<rule>`` requests and ``rc:<rule>`` cost per rule; ``l:<i>`` / ``f:<i>`` latency / TTFT
histogram buckets (``i``: see ``_bucket``). Names come from the policy (teams, aliases, rules,
backends), never from callers, so a bucket's size is bounded by the policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import defaultdict
from typing import Any

from router.record import RequestRecord
from router.state.store import StatsStore, StoreUnavailable

__all__ = ["Stats"]

log = logging.getLogger("switchyard.stats")
MINUTE, HOUR = 60, 3600
_TTL = {MINUTE: 2 * 86400, HOUR: 90 * 86400}
_BASE_MS, _GROWTH = 0.5, 1.2  # histogram bucket i covers (0.5·1.2^(i-1), 0.5·1.2^i] ms
_EVENTS = ("fallback", "spillover", "recovery", "error", "denied")


def _bucket(ms: float) -> int:
    return 0 if ms <= _BASE_MS else math.ceil(math.log(ms / _BASE_MS, _GROWTH))


def _name(size: int, start: int) -> str:
    """A bucket's hash in the store: ``m:<epoch>`` (a minute) or ``h:<epoch>`` (an hour)."""
    return f"{'m' if size == MINUTE else 'h'}:{start}"


def _upper_ms(i: int) -> float:
    return _BASE_MS * _GROWTH ** i


class Stats:
    def __init__(self, store: StatsStore, flush_s: float = 1.0) -> None:
        self._store = store
        self._flush_s = flush_s
        self._pending: dict[tuple[int, int], defaultdict[str, float]] = {}
        self._task: asyncio.Task[None] | None = None

    def record(self, r: RequestRecord, now: float | None = None) -> None:
        now = time.time() if now is None else now
        for size in (MINUTE, HOUR):
            key = (size, int(now // size) * size)
            fields = self._pending.get(key)
            if fields is None:
                fields = self._pending[key] = defaultdict(float)
            _add(fields, r)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.flush()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._flush_s)
            await self.flush()

    async def flush(self) -> None:
        """Write the pending sums; on a store error they are kept and retried next time
        (buckets older than their retention are dropped)."""
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        entries = [(_name(size, start), dict(fields), _TTL[size])
                   for (size, start), fields in pending.items()]
        try:
            await self._store.add_stats(entries)
        except StoreUnavailable as exc:
            log.warning("dashboard counters not flushed (kept for the next try): %s", exc)
            horizon = time.time() - _TTL[MINUTE]
            for key, fields in pending.items():
                if key[1] >= horizon:
                    merged = self._pending.setdefault(key, defaultdict(float))
                    for name, amount in fields.items():
                        merged[name] += amount

    async def read(self, minutes: int, now: float | None = None) -> dict[str, Any]:
        """The dashboard's JSON for the last ``minutes`` (per-minute buckets up to a day,
        per-hour beyond)."""
        now = time.time() if now is None else now
        size = MINUTE if minutes <= 1440 else HOUR
        count = max(1, math.ceil(minutes * 60 / size))
        last = int(now // size) * size
        starts = [last - size * i for i in range(count - 1, -1, -1)]
        buckets = await self._store.read_stats([_name(size, t) for t in starts])
        return summarise(starts, size, buckets, now, minutes)


def _add(f: defaultdict[str, float], r: RequestRecord) -> None:
    f["n"] += 1
    f[f"o:{r.outcome}"] += 1
    if r.backend is not None and r.self_hosted and r.error_type is None:
        f["sh"] += 1
    team, alias = r.team or "-", r.alias or "-"
    cost = r.cost_usd or 0.0
    f[f"c:t:{team}"] += cost  # a team, alias or provider with $0 still shows up
    if r.backend is not None:
        f["c"] += cost
        f[f"c:m:{alias}"] += cost
        f[f"c:p:{r.provider or '-'}"] += cost
        if r.rule:
            f[f"rc:{r.rule}"] += cost
    if r.savings_usd:
        f["s"] += r.savings_usd
    if r.backend is not None and r.cache != "hit":  # what each backend served (GPU utilisation)
        f[f"bi:{r.backend}"] += r.input_tokens or 0
        f[f"bo:{r.backend}"] += r.output_tokens or 0
    if r.input_tokens:
        f["ti"] += r.input_tokens
        f[f"ti:t:{team}"] += r.input_tokens
    if r.output_tokens:
        f["to"] += r.output_tokens
        f[f"to:t:{team}"] += r.output_tokens
    if r.rule:
        f[f"r:{r.rule}"] += 1
    if r.hedged:
        f["hg"] += 1
        f["hgw"] += r.hedge_won
    if r.error_type is None:
        f[f"l:{_bucket(r.duration_s * 1000)}"] += 1
        if r.ttft_s is not None:
            f[f"f:{_bucket(r.ttft_s * 1000)}"] += 1


def _percentile(counts: dict[int, float], q: float) -> float | None:
    total = sum(counts.values())
    if total <= 0:
        return None
    rank, seen = q * total, 0.0
    for i in sorted(counts):
        seen += counts[i]
        if seen >= rank:
            return round(_upper_ms(i), 3)
    return round(_upper_ms(max(counts)), 3)


def _hist(bucket: dict[str, float], prefix: str) -> dict[int, float]:
    return {int(k[len(prefix):]): v for k, v in bucket.items() if k.startswith(prefix)}


def _merge(into: dict[int, float], more: dict[int, float]) -> None:
    for i, v in more.items():
        into[i] = into.get(i, 0.0) + v


def summarise(starts: list[int], size: int, buckets: list[dict[str, float]], now: float,
              minutes: int) -> dict[str, Any]:
    """Buckets → the dashboard JSON (see docs/observability.md for the shape)."""
    def series(prefix: str) -> dict[str, list[float]]:
        names = sorted({k[len(prefix):] for b in buckets for k in b if k.startswith(prefix)})
        return {name: [round(b.get(prefix + name, 0.0), 9) for b in buckets] for name in names}

    def column(field: str) -> list[float]:
        return [b.get(field, 0.0) for b in buckets]

    lat_all: dict[int, float] = {}
    ttft_all: dict[int, float] = {}
    lat_p50, lat_p99, ttft_p50, ttft_p99 = [], [], [], []
    for b in buckets:
        lat, ttft = _hist(b, "l:"), _hist(b, "f:")
        _merge(lat_all, lat)
        _merge(ttft_all, ttft)
        lat_p50.append(_percentile(lat, 0.5))
        lat_p99.append(_percentile(lat, 0.99))
        ttft_p50.append(_percentile(ttft, 0.5))
        ttft_p99.append(_percentile(ttft, 0.99))
    requests = column("n")
    total = sum(requests)
    events = {e: column(f"o:{e}") for e in _EVENTS}
    spend_by_team = series("c:t:")
    rules = series("r:")
    rule_cost = series("rc:")
    ranked = sorted(rules.items(), key=lambda item: (-sum(item[1]), item[0]))[:10]
    top = [{"rule": name, "requests": int(sum(v)), "spend_usd": round(sum(rule_cost.get(name, [0.0])), 9)}
           for name, v in ranked]
    tokens_in, tokens_out = series("ti:t:"), series("to:t:")
    served_in, served_out = series("bi:"), series("bo:")
    hits = column("o:cache_hit")
    return {
        "generated_at": now, "minutes": minutes, "bucket_s": size, "t": starts,
        "series": {
            "spend_by_team": spend_by_team, "spend_by_model": series("c:m:"), "spend_by_provider": series("c:p:"),
            "savings_usd": [round(v, 9) for v in column("s")], "requests": requests,
            "self_hosted_requests": column("sh"), "cache_hits": hits,
            "fallbacks": events["fallback"], "spillovers": events["spillover"], "recoveries": events["recovery"],
            "errors": events["error"], "denied": events["denied"], "hedges": column("hg"),
            "latency_p50_ms": lat_p50, "latency_p99_ms": lat_p99, "ttft_p50_ms": ttft_p50, "ttft_p99_ms": ttft_p99,
        },
        "totals": {
            "spend_usd": round(sum(column("c")), 9), "savings_usd": round(sum(column("s")), 9),
            "requests": int(total), "self_hosted_share": (sum(column("sh")) / total) if total else None,
            "cache_hit_rate": (sum(hits) / total) if total else None,
            "fallbacks": int(sum(events["fallback"])), "spillovers": int(sum(events["spillover"])),
            "recoveries": int(sum(events["recovery"])), "errors": int(sum(events["error"])),
            "denied": int(sum(events["denied"])), "hedges": int(sum(column("hg"))),
            "hedges_won": int(sum(column("hgw"))),
            "input_tokens": int(sum(column("ti"))), "output_tokens": int(sum(column("to"))),
            "latency_p50_ms": _percentile(lat_all, 0.5), "latency_p99_ms": _percentile(lat_all, 0.99),
            "ttft_p50_ms": _percentile(ttft_all, 0.5), "ttft_p99_ms": _percentile(ttft_all, 0.99),
        },
        "top_rules": top,
        "served_tokens": {b: {"input": int(sum(v)), "output": int(sum(served_out.get(b, [0.0])))}
                          for b, v in served_in.items()},
        "teams": {team: {"spend_usd": round(sum(v), 9), "input_tokens": int(sum(tokens_in.get(team, [0.0]))),
                         "output_tokens": int(sum(tokens_out.get(team, [0.0]))), "budget_remaining_usd": None}
                  for team, v in spend_by_team.items()},
    }
