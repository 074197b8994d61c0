"""Shared fixtures: free ports, fake upstreams, and an in-process gateway.

``gateway(policy_yaml)`` starts the real aiohttp app on a free loopback port (the
same ``create_app`` that ``switchyard serve`` runs) and returns its base URL.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from policies import load_policy_text
from router.app import create_app
from router.runtime import KIND_TABLE
from router.settings import Settings
from router.telemetry import Telemetry
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.openai_upstream import FakeOpenAI


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def running_gateway(policy_yaml: str, env: dict[str, str] | None = None,
                          settings: Settings | None = None, telemetry: Telemetry | None = None) -> AsyncIterator[str]:
    """Run the gateway app for ``policy_yaml``; yield ``http://127.0.0.1:PORT``."""
    loaded = load_policy_text(policy_yaml, env or {}, kinds=KIND_TABLE, file="test-policy.yaml")
    app = create_app(settings or Settings(access_log=False), loaded, telemetry=telemetry)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def wait_ready(url: str, proc: subprocess.Popen[bytes] | asyncio.subprocess.Process,
                     within_s: float = 30) -> None:
    """Poll a gateway started as its own process until ``/healthz`` answers 200; fail at once
    if the process exits first, or after ``within_s``."""
    async with aiohttp.ClientSession() as http, asyncio.timeout(within_s):
        while True:
            code = proc.poll() if isinstance(proc, subprocess.Popen) else proc.returncode
            assert code is None, f"the gateway exited during start-up ({code})"
            try:
                async with http.get(url + "/healthz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                await asyncio.sleep(0.05)  # not listening yet


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as s:
        yield s


@pytest.fixture
def gateway(stack: AsyncExitStack) -> Callable[..., object]:
    """``url = await gateway(policy_yaml, env=None)``: a gateway stopped after the test."""

    async def start(policy_yaml: str, env: dict[str, str] | None = None, settings: Settings | None = None,
                    telemetry: Telemetry | None = None) -> str:
        return await stack.enter_async_context(running_gateway(policy_yaml, env, settings, telemetry))

    return start


@pytest.fixture
async def fake_openai(stack: AsyncExitStack) -> FakeOpenAI:
    return await stack.enter_async_context(FakeOpenAI(name="primary", model_name="fake-primary"))


@pytest.fixture
async def fake_openai_b(stack: AsyncExitStack) -> FakeOpenAI:
    return await stack.enter_async_context(FakeOpenAI(name="secondary", model_name="fake-secondary"))


@pytest.fixture
async def fake_anthropic(stack: AsyncExitStack) -> FakeAnthropic:
    return await stack.enter_async_context(FakeAnthropic(api_key="sk-ant-test", model_name="claude-fake-1"))


# -- the real self-hosted model ------------------------------------------------------------
LLAMACPP_SCRIPT = Path(__file__).resolve().parent.parent / "deploy" / "local-model" / "llamacpp.sh"


def _llamacpp(tmp_path_factory: pytest.TempPathFactory, slots: int) -> Iterator[str]:
    """A real llama.cpp server with Gemma 3 270M, started by the project's own script on a
    free port (built and cached on first use), stopped by PID afterwards."""
    if os.environ.get("SWITCHYARD_SKIP_LLAMACPP") == "1":
        pytest.skip("SWITCHYARD_SKIP_LLAMACPP=1")
    port = free_port()
    pidfile = tmp_path_factory.mktemp("llamacpp") / "llama.pid"
    env = {**os.environ, "LLAMA_SLOTS": str(slots), "LLAMA_CTX": str(1024 * slots)}
    subprocess.run(["bash", str(LLAMACPP_SCRIPT), "start", str(port), str(pidfile)], check=True, env=env,
                   stdout=subprocess.DEVNULL, timeout=1800)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        subprocess.run(["bash", str(LLAMACPP_SCRIPT), "stop", str(pidfile)], check=False)


@pytest.fixture(scope="session")
def llamacpp_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The shared real model: two parallel slots."""
    yield from _llamacpp(tmp_path_factory, slots=2)


@pytest.fixture(scope="module")
def llamacpp_one_slot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real model with ONE slot: concurrent requests queue (``llamacpp:requests_deferred``)."""
    yield from _llamacpp(tmp_path_factory, slots=1)
