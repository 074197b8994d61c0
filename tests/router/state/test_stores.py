"""The two ``Store`` implementations: one sliding-window semantics (tests parametrized over
both, plus a property that they agree hit for hit), key records, and RedisStore's behaviour
when Redis is refused, silent or restarted.

Needs a real Redis at 127.0.0.1:6379 (or ``SWITCHYARD_TEST_REDIS_URL``); each test uses its
own random key prefix and deletes its keys. The restart test runs its own ``redis-server``.
"""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.state.memory_store import MemoryStore, sliding_position
from router.state.redis_store import RedisStore
from router.state.store import KeyRecord, Store, StoreUnavailable, Window

REDIS_URL = os.environ.get("SWITCHYARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
W = 10.0  # window seconds in these tests
T0 = 1_000_000.0  # bucket 100000 starts here (f = 0)


# -- helpers -----------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _redis_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture(scope="module")
def redis_up() -> None:
    url = urlsplit(REDIS_URL)
    host, port = url.hostname or "127.0.0.1", url.port or 6379
    if not _redis_answers(host, port):
        pytest.fail(f"no Redis answers at {host}:{port}: these tests need a real Redis "
                    "(CI starts redis-server; locally: redis-server --daemonize yes)", pytrace=False)


async def _delete_keys(store: RedisStore) -> None:
    client = store._redis
    names = [name async for name in client.scan_iter(match=f"{store._prefix}:*", count=500)]
    if names:
        await client.delete(*names)


@asynccontextmanager
async def redis_store(prefix: str | None = None, **kwargs: Any) -> AsyncIterator[RedisStore]:
    store = RedisStore(REDIS_URL, prefix=prefix or f"sytest-{uuid.uuid4().hex[:12]}", **kwargs)
    try:
        yield store
    finally:
        with suppress(StoreUnavailable, OSError):
            await _delete_keys(store)
        await store.close()


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    if request.param == "memory":
        yield MemoryStore()
        return
    request.getfixturevalue("redis_up")
    async with redis_store() as s:
        yield s


def win(key: str = "{t}:team:rpm", cost: int = 1, limit: int = 10) -> Window:
    return Window(key, cost, limit)


async def fill(store: Store, window: Window, n: int, now: float) -> None:
    for _ in range(n):
        (r,) = await store.hit([window], W, now)
        assert r.allowed


# -- sliding windows (both stores) -----------------------------------------------------

async def test_kind(store: Store) -> None:
    assert store.kind in ("memory", "redis")
    await store.ping()


async def test_allows_up_to_the_limit_then_denies(store: Store) -> None:
    now = T0 + 3.0
    for i in range(1, 6):
        (r,) = await store.hit([win(limit=5)], W, now)
        assert (r.allowed, r.used, r.remaining, r.retry_after_s) == (True, i, 5 - i, 0.0)
    (r,) = await store.hit([win(limit=5)], W, now)
    assert not r.allowed and r.used == 5 and r.remaining == 0
    assert r.retry_after_s == pytest.approx(7.0)  # no previous bucket: the end of this one
    (r,) = await store.hit([win(limit=5)], W, now + 0.5)
    assert not r.allowed and r.used == 5  # the denied hit was not counted


async def test_all_or_nothing_across_team_and_key_windows(store: Store) -> None:
    team, key = win("{t}:team:rpm", limit=10), win("{t}:key:k1:rpm", limit=3)
    for _ in range(3):
        assert all(r.allowed for r in await store.hit([team, key], W, T0))
    team_r, key_r = await store.hit([team, key], W, T0)
    assert not key_r.allowed and key_r.retry_after_s > 0
    # the team window is within its limit (allowed=True) but was not counted
    assert team_r.allowed and team_r.used == 3 and team_r.retry_after_s == 0
    (team_r,) = await store.hit([team], W, T0)
    assert team_r.used == 4
    other = win("{t}:key:k2:rpm", limit=3)
    assert [r.used for r in await store.hit([team, other], W, T0)] == [5, 1]


@pytest.mark.parametrize("f", [0.0, 0.1, 0.25, 0.5, 0.9, 0.999])
async def test_previous_bucket_decays(store: Store, f: float) -> None:
    window = win(limit=10)
    await fill(store, window, 10, T0 + 5.0)  # bucket 0 full
    now = T0 + W + f * W
    (probe,) = await store.hit([win(cost=0, limit=10)], W, now)
    assert probe.allowed and probe.used == pytest.approx(10 * (1 - f))
    fits = math.floor(10 - 10 * (1 - f) + 1e-9)
    for i in range(fits):
        (r,) = await store.hit([window], W, now)
        assert r.allowed and r.used == pytest.approx(10 * (1 - f) + i + 1)
    (r,) = await store.hit([window], W, now)
    assert not r.allowed
    need = r.used + 1 - 10
    assert r.retry_after_s == pytest.approx(min(need * W / 10, W * (1 - f)))
    assert r.retry_after_s > 0


async def test_retry_after_is_capped_at_the_end_of_the_bucket(store: Store) -> None:
    window = win(limit=10)
    await fill(store, window, 2, T0 + 5.0)  # previous bucket: 2
    now = T0 + W + 2.0  # f = 0.2: used 1.6
    await fill(store, window, 8, now)  # used 9.6
    waits = [(await store.hit([win(cost=c, limit=10)], W, now))[0].retry_after_s for c in (1, 2, 3)]
    assert waits == pytest.approx([3.0, 8.0, 8.0])  # 0.6 / 0.2 per s; 1.6 / 0.2 = 8 = end; capped


async def test_only_two_buckets_count(store: Store) -> None:
    window = win(limit=10)
    await fill(store, window, 10, T0 + 9.0)
    (r,) = await store.hit([window], W, T0 + 2 * W)  # bucket 0 is two buckets back: gone
    assert r.allowed and r.used == 1
    (r,) = await store.hit([win(cost=0)], W, T0 + 5 * W)
    assert r.used == 0


async def test_cost_above_the_limit_is_never_allowed(store: Store) -> None:
    (r,) = await store.hit([win(cost=11, limit=10)], W, T0 + 4.0)
    assert not r.allowed and r.used == 0 and r.retry_after_s == W
    (r,) = await store.hit([win(cost=10, limit=10)], W, T0 + 4.0)
    assert r.allowed and r.used == 10


async def test_zero_limit_and_denied_at_the_very_end_of_a_bucket(store: Store) -> None:
    (r,) = await store.hit([win(limit=0)], W, T0)
    assert not r.allowed and r.retry_after_s == W
    await fill(store, win(limit=1), 1, T0)
    (r,) = await store.hit([win(limit=1)], W, T0 + W - 1e-9)
    assert not r.allowed and r.retry_after_s > 0  # never "retry in 0 s"


async def test_no_windows(store: Store) -> None:
    assert await store.hit([], W, T0) == []


def test_sliding_position() -> None:
    assert sliding_position(T0 + 2.5, W) == (100_000, 0.25)
    assert sliding_position(0.3, 0.1)[1] < 1.0
    with pytest.raises(ValueError):
        sliding_position(1.0, 0.0)


# -- expiry ----------------------------------------------------------------------------

async def test_redis_buckets_expire_after_two_windows(redis_up: None) -> None:
    async with redis_store() as store:
        await store.hit([win("{t}:team:rpm")], W, T0 + 1.0)
        b, _ = sliding_position(T0 + 1.0, W)
        pttl = await store._redis.pttl(f"{store._prefix}:rl:{{t}}:team:rpm:{b}")
        assert 0 < pttl <= 2 * W * 1000
        assert await store._redis.pttl(f"{store._prefix}:rl:{{t}}:team:rpm:{b - 1}") == -2  # never written


async def test_memory_store_sweeps_old_windows() -> None:
    store = MemoryStore()
    for i in range(100):
        await store.hit([win(f"{{t}}:key:{i}:rpm")], W, T0)
    assert store.tracked_windows == 100
    for _ in range(4):  # each hit drops at most 32 expired windows
        await store.hit([win("{t}:team:rpm")], W, T0 + 2 * W + 1.0)
    assert store.tracked_windows == 1
    await store.hit([win("{t}:team:rpm")], W, T0 + 3 * W)
    assert store.tracked_windows == 1


# -- concurrency (Redis) ---------------------------------------------------------------

async def test_fifty_concurrent_hits_through_one_store(redis_up: None) -> None:
    async with redis_store(timeout_s=2.0) as store:
        results = await asyncio.gather(*(store.hit([win(limit=20)], W, T0) for _ in range(50)))
        assert sum(r.allowed for (r,) in results) == 20
        (r,) = await store.hit([win(cost=0, limit=20)], W, T0)
        assert r.used == 20


async def test_fifty_concurrent_hits_through_three_replicas(redis_up: None) -> None:
    prefix = f"sytest-{uuid.uuid4().hex[:12]}"
    async with redis_store(prefix, timeout_s=2.0) as a, redis_store(prefix, timeout_s=2.0) as b, \
            redis_store(prefix, timeout_s=2.0) as c:
        replicas = [a, b, c]
        results = await asyncio.gather(*(replicas[i % 3].hit([win(limit=20)], W, T0) for i in range(50)))
        assert sum(r.allowed for (r,) in results) == 20
        assert sorted(r.used for (r,) in results if r.allowed) == list(range(1, 21))


# -- memory and Redis agree ------------------------------------------------------------

@settings(derandomize=True, max_examples=30, deadline=None)
@given(steps=st.lists(st.tuples(st.floats(0.0, 7.0, allow_nan=False), st.integers(0, 10),
                                st.sampled_from(["both", "team", "key"])), min_size=1, max_size=25))
async def test_memory_and_redis_agree(redis_up: None, steps: list[tuple[float, int, str]]) -> None:
    memory = MemoryStore()
    async with redis_store() as redis:
        now = T0 + 0.37
        for dt, cost, which in steps:
            now += dt
            windows = {"both": [Window("{p}:team", cost, 15), Window("{p}:key", cost, 9)],
                       "team": [Window("{p}:team", cost, 15)], "key": [Window("{p}:key", cost, 9)]}[which]
            assert await memory.hit(windows, 5.0, now) == await redis.hit(windows, 5.0, now)


# -- key records (both stores) ---------------------------------------------------------

REC_A1 = KeyRecord("a" * 64, "alpha", "ci bot", 100.0, None)
REC_A2 = KeyRecord("b" * 64, "alpha", "nöel's key", 200.5, 1.7e9 + 0.25)
REC_B1 = KeyRecord("c" * 64, "beta", "", 150.0, 300.0)


async def test_key_records_round_trip(store: Store) -> None:
    for record in (REC_A1, REC_A2, REC_B1):
        await store.put_key(record)
    assert await store.get_key(REC_A2.key_hash) == REC_A2
    assert await store.get_key(REC_A1.key_hash) == REC_A1
    assert await store.get_key("f" * 64) is None
    assert await store.list_keys("alpha") == [REC_A1, REC_A2]
    assert await store.list_keys("beta") == [REC_B1]
    assert await store.list_keys("nobody") == []
    assert await store.list_keys() == [REC_A1, REC_B1, REC_A2]  # oldest first


async def test_revoke_keeps_the_record(store: Store) -> None:
    await store.put_key(REC_A1)
    assert await store.revoke_key(REC_A1.key_hash) is True
    revoked = await store.get_key(REC_A1.key_hash)
    assert revoked is not None and revoked.revoked and revoked.team == "alpha" and revoked.name == "ci bot"
    assert await store.revoke_key(REC_A1.key_hash) is True
    assert await store.revoke_key("f" * 64) is False
    assert await store.get_key("f" * 64) is None  # revoking an unknown key creates nothing
    assert [r.revoked for r in await store.list_keys("alpha")] == [True]


async def test_put_key_overwrites_and_moves_team(store: Store) -> None:
    await store.put_key(REC_A2)
    moved = KeyRecord(REC_A2.key_hash, "beta", "renamed", REC_A2.created_at, None)
    await store.put_key(moved)
    assert await store.get_key(REC_A2.key_hash) == moved
    assert await store.list_keys("alpha") == []
    assert await store.list_keys("beta") == [moved]
    assert await store.list_keys() == [moved]


# -- Redis down ------------------------------------------------------------------------

async def _fails_within(seconds: float, call: Callable[[], Awaitable[object]]) -> str:
    start = time.monotonic()
    with pytest.raises(StoreUnavailable) as caught:
        await call()
    assert time.monotonic() - start < seconds
    return str(caught.value)


async def test_connection_refused_is_unavailable_fast() -> None:
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.25)
    try:
        for call in (store.ping, lambda: store.hit([win()], W, T0), lambda: store.get_key("a" * 64),
                     lambda: store.put_key(REC_A1), lambda: store.revoke_key("a" * 64), store.list_keys,
                     lambda: store.list_keys("alpha")):
            message = await _fails_within(0.2, call)
            assert message.startswith("redis ") and "\n" not in message
    finally:
        await store.close()


@asynccontextmanager
async def blackhole() -> AsyncIterator[int]:
    """A TCP server that accepts connections and never answers."""
    held: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        with suppress(ConnectionError):
            while await reader.read(4096):
                pass

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for writer in held:
            writer.close()
        await server.wait_closed()


async def test_silent_server_is_unavailable_within_the_timeout() -> None:
    async with blackhole() as port:
        store = RedisStore(f"redis://127.0.0.1:{port}/0", timeout_s=0.2)
        try:
            for call in (store.ping, lambda: store.hit([win()], W, T0), lambda: store.get_key("a" * 64)):
                await _fails_within(0.2 + 0.15, call)
        finally:
            await store.close()


async def _start_redis(port: int, workdir: Path) -> asyncio.subprocess.Process:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed (needed to test restarts)", pytrace=False)
    proc = await asyncio.create_subprocess_exec(
        binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        "--daemonize", "no", "--dir", str(workdir),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    for _ in range(300):
        if await asyncio.to_thread(_redis_answers, "127.0.0.1", port):
            return proc
        await asyncio.sleep(0.01)
    proc.kill()
    pytest.fail(f"redis-server on port {port} did not start", pytrace=False)


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.kill()  # by PID: only the server this test started
        await proc.wait()


async def test_recovers_after_redis_restarts(tmp_path: Path) -> None:
    port = free_port()
    proc = await _start_redis(port, tmp_path)
    store = RedisStore(f"redis://127.0.0.1:{port}/0", timeout_s=0.5)
    try:
        await store.put_key(REC_A1)
        assert (await store.hit([win()], W, T0))[0].used == 1
        await _stop(proc)
        await _fails_within(0.5, store.ping)
        await _fails_within(0.5, lambda: store.hit([win()], W, T0))

        proc = await _start_redis(port, tmp_path)  # empty: no persistence, no scripts loaded
        assert (await store.hit([win()], W, T0))[0].used == 1
        assert await store.get_key(REC_A1.key_hash) is None

        await _stop(proc)  # restart again without a call in between: the pooled connection is stale
        proc = await _start_redis(port, tmp_path)
        assert (await store.hit([win()], W, T0))[0].used == 1
        await store.ping()
    finally:
        await store.close()
        await _stop(proc)


# -- configuration ---------------------------------------------------------------------

def test_prefix_must_not_carry_a_hash_tag() -> None:
    with pytest.raises(ValueError, match="hash tag"):
        RedisStore(REDIS_URL, prefix="{switchyard}")


def test_sentinel_url_needs_a_service() -> None:
    with pytest.raises(ValueError, match="service"):
        RedisStore("redis+sentinel://127.0.0.1:26379")


@pytest.mark.parametrize("scheme", ["redis+sentinel", "redis+cluster"])
async def test_sentinel_and_cluster_urls_fail_as_unavailable(scheme: str) -> None:
    port = free_port()
    url = f"{scheme}://127.0.0.1:{port}" + ("/mymaster" if scheme == "redis+sentinel" else "")
    store = RedisStore(url, timeout_s=0.2)
    try:
        await _fails_within(0.5, store.ping)
        await _fails_within(0.5, lambda: store.hit([win()], W, T0))
    finally:
        await store.close()
