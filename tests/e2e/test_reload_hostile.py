"""A policy file that cannot be loaded never takes the gateway down (issue 11, item 9):
10,000 levels of nesting, a YAML "billion laughs" alias bomb and a 50 MB file are each a
rejected reload — 422 from ``POST /admin/policy/reload``, ``last_error`` set, the old policy
still serving — and the gateway keeps answering ``/healthz`` quickly while it tries, because
the file is read and parsed off the event loop, with limits on size, depth and expansion.

The gateway runs as its own process (``switchyard serve``), as in production: the probe
client must not compete with it for the same interpreter lock.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import free_port, wait_ready

ROOT = Path(__file__).resolve().parents[2]
GOOD = """version: 1
backends:
  local: {kind: vllm, base_url: 'http://127.0.0.1:9/v1', model: m}
models:
  chat: {targets: [local]}
settings: {watch: false}
"""


def deep(levels: int) -> str:
    return GOOD + "rules: " + "[" * levels + "]" * levels + "\n"


def billion_laughs() -> str:
    """Nine levels of nine aliases: 9**9 (387 million) strings once expanded."""
    lines = ["lol0: &lol0 [" + ", ".join(["lol"] * 9) + "]"]
    lines += [f"lol{i}: &lol{i} [" + ", ".join([f"*lol{i - 1}"] * 9) + "]" for i in range(1, 10)]
    return GOOD + "\n".join(lines) + "\n"


def huge(path: Path, mb: int) -> None:
    """A valid policy followed by ``mb`` MB of comments."""
    with path.open("w") as f:
        f.write(GOOD)
        line = "# " + "padding " * 12 + "\n"
        for _ in range(mb * 1024 * 1024 // len(line)):
            f.write(line)


@pytest.fixture
async def served(tmp_path):
    """(url, admin headers, policy path) of a gateway process serving GOOD."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(GOOD)
    port, admin = free_port(), "adm-" + secrets.token_hex(8)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "router", "serve", "--policy", str(policy), "--port", str(port), "--no-access-log",
        cwd=ROOT, env={**os.environ, "SWITCHYARD_ADMIN_KEY": admin}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(url, proc)
        yield url, {"Authorization": f"Bearer {admin}"}, policy
    finally:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 20)
        except TimeoutError:
            proc.kill()  # a gateway stuck in a parse (without the fix) does not get to its signal handler
            await proc.wait()


async def _reload_while_probing(url: str, headers: dict[str, str]) -> tuple[int, dict, list[float]]:
    """POST /admin/policy/reload; probe /healthz back to back until it answers (at least 20 probes)."""
    latencies: list[float] = []
    async with aiohttp.ClientSession() as http:

        async def reload() -> tuple[int, dict]:
            async with http.post(f"{url}/admin/policy/reload", headers=headers) as r:
                return r.status, await r.json(content_type=None)

        task = asyncio.create_task(reload())
        while not task.done() or len(latencies) < 20:
            started = time.perf_counter()
            async with http.get(f"{url}/healthz") as r:
                assert r.status == 200
            latencies.append(time.perf_counter() - started)
        status, body = await task
    return status, body, latencies


async def _still_serving(url: str, headers: dict[str, str], sha: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{url}/admin/policy", headers=headers) as r:
            assert (await r.json())["sha256"] == sha
        async with http.get(f"{url}/v1/models") as r:
            assert [m["id"] for m in (await r.json())["data"]] == ["chat"]


@pytest.mark.parametrize("case", ["deep", "alias_bomb", "50mb"])
async def test_a_hostile_policy_file_is_a_rejected_reload(served, case):
    url, headers, path = served
    async with aiohttp.ClientSession() as http, http.get(f"{url}/admin/policy", headers=headers) as r:
        sha = (await r.json())["sha256"]
    if case == "deep":
        path.write_text(deep(10_000))
    elif case == "alias_bomb":
        path.write_text(billion_laughs())
    else:
        huge(path, 50)
    async with asyncio.timeout(30):
        status, body, latencies = await _reload_while_probing(url, headers)
    assert status == 422, body
    assert body["ok"] is False and body["reload_failures"] == 1
    issues = " ".join(body["last_error"]["issues"])
    expected = {"deep": "nesting deeper than 64 levels", "alias_bomb": "once its aliases are expanded",
                "50mb": "larger than 1 MiB"}[case]
    assert expected in issues, issues
    await _still_serving(url, headers, sha)
    p99 = statistics.quantiles(latencies, n=100)[98]
    assert p99 < 0.05, f"/healthz p99 {p99 * 1000:.1f} ms during a {case} reload"
    path.write_text(GOOD + "# fixed\n")  # and a good file is taken again afterwards
    async with aiohttp.ClientSession() as http, http.post(f"{url}/admin/policy/reload", headers=headers) as r:
        assert r.status == 200 and (await r.json())["last_error"] is None
