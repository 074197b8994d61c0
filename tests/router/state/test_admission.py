"""Admission in one step (``Store.admit`` and the ``Gatekeeper`` around it), and the Redis
store's key cache kept fresh by pub/sub.

Both stores, a real Redis (127.0.0.1:6379 or ``SWITCHYARD_TEST_REDIS_URL``); each test uses
its own key prefix. No sleeps: waiting for a pub/sub message is a bounded poll.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable

import pytest

from policies import load_policy_text
from router.errors import BudgetExceeded, BudgetStoreUnavailable, RateLimited
from router.runtime import KIND_TABLE
from router.state.admission import Gatekeeper
from router.state.budgets import NANO, Budgets
from router.state.cache import CachedAnswer, ResponseCache
from router.state.keys import Principal
from router.state.limits import RateLimiter
from router.state.redis_store import RedisStore
from router.state.store import Budget, KeyRecord, Store, Window
from tests.router.state.test_stores import W, redis_store

T0 = 2_000_000.0
RPM = Window("{t}:team:rpm", 1, 3)
DAY = Budget("{t}:budget:day:2026-11-27", 100, 250, 3600)
BLOB = "{t}:cachedentry"


async def test_admit_reserves_when_the_windows_fit_and_nothing_is_cached(store: Store) -> None:
    a = await store.admit([RPM], W, T0, [DAY], BLOB)
    assert [r.used for r in a.windows] == [1] and a.reserved is True and a.values == [100] and a.blob is None
    a = await store.admit([RPM], W, T0, [DAY], BLOB)
    assert a.reserved is True and a.values == [200]
    # the budget is full: refused, nothing added, values as they are; the window still counts
    a = await store.admit([RPM], W, T0, [DAY], BLOB)
    assert a.reserved is False and a.values == [200] and [r.used for r in a.windows] == [3]
    # the window is full: nothing counted, nothing reserved, no blob read
    await store.set_blob(BLOB, b'{"backend": "gpu", "body": "{}"}', 60)
    a = await store.admit([RPM], W, T0, [DAY], BLOB)
    assert not a.windows[0].allowed and a.reserved is None and a.values == [] and a.blob is None
    assert await store.read([DAY.key]) == [200]


async def test_admit_serves_a_cached_blob_without_reserving(store: Store) -> None:
    await store.set_blob(BLOB, b'{"backend": "gpu", "body": "{}"}', 60)
    a = await store.admit([RPM], W, T0, [DAY], BLOB)
    assert a.blob == b'{"backend": "gpu", "body": "{}"}' and a.reserved is None
    assert [r.used for r in a.windows] == [1]  # a hit is a request: counted
    assert await store.read([DAY.key]) == [0]


async def test_admit_with_budgets_only_or_windows_only(store: Store) -> None:
    a = await store.admit([], W, T0, [DAY], None)
    assert a.windows == [] and a.reserved is True and a.values == [100]
    a = await store.admit([RPM], W, T0, [], None)
    assert [r.used for r in a.windows] == [1] and a.reserved is None and a.values == []


POLICY = """
version: 1
backends:
  gpu: {kind: openai_compatible, base_url: 'http://127.0.0.1:9/v1', model: m}
  cloud: {kind: openai_compatible, base_url: 'http://127.0.0.1:9/v1', model: m}
models:
  chat: {targets: [gpu]}
settings: {on_store_error: %(on_error)s}
cache: {mode: exact, ttl_s: 60, scope: %(scope)s}
teams:
  t:
    keys: []
    limits: {rpm: 2}
    budget: {daily_usd: 1.0}
"""
WHO = Principal("t", "k" * 12)
ALLOWED = frozenset({"gpu"})


def gatekeeper(store: Store, scope: str = "team", on_error: str = "fail_closed") -> tuple[Gatekeeper, ResponseCache]:
    policy = load_policy_text(POLICY % {"scope": scope, "on_error": on_error}, {}, kinds=KIND_TABLE).policy
    cache = ResponseCache(policy.cache, store)
    return Gatekeeper(store, RateLimiter(policy, store), Budgets(policy, store), cache), cache


@pytest.mark.parametrize("scope", ["team", "global"])
async def test_gatekeeper_reserves_serves_hits_and_refuses(store: Store, scope: str) -> None:
    gate, cache = gatekeeper(store, scope)
    key = cache.key("chat", "chat", {"messages": []}, "t")
    first = await gate.admit(WHO, 10, 0.6, key, ALLOWED)
    assert first.hit is None and first.reservation is not None and first.reservation.amount == round(0.6 * NANO)
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    await cache.put(key, CachedAnswer("gpu", b'{"id": "x"}'))
    second = await gate.admit(WHO, 10, 0.6, key, ALLOWED)
    assert second.hit == CachedAnswer("gpu", b'{"id": "x"}') and second.reservation is None
    assert (await store.read([first.reservation.counters[0].key]))[0] == round(0.6 * NANO)  # the hit reserved nothing
    with pytest.raises(RateLimited, match="2 requests per minute"):
        await gate.admit(WHO, 10, 0.6, key, ALLOWED)


async def test_a_hit_from_a_backend_this_request_may_not_see_is_a_miss(store: Store) -> None:
    gate, cache = gatekeeper(store)
    key = cache.key("chat", "chat", {"messages": []}, "t")
    await cache.put(key, CachedAnswer("cloud", b"{}"))
    admitted = await gate.admit(WHO, 10, 0.6, key, ALLOWED)
    assert admitted.hit is None and admitted.reservation is not None  # reserved in a second step
    with pytest.raises(BudgetExceeded, match="team 't'"):
        await gate.admit(WHO, 10, 0.6, None, ALLOWED)


@pytest.mark.parametrize("on_error", ["fail_closed", "fail_open"])
async def test_gatekeeper_when_the_store_is_down(on_error: str) -> None:
    down = RedisStore("redis://127.0.0.1:9/0", timeout_s=0.2)
    try:
        gate, cache = gatekeeper(down, on_error=on_error)
        key = cache.key("chat", "chat", {"messages": []}, "t")
        if on_error == "fail_closed":
            with pytest.raises(BudgetStoreUnavailable, match="fail_closed"):
                await gate.admit(WHO, 10, 0.1, key, ALLOWED)
            return
        for _ in range(2):  # per-process rate limit, no reservation, no hit
            admitted = await gate.admit(WHO, 10, 0.1, key, ALLOWED)
            assert admitted.reservation is None and admitted.hit is None
        with pytest.raises(RateLimited):
            await gate.admit(WHO, 10, 0.1, key, ALLOWED)
    finally:
        await down.close()


# -- the key cache (Redis) ---------------------------------------------------------------

async def until(check: Callable[[], Awaitable[bool]], within_s: float = 3.0) -> None:
    """Poll ``check`` (a pub/sub message is on its way) until true, at most ``within_s``."""
    deadline = time.monotonic() + within_s
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"not true within {within_s} s")
        await asyncio.sleep(0.005)


async def test_a_key_revoked_on_one_replica_is_refused_by_the_others(redis_up: None) -> None:
    prefix = f"sytest-{uuid.uuid4().hex[:12]}"
    record = KeyRecord("d" * 64, "t", "bot", 1.0)
    async with redis_store(prefix) as a, redis_store(prefix) as b:
        await b.put_key(record)
        assert await a.get_key(record.key_hash) == record
        await until(lambda: _live(a))  # subscribed: records are now cached
        assert await a.get_key(record.key_hash) == record
        # a change made behind the store's back is not seen: the record is served from memory …
        await a._redis.hset(f"{prefix}:key:{record.key_hash}", "name", "changed quietly")
        assert (await a.get_key(record.key_hash)).name == "bot"  # type: ignore[union-attr]
        # … but every change made through a store is announced and drops the entry everywhere
        assert await b.revoke_key(record.key_hash)
        await until(lambda: _revoked(a, record.key_hash))


async def test_the_key_cache_is_dropped_when_the_subscription_breaks(redis_up: None) -> None:
    prefix = f"sytest-{uuid.uuid4().hex[:12]}"
    record = KeyRecord("e" * 64, "t", "bot", 1.0)
    async with redis_store(prefix) as a:
        await a.put_key(record)
        await a.get_key(record.key_hash)
        await until(lambda: _live(a))
        await a.get_key(record.key_hash)
        await a._redis.hset(f"{prefix}:key:{record.key_hash}", "revoked", "1")  # not announced
        host, port = a._subscription.connection._writer.get_extra_info("sockname")[:2]
        await a._redis.client_kill_filter(_type="pubsub", addr=f"{host}:{port}")  # this store's subscription
        await until(lambda: _revoked(a, record.key_hash))


async def _live(store: RedisStore) -> bool:
    return store._key_cache_live


async def _revoked(store: RedisStore, key_hash: str) -> bool:
    record = await store.get_key(key_hash)
    return record is not None and record.revoked
