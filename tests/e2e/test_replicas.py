"""Proof across replicas: three gateway PROCESSES (`switchyard serve`) share one real Redis
(Debian's redis-server, started here on a free port so it can be stopped and restarted)
and one upstream. A team's requests-per-minute limit holds globally, a key revoked
through one replica is refused by the others at once, and stopping Redis mid-run hangs
nothing and crashes nothing (limits degrade to per-process counting, budgets fail closed,
then both recover) and loses no spend of completed requests (Redis with its append-only file)."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import free_port, wait_ready

ROOT = Path(__file__).resolve().parents[2]
RPM = 12


def _start_redis(port: int, workdir: Path) -> subprocess.Popen[bytes]:
    """Redis as production runs it for budgets: every write in the append-only file."""
    return subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(workdir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def _redis_up(port: int) -> None:
    async with asyncio.timeout(10):
        while True:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"PING\r\n")
                ok = (await reader.read(16)).startswith(b"+PONG")
                writer.close()
                if ok:
                    return
            except OSError:
                pass
            await asyncio.sleep(0.05)  # redis-server still starting


@pytest.fixture
async def redis_port(tmp_path_factory):
    """A private redis-server (so a test may stop and restart it), stopped by PID."""
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    box = {"proc": _start_redis(port, workdir), "dir": workdir}
    await _redis_up(port)
    yield port, box
    box["proc"].terminate()
    box["proc"].wait(timeout=10)


@pytest.fixture
async def replicas(tmp_path, fake_openai, redis_port):
    """Start three gateways (separate processes) on one Redis; yield (urls, team key, admin key)."""
    team = "t" + secrets.token_hex(4)  # fresh windows in the shared Redis for every run
    key, admin = "sk-" + secrets.token_hex(12), "adm-" + secrets.token_hex(12)
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"""version: 1
backends:
  gpu: {{kind: vllm, base_url: '{fake_openai.base_url}', model: m,
        price: {{input_per_mtok_usd: 1000, output_per_mtok_usd: 1000}}}}
models:
  chat: {{targets: [gpu]}}
teams:
  {team}: {{keys: ["${{TEAM_KEY}}"], limits: {{rpm: {RPM}}}}}
  {team}s: {{keys: ["${{SPEND_KEY}}"], budget: {{daily_usd: 0.05}}}}
  other: {{}}
settings: {{watch: false}}
""")
    env = {**os.environ, "TEAM_KEY": key, "SPEND_KEY": key + "-spend", "SWITCHYARD_ADMIN_KEY": admin,
           "SWITCHYARD_REDIS_URL": f"redis://127.0.0.1:{redis_port[0]}/0"}
    procs, urls = [], []
    try:
        for _ in range(3):
            port = free_port()
            proc = subprocess.Popen([sys.executable, "-m", "router", "serve", "--policy", str(policy),  # noqa: ASYNC220
                                     "--port", str(port), "--no-access-log"], cwd=ROOT, env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(proc)
            urls.append(f"http://127.0.0.1:{port}")
        for url, proc in zip(urls, procs, strict=True):
            await wait_ready(url, proc)
        yield urls, key, admin, team
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=15)
    assert all(p.returncode == 0 for p in procs), [p.returncode for p in procs]  # clean shutdown, no crash


async def _chat(http: aiohttp.ClientSession, url: str, key: str, max_tokens: int | None = None) -> int:
    body: dict = {"model": "chat", "messages": [{"role": "user", "content": "Say hello."}]}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    async with http.post(url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}) as r:
        await r.read()
        return r.status


async def test_rpm_limit_holds_across_three_replicas(replicas, fake_openai):
    urls, key, _, _ = replicas
    async with asyncio.timeout(30), aiohttp.ClientSession() as http:
        statuses = await asyncio.gather(*(_chat(http, urls[i % 3], key) for i in range(3 * RPM)))
    assert statuses.count(200) == RPM and statuses.count(429) == 2 * RPM
    assert len(fake_openai.calls("/v1/chat/completions")) == RPM  # refused requests never reached it


async def test_revocation_on_one_replica_is_seen_by_all(replicas):
    urls, _, admin, _ = replicas
    async with asyncio.timeout(30), aiohttp.ClientSession() as http:
        auth = {"Authorization": f"Bearer {admin}"}
        async with http.post(urls[0] + "/admin/keys", json={"team": "other"}, headers=auth) as r:
            created = await r.json()
        assert [await _chat(http, u, created["key"]) for u in urls] == [200, 200, 200]
        async with http.delete(urls[1] + f"/admin/keys/{created['id']}", headers=auth) as r:
            assert r.status == 200
        assert [await _chat(http, u, created["key"]) for u in urls] == [401, 401, 401]


async def test_redis_restart_mid_run_hangs_nothing_and_limits_recover(replicas, redis_port):
    urls, key, admin, team = replicas
    port, box = redis_port
    async with asyncio.timeout(40), aiohttp.ClientSession() as http:
        assert await _chat(http, urls[0], key) == 200
        assert await _chat(http, urls[1], key + "-spend", max_tokens=10) == 200
        spent_before = await _spent(http, urls[2], admin, team + "s")
        assert spent_before > 0
        box["proc"].terminate()
        box["proc"].wait(timeout=10)
        loop = asyncio.get_running_loop()
        started = loop.time()
        during = await asyncio.gather(*(_chat(http, urls[i % 3], key) for i in range(9)))
        assert during.count(200) == 9  # served: policy keys, limits counted per process meanwhile
        assert loop.time() - started < 5  # short store timeouts: nothing hangs
        async with http.get(urls[1] + "/readyz", headers={"Authorization": f"Bearer {admin}"}) as r:
            store = (await r.json())["store"]
        assert store["ok"] is False and store["rate_limits"] == "per-process"
        assert await _chat(http, urls[0], key + "-spend", max_tokens=10) == 503  # budgets fail closed meanwhile
        box["proc"] = _start_redis(port, box["dir"])
        await _redis_up(port)
        assert await _spent(http, urls[2], admin, team + "s") == pytest.approx(spent_before)  # no spend lost
        statuses = await asyncio.gather(*(_chat(http, urls[i % 3], key) for i in range(3 * RPM)))
        assert statuses.count(200) == RPM - 1  # counted globally again (one request was before the restart)
        async with http.get(urls[1] + "/readyz", headers={"Authorization": f"Bearer {admin}"}) as r:
            assert (await r.json())["store"]["rate_limits"] == "shared"


async def _spent(http: aiohttp.ClientSession, url: str, admin: str, team: str) -> float:
    async with http.get(url + f"/admin/spend?team={team}&window=day", headers={"Authorization": f"Bearer {admin}"}) as r:
        return float((await r.json())["spent_usd"])


async def test_budget_holds_across_three_replicas(replicas, fake_openai):
    """Each request reserves its estimate (13 tokens: 0.013 USD) and settles to its actual cost
    (2 prompt + 5 completion tokens: 0.007 USD): concurrent
    traffic through all replicas never spends more than the budget + one reservation."""
    urls, key, admin, team = replicas
    async with asyncio.timeout(30), aiohttp.ClientSession() as http:
        statuses = await asyncio.gather(*(_chat(http, urls[i % 3], key + "-spend", max_tokens=10)
                                          for i in range(30)))
        spent = await _spent(http, urls[2], admin, team + "s")
    accepted = statuses.count(200)
    assert set(statuses) <= {200, 429} and accepted >= 3
    assert spent == pytest.approx(accepted * 0.007)  # settled to actual cost, nothing lost
    assert spent <= 0.05 + 0.013
