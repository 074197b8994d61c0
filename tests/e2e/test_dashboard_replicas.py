"""The dashboard's numbers are the same on every replica: two gateways on one Redis, traffic
through each, ``/dashboard/data`` on either shows all of it (each replica flushes its counts
within a second; reads are polled, bounded). A Redis database of its own keeps other tests'
counters out."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import openai
import redis.asyncio as aioredis

from router.settings import Settings
from tests.fakes.openai_upstream import FakeOpenAI

REDIS_DB_URL = "redis://127.0.0.1:6379/6"
KEY = "sk-dash-replicas-000000000"


async def test_every_replica_shows_every_replicas_traffic(gateway) -> None:
    client = aioredis.from_url(REDIS_DB_URL)
    try:
        stale = [k async for k in client.scan_iter(match="switchyard:stats:*")]
        if stale:
            await client.delete(*stale)
    finally:
        await client.aclose()
    async with FakeOpenAI() as fake:
        policy = f"""
version: 1
backends:
  gpu: {{kind: vllm, base_url: '{fake.base_url}', model: m, price: {{input_per_mtok_usd: 1, output_per_mtok_usd: 2}}}}
models:
  chat: {{targets: [gpu]}}
teams:
  search: {{keys: ["{KEY}"]}}
"""
        settings = Settings(access_log=False, redis_url=REDIS_DB_URL, dashboard_key="dash-" + "z" * 24)
        urls = [await gateway(policy, settings=settings), await gateway(policy, settings=settings)]
        for url, count in zip(urls, (3, 2), strict=True):
            sdk = openai.AsyncOpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0)
            for i in range(count):
                await sdk.chat.completions.create(model="chat", messages=[{"role": "user", "content": f"q{i}"}])
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 10
            while True:
                seen = []
                for url in urls:
                    async with session.get(url + "/dashboard/data?minutes=5",
                                           headers={"Authorization": "Bearer dash-" + "z" * 24}) as r:
                        data = await r.json()
                    seen.append((data["source"], data["totals"]["requests"], data["teams"]["search"]["spend_usd"]))
                if all(requests == 5 for _, requests, _ in seen):
                    break
                assert time.monotonic() < deadline, f"replicas disagree or lag: {seen}"
                await asyncio.sleep(0.1)
        assert {source for source, _, _ in seen} == {"redis"}
        assert seen[0][2] == seen[1][2] > 0
