"""A real Prometheus (Debian's ``prometheus``) scrapes a running gateway: after known traffic
for two teams, the cost-by-team series equals, per team, the sum of ``x-switchyard-cost-usd``
the clients saw. And every metric the Grafana dashboard queries is one the gateway exports
(checked against a live scrape, not a list).

Prometheus runs on a free loopback port with its own data directory, is stopped by its PID,
and scrapes every second with the dashboard key as a bearer token.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import openai
import pytest

from router.settings import Settings
from tests.conftest import free_port
from tests.deploy.test_deploy_files import dashboard_queries, promql_metric_names
from tests.fakes.openai_upstream import FakeOpenAI

PROMETHEUS = "/usr/bin/prometheus"
pytestmark = pytest.mark.skipif(not os.path.exists(PROMETHEUS),
                                reason=f"{PROMETHEUS} is missing (install it: bash tests/tools/ensure-debian-tools.sh)")
ADMIN, READER = "admin-" + "p" * 24, "dash-" + "r" * 24
KEYS = {"ALPHA_KEY": "sk-alpha-prom-0000000000", "BETA_KEY": "sk-beta-prom-00000000000",
        "GAMMA_KEY": "sk-gamma-prom-0000000000"}
TEAM_OF = {"ALPHA_KEY": "alpha", "BETA_KEY": "beta"}


def policy(gpu: FakeOpenAI, premium: FakeOpenAI) -> str:
    return f"""
version: 1
backends:
  gpu: {{kind: llamacpp, base_url: '{gpu.base_url}', model: served, price: {{gpu_hour_usd: 3.0, tokens_per_s: 40}}}}
  premium: {{kind: llamacpp, replicas: ['{premium.base_url}'], model: served,
             price: {{gpu_hour_usd: 30.0, tokens_per_s: 40}}}}   # a pool of one: replica metrics too
models:
  chat: {{targets: [gpu]}}
  big: {{targets: [premium]}}
teams:
  alpha: {{keys: ["${{ALPHA_KEY}}"], budget: {{daily_usd: 50}}}}
  beta: {{keys: ["${{BETA_KEY}}"]}}
  gamma: {{keys: ["${{GAMMA_KEY}}"]}}
telemetry: {{reference_backend: premium}}
"""


async def start_prometheus(tmp: Path, target: str) -> tuple[asyncio.subprocess.Process, str]:
    port = free_port()
    (tmp / "prometheus.yml").write_text(f"""
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
scrape_configs:
  - job_name: switchyard
    scrape_interval: 1s
    authorization: {{type: Bearer, credentials: {READER}}}
    static_configs: [{{targets: ['{target}']}}]
""")
    log = (tmp / "prometheus.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        PROMETHEUS, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn", stdout=log, stderr=log)
    return proc, f"http://127.0.0.1:{port}"


async def query(session: aiohttp.ClientSession, prom: str, expr: str) -> list[dict[str, object]]:
    async with session.get(f"{prom}/api/v1/query", params={"query": expr}) as r:
        body = await r.json()
    assert body["status"] == "success", body
    return list(body["data"]["result"])


async def until(check: object, within_s: float, what: str) -> object:
    """Poll the coroutine function ``check`` until it returns a truthy value (bounded)."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            value = await check()  # type: ignore[operator]
        except (aiohttp.ClientError, OSError):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {within_s} s", pytrace=False)
        await asyncio.sleep(0.2)


@pytest.fixture
async def prometheus_for(tmp_path: Path) -> AsyncIterator[object]:
    procs: list[asyncio.subprocess.Process] = []

    async def start(target: str) -> str:
        proc, url = await start_prometheus(tmp_path, target)
        procs.append(proc)
        return url

    yield start
    for proc in procs:
        if proc.returncode is None:
            proc.terminate()  # by PID: only the server this test started
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def test_cost_by_team_in_prometheus_equals_what_clients_were_charged(gateway, prometheus_for) -> None:
    async with FakeOpenAI() as gpu, FakeOpenAI() as premium:
        url = await gateway(policy(gpu, premium), env=KEYS,
                            settings=Settings(access_log=False, admin_key=ADMIN, dashboard_key=READER))
        charged: dict[str, float] = defaultdict(float)
        for i in range(12):
            env_key = "ALPHA_KEY" if i % 3 else "BETA_KEY"
            client = openai.AsyncOpenAI(base_url=url + "/v1", api_key=KEYS[env_key], max_retries=0)
            raw = await client.chat.completions.with_raw_response.create(
                model="big" if i % 4 == 0 else "chat", max_tokens=8 + i,
                messages=[{"role": "user", "content": f"question {i} {secrets.token_hex(4)}"}])
            charged[TEAM_OF[env_key]] += float(raw.headers["x-switchyard-cost-usd"])
        # a stream (its client sees a cost estimate, not a charge): from a third team
        stream = await openai.AsyncOpenAI(base_url=url + "/v1", api_key=KEYS["GAMMA_KEY"]).chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "stream please"}], stream=True)
        async for _ in stream:
            pass
        assert all(v > 0 for v in charged.values()) and set(charged) == {"alpha", "beta"}

        prom = await prometheus_for(url.removeprefix("http://"))
        async with aiohttp.ClientSession() as session:
            async def scraped() -> bool:
                up = await query(session, prom, 'up{job="switchyard"}')
                return bool(up) and up[0]["value"][1] == "1"  # type: ignore[index]

            await until(scraped, 30, "Prometheus scraping the gateway")
            expr = 'sum by (switchyard_team) (switchyard_cost_USD_total{job="switchyard"})'

            async def settled() -> dict[str, float] | None:
                seen = {str(s["metric"]["switchyard_team"]): float(s["value"][1])  # type: ignore[index]
                        for s in await query(session, prom, expr)}
                return seen if set(seen) >= {"alpha", "beta", "gamma"} else None

            seen = await until(settled, 30, "cost series for both teams")
            assert isinstance(seen, dict)
            for team, usd in charged.items():
                assert seen[team] == pytest.approx(usd, rel=1e-9, abs=1e-12), team
            assert seen["gamma"] > 0

            # every metric the shipped Grafana dashboard queries exists in a live scrape (the queue
            # depth appears once the load monitor has read llama.cpp's /metrics)
            async def live_names() -> set[str] | None:
                async with session.get(url + "/metrics", headers={"Authorization": f"Bearer {READER}"}) as r:
                    assert r.status == 200
                    text = await r.text()
                names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and line[0] != "#"}
                wanted = {"switchyard_backend_queue_depth", "switchyard_replica_queue_depth"}
                return names if wanted <= names else None

            live = await until(live_names, 10, "a scrape with the backends' queue depth")
            assert isinstance(live, set)
            used = {name for _, target in dashboard_queries() for name in promql_metric_names(target["expr"])}
            missing = sorted(n for n in used if n not in live and not n.startswith(("up", "ALERTS")))
            assert not missing, f"the Grafana dashboard queries metrics the gateway does not export: {missing}"
            # and Prometheus has them too (budget gauge, savings, the stream's time to first chunk)
            for name in ("switchyard_budget_remaining_USD", "switchyard_savings_USD_total",
                         "gen_ai_client_operation_time_to_first_chunk_seconds_count"):
                assert await query(session, prom, name), name


async def test_metrics_need_a_key_when_an_admin_key_is_set(gateway) -> None:
    async with FakeOpenAI() as gpu, FakeOpenAI() as premium:
        url = await gateway(policy(gpu, premium), env=KEYS,
                            settings=Settings(access_log=False, admin_key=ADMIN, dashboard_key=READER))
        async with aiohttp.ClientSession() as session:
            for headers, status in (({}, 401), ({"Authorization": f"Bearer {KEYS['ALPHA_KEY']}"}, 401),
                                    ({"Authorization": f"Bearer {READER}"}, 200),
                                    ({"Authorization": f"Bearer {ADMIN}"}, 200)):
                async with session.get(url + "/metrics", headers=headers) as r:
                    assert r.status == status
                    if status == 401:
                        assert (await r.json())["error"]["code"] == "invalid_dashboard_key"
