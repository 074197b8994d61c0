"""The Redis store on a real 3-master Redis Cluster (Debian's redis-server in cluster mode on
free loopback ports, started and stopped here): every operation the gateway uses works, with
each team's keys in one hash slot, and two gateways on the cluster share one RPM limit."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from router.settings import Settings
from router.state.redis_store import RedisStore
from router.state.store import Budget, KeyRecord, Window
from tests.conftest import free_port
from tests.e2e.test_gateway_sdk import MESSAGES, local


def _cluster_port() -> int:
    """A free port whose cluster-bus port (port + 10000) is valid and free too."""
    import socket

    while True:
        port = free_port()
        if port > 55000:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


def _cli(port: int, *args: str) -> str:
    return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=20).stdout


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    ports = [_cluster_port() for _ in range(3)]
    procs = []
    for port in ports:
        workdir: Path = tmp_path_factory.mktemp(f"redis-{port}")
        procs.append(subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
             "--cluster-config-file", "nodes.conf", "--save", "", "--appendonly", "no"],
            cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    try:
        deadline = time.monotonic() + 20
        while not all("PONG" in _cli(p, "ping") for p in ports):
            assert time.monotonic() < deadline, "redis-server (cluster mode) did not start"
            time.sleep(0.05)  # the servers are starting
        subprocess.run(["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
                        "--cluster-replicas", "0", "--cluster-yes"], check=True, capture_output=True, timeout=30)
        while not all("cluster_state:ok" in _cli(p, "cluster", "info") for p in ports):
            assert time.monotonic() < deadline, "the cluster did not become ready"
            time.sleep(0.05)  # slots are being agreed on
        yield f"redis+cluster://127.0.0.1:{ports[0]}"
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=10)


async def test_store_operations_on_a_cluster(cluster: str):
    store = RedisStore(cluster, timeout_s=1.0, prefix="cl" + secrets.token_hex(3))
    try:
        now = time.time()
        windows = [Window("{t}:team:rpm", 1, 2), Window("{t}:key:k1:rpm", 1, 10)]
        assert [r.allowed for r in await store.hit(windows, 60, now)] == [True, True]
        assert [r.allowed for r in await store.hit(windows, 60, now)] == [True, True]
        results = await store.hit(windows, 60, now)
        assert [r.allowed for r in results] == [False, True] and results[0].retry_after_s > 0
        budgets = [Budget("{t}:budget:day:d", 6, 10, 60), Budget("{t}:kbudget:k1:month:m", 6, 100, 60)]
        assert (await store.reserve(budgets))[0] is True
        assert (await store.reserve(budgets))[0] is False  # all or nothing: the month was not touched
        assert await store.read(["{t}:budget:day:d", "{t}:kbudget:k1:month:m"]) == [6, 6]
        assert await store.read(["{t}:budget:day:d", "{other}:budget:day:d"]) == [6, 0]  # two slots, one read
        for team in ("alpha", "beta", "gamma", "delta"):  # records spread over the three masters
            await store.put_key(KeyRecord(secrets.token_hex(32), team, "n", now))
        assert len(await store.list_keys()) == 4 and len(await store.list_keys("beta")) == 1
        await store.set_blob("{global}:answer", b"cached", 30)
        assert await store.get_blob("{global}:answer") == b"cached"
        # one admission step: windows, the team's cache entry and its lock, budgets — one slot
        admitted = await store.admit([Window("{u}:team:rpm", 1, 5)], 60, now, [Budget("{u}:budget:day:d", 3, 10, 60)],
                                     "{u}:entry", lock_ms=5000)
        assert (admitted.reserved, admitted.leader, admitted.blob) == (True, True, None)
        waiting = await store.admit([], 60, now, [], "{u}:entry", lock_ms=5000)
        assert waiting.leader is False and await store.probe("{u}:entry") == (None, True)
        await store.adjust([Budget("{u}:budget:day:d", -1, 10, 60)], ("{u}:entry", b"answer", 30))
        assert await store.probe("{u}:entry") == (b"answer", False)  # stored: the lock is released
        assert await store.read(["{u}:budget:day:d"]) == [2]
        # dashboard counters: buckets in different slots, one pipeline
        await store.add_stats([("m:60", {"n": 1, "c": 0.5}, 60), ("h:3600", {"n": 1}, 60)])
        assert await store.read_stats(["m:60", "h:3600", "m:120"]) == [{"n": 1.0, "c": 0.5}, {"n": 1.0}, {}]
        await store.ping()
    finally:
        await store.close()


async def test_two_gateways_share_limits_on_the_cluster(gateway, fake_openai, cluster: str):
    team = "c" + secrets.token_hex(3)
    policy = f"""
version: 1
backends:
  gpu: {local(fake_openai)}
models:
  chat: {{targets: [gpu]}}
teams:
  {team}: {{keys: ["${{KEY}}"], limits: {{rpm: 4}}}}
"""
    settings = Settings(access_log=False, redis_url=cluster)
    urls = [await gateway(policy, env={"KEY": "sk-cluster"}, settings=settings) for _ in range(2)]

    async def one(url: str) -> int:
        c = openai.AsyncOpenAI(base_url=url + "/v1", api_key="sk-cluster", max_retries=0, timeout=10)
        try:
            await c.chat.completions.create(model="chat", messages=MESSAGES)
            return 200
        except openai.RateLimitError:
            return 429

    async with asyncio.timeout(20):
        statuses = [await one(urls[i % 2]) for i in range(6)]
    assert statuses.count(200) == 4 and statuses.count(429) == 2
