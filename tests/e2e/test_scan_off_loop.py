"""A large body is scanned off the event loop: while a ~9 MB request is being scanned, the
gateway keeps answering its probes (issue 10: one request must not freeze the gateway).

The gateway runs as its own process (``switchyard serve``), as in production: the probe
client must not compete with it for the same interpreter lock.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import orjson

from tests.conftest import free_port, wait_ready

ROOT = Path(__file__).resolve().parents[2]
WORDS = ("the quarterly report lists order 4471 shipped on 2026-03-04 to the Berlin office and "
         "the team asked for version 2.3.1 of the client with a 15 % discount before Friday").split()
# the request is denied once planned: what is measured is the gateway's own work (reading,
# parsing, scanning), not an upstream's
POLICY = """version: 1
backends:
  local: {kind: vllm, base_url: 'http://127.0.0.1:9/v1', model: m}
models:
  chat: {targets: [local]}
rules:
  - {name: no-upstream, route: {deny: measured without an upstream}}
"""


def prose(size: int, rng: random.Random) -> str:
    out, n = [], 0
    while n < size:
        word = rng.choice(WORDS)
        out.append(word)
        n += len(word) + 1
    return " ".join(out)


async def test_probes_stay_fast_while_a_large_body_is_scanned(tmp_path):
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY)
    port = free_port()
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "router", "serve", "--policy", str(policy),
                                                "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
                                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    body = orjson.dumps({"model": "chat", "messages": [{"role": "user", "content": prose(9 * 1024 * 1024,
                                                                                         random.Random(7))}]})
    latencies: list[float] = []
    try:
        async with aiohttp.ClientSession() as session:
            await wait_ready(url, proc)

            async def big() -> tuple[int, float]:
                started = time.perf_counter()
                async with session.post(f"{url}/v1/chat/completions", data=body,
                                        headers={"content-type": "application/json"}) as r:
                    await r.read()
                    return r.status, time.perf_counter() - started

            task = asyncio.create_task(big())
            while not task.done() or len(latencies) < 20:
                started = time.perf_counter()
                async with session.get(f"{url}/healthz") as r:
                    assert r.status == 200
                latencies.append(time.perf_counter() - started)
            status, took = await task
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 15)
    assert status == 403
    assert took > 0.1, f"the big request took {took:.3f} s: too quick to show anything"
    p99 = statistics.quantiles(latencies, n=100)[98]
    assert p99 < 0.05, f"/healthz p99 {p99 * 1000:.1f} ms while a {len(body) >> 20} MB body was scanned ({took:.2f} s)"
