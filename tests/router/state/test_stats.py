"""The dashboard's counters (``Stats``) on both stores: what a request adds, the JSON read back
(series, totals, percentiles, top rules), replicas summing on one Redis, a store outage that
loses nothing, and ``switchyard report`` over them."""

from __future__ import annotations

import argparse
import uuid

import pytest

from router.record import RequestRecord
from router.reportcli import render
from router.state.memory_store import MemoryStore
from router.state.redis_store import RedisStore
from router.state.stats import Stats, _bucket, _upper_ms
from router.state.store import Store
from tests.router.state.test_stores import REDIS_URL, redis_store

NOW = 1_800_000_030.0  # 30 s into a minute


def answered(team: str, cost: float, ms: float, *, backend: str = "gpu", self_hosted: bool = True,
             provider: str = "vllm", rule: str = "default", **kw: object) -> RequestRecord:
    r = RequestRecord("chat", alias="chat", team=team, rule=rule, backend=backend, provider=provider,
                      self_hosted=self_hosted, cost_usd=cost, input_tokens=10, output_tokens=5,
                      duration_s=ms / 1000, **kw)  # type: ignore[arg-type]
    return r


def traffic(stats: Stats, now: float = NOW) -> None:
    for i in range(8):
        stats.record(answered("search", 0.001, 10 + i), now)
    stats.record(answered("batch", 0.01, 500, backend="cloud", self_hosted=False, provider="openai",
                          rule="burst", fallback=True, savings_usd=0.002), now)
    stats.record(answered("batch", 0.0, 2, cache="hit"), now - 60)  # the minute before
    stats.record(RequestRecord("chat", alias="chat", team="search", rule="default", error_type="rate_limit_exceeded",
                               status=429, duration_s=0.001), now)
    stream = answered("search", 0.002, 900, ttft_s=0.05, stream=True)
    stats.record(stream, now)


async def test_counters_read_back_as_the_dashboard_json(store: Store) -> None:
    stats = Stats(store)
    traffic(stats)
    await stats.flush()
    data = await stats.read(5, now=NOW)
    assert data["bucket_s"] == 60 and len(data["t"]) == 5 and data["t"][-1] == 1_800_000_000
    t = data["totals"]
    assert t["requests"] == 12 and t["errors"] == 0 and t["denied"] == 1 and t["fallbacks"] == 1
    assert t["spend_usd"] == pytest.approx(8 * 0.001 + 0.01 + 0.002)
    assert t["savings_usd"] == pytest.approx(0.002)
    assert t["self_hosted_share"] == pytest.approx(10 / 12) and t["cache_hit_rate"] == pytest.approx(1 / 12)
    assert t["input_tokens"] == 110 and t["output_tokens"] == 55
    series = data["series"]
    assert series["spend_by_team"]["batch"] == [0, 0, 0, 0.0, pytest.approx(0.01)]
    assert series["spend_by_provider"]["openai"][-1] == pytest.approx(0.01)
    assert series["requests"] == [0, 0, 0, 1, 11] and series["cache_hits"][-2] == 1
    assert series["latency_p50_ms"][:3] == [None, None, None]
    # percentiles come from log buckets: within one bucket (20 %) of the true value
    assert 13 <= t["latency_p50_ms"] <= 17 * 1.2 and 500 <= t["latency_p99_ms"] <= 900 * 1.2
    assert 50 <= t["ttft_p50_ms"] <= 60
    assert data["top_rules"][0] == {"rule": "default", "requests": 11, "spend_usd": pytest.approx(0.01)}
    assert data["teams"]["batch"]["spend_usd"] == pytest.approx(0.01)
    text = render(data | {"source": "test"}, "5m")
    assert "batch" in text and "$0.020000" in text and "burst" in text
    assert "ask a running gateway" in text  # no prices in the counters: the economics need the policy
    economics = {"spend_usd": 0.02, "marginal_usd": 0.015, "owned_usd": 0.09, "all_closed_usd": 0.4,
                 "gpus": [{"backend": "gpu", "gpu_hour_usd": 2.0, "tokens_per_s": 50, "served_tokens": 1200,
                           "utilisation": 0.3, "amortised_usd": 0.03, "amortised_usd_per_mtok": 25.0,
                           "break_even": {"gpt-mini": 23.7, "gpt-4o": 0.25}}]}
    text = render(data | {"source": "test", "economics": economics}, "5m")
    assert "$0.090000" in text and "30.0%" in text and "gpt-4o 25.0%" in text and "gpt-mini 2370.0% (never)" in text


def test_histogram_buckets_are_ordered_and_tight() -> None:
    for ms in (0.1, 0.5, 0.51, 1, 9.9, 250, 60_000):
        i = _bucket(ms)
        assert ms <= _upper_ms(i) + 1e-9 and (i == 0 or ms > _upper_ms(i - 1))


async def test_replicas_sum_on_one_redis(redis_up: None) -> None:
    prefix = f"sytest-{uuid.uuid4().hex[:12]}"
    async with redis_store(prefix) as a, redis_store(prefix) as b:
        one, two = Stats(a), Stats(b)
        traffic(one)
        traffic(two)
        await one.flush()
        await two.flush()
        data = await Stats(a).read(5, now=NOW)
        assert data["totals"]["requests"] == 24
        assert data["totals"]["spend_usd"] == pytest.approx(2 * 0.02)


async def test_an_outage_keeps_the_counts_for_the_next_flush() -> None:
    down = RedisStore("redis://127.0.0.1:9/0", timeout_s=0.2)
    stats = Stats(down)
    traffic(stats)
    await stats.flush()  # fails: kept
    memory = MemoryStore()
    stats._store = memory  # the store is back (same counts, another store object for the test)
    await stats.flush()
    assert (await stats.read(5, now=NOW))["totals"]["requests"] == 12
    await down.close()


async def test_report_command_reads_redis(redis_up: None, capsys: pytest.CaptureFixture[str]) -> None:
    from router.reportcli import run_report

    url = REDIS_URL.rsplit("/", 1)[0] + "/11"  # a database of its own: the default key prefix
    store = RedisStore(url)
    try:
        await store._redis.delete(*[k async for k in store._redis.scan_iter(match="switchyard:stats:*")] or ["-"])
        stats = Stats(store)
        traffic(stats, now=__import__("time").time())
        await stats.flush()
    finally:
        await store.close()
    args = argparse.Namespace(since="10m", json=False, redis_url=url, url=None, key=None)
    import asyncio

    code = await asyncio.to_thread(run_report, args, {})
    out = capsys.readouterr().out
    assert code == 0 and "By team" in out and "batch" in out and "burst" in out and "requests" in out
    bad = argparse.Namespace(since="ten minutes", json=True, redis_url=url, url=None, key=None)
    assert await asyncio.to_thread(run_report, bad, {}) == 2
