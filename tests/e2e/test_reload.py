"""Hot reload of the policy file, through the running app (built with a policy path, as
``switchyard serve`` does): admin-triggered and file-watched reloads, rejected files that
leave the old policy serving, requests in flight across a reload, and circuit state that
carries over for unchanged backends."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from policies import load_policy
from router.app import create_app
from router.runtime import KIND_TABLE
from router.settings import Settings
from tests.e2e.test_gateway_sdk import client
from tests.fakes.faults import Fault
from tests.fakes.openai_upstream import FakeOpenAI

DEADLINE_S = 20
HELLO = [{"role": "user", "content": "Say hello."}]
ADMIN = "admin-" + "r" * 24


@pytest.fixture(autouse=True)
async def _deadline():
    async with asyncio.timeout(DEADLINE_S):
        yield


def backend(fake: FakeOpenAI, circuit: str = "{failures: 5, cooldown_s: 30}") -> str:
    return (f"{{kind: vllm, base_url: '{fake.base_url}', model: served, retry: {{attempts: 1}}, "
            f"circuit: {circuit}, timeouts: {{connect_s: 1, first_token_s: 5, idle_s: 5, total_s: 5}}}}")


def policy(a: FakeOpenAI, b: FakeOpenAI, models: str = "  chat: {targets: [a, b]}\n", watch: bool = False,
           circuit_a: str = "{failures: 5, cooldown_s: 30}", rules: str = "") -> str:
    return (f"version: 1\nbackends:\n  a: {backend(a, circuit_a)}\n  b: {backend(b)}\n"
            f"models:\n{models}settings: {{watch: {str(watch).lower()}}}\n" + (f"rules:\n{rules}" if rules else ""))


@asynccontextmanager
async def serving(path: Path) -> AsyncIterator[str]:
    """The real app for the policy file at ``path``, with reloads wired to that file."""
    loaded = load_policy(path, {}, kinds=KIND_TABLE)
    app = create_app(Settings(access_log=False, admin_key=ADMIN), loaded, policy_path=path)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def call(url: str, method: str, path: str) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {ADMIN}"}  # /admin/* and the details of /readyz
    async with aiohttp.ClientSession() as http, http.request(method, url + path, headers=headers) as resp:
        return resp.status, await resp.json()


async def aliases(url: str) -> list[str]:
    return [m["id"] for m in (await call(url, "GET", "/v1/models"))[1]["data"]]


async def backend_of(url: str, **kw: object) -> str:
    async with client(url) as c:
        raw = await c.chat.completions.with_raw_response.create(model=kw.pop("model", "chat"), messages=HELLO,
                                                                **kw)
        return raw.headers["x-switchyard-backend"]


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def test_admin_reload_swaps_in_a_new_alias(tmp_path, fake_openai, fake_openai_b):
    path = tmp_path / "policy.yaml"
    first = policy(fake_openai, fake_openai_b)
    path.write_text(first)
    async with serving(path) as url:
        status, before = await call(url, "GET", "/admin/policy")
        assert status == 200 and before["sha256"] == sha(first) and before["reloads"] == 0
        assert before["source"] == str(path) and before["ok"] is True
        assert await aliases(url) == ["chat"]

        second = policy(fake_openai, fake_openai_b, models="  chat: {targets: [a, b]}\n  chat-b: {targets: [b]}\n",
                        rules="  - {name: b-first, when: {tags: b}, route: {targets: [b, a]}}\n")
        path.write_text(second)
        status, body = await call(url, "POST", "/admin/policy/reload")
        assert status == 200 and body["ok"] is True and body["reloads"] == 1 and body["reload_failures"] == 0
        assert body["sha256"] == sha(second) != before["sha256"]
        assert body["rules"] == ["b-first"]
        assert await aliases(url) == ["chat", "chat-b"]
        assert (await call(url, "GET", "/admin/policy"))[1]["sha256"] == sha(second)
        assert await backend_of(url, model="chat-b") == "b"
        assert await backend_of(url, extra_headers={"x-switchyard-tags": "b"}) == "b"
        assert await backend_of(url) == "a"


async def test_a_broken_file_is_rejected_and_the_old_policy_keeps_serving(tmp_path, fake_openai, fake_openai_b):
    path = tmp_path / "policy.yaml"
    good = policy(fake_openai, fake_openai_b)
    path.write_text(good)
    async with serving(path) as url:
        broken = good.replace("chat: {targets: [a, b]}", "chat:\n    targets: [a, ghost]")
        path.write_text(broken)
        line = broken.splitlines().index("    targets: [a, ghost]") + 1
        status, body = await call(url, "POST", "/admin/policy/reload")
        assert status == 422 and body["ok"] is False
        assert body["reloads"] == 0 and body["reload_failures"] == 1 and body["sha256"] == sha(good)
        assert body["last_error"]["trigger"] == "admin"
        assert body["last_error"]["issues"] == [f"{path}:{line} models.chat.targets[1]: unknown backend 'ghost' "
                                                f"(backends: a, b)"]
        assert await backend_of(url) == "a"  # the old policy serves on
        _, ready = await call(url, "GET", "/readyz")
        assert ready["reload"]["last_error"]["issues"] == body["last_error"]["issues"]
        assert ready["reload"]["reload_failures"] == 1 and ready["status"] == "ready"

        rule_broken = good + "rules:\n  - name: r\n    route: {targets: [a, nowhere]}\n"
        path.write_text(rule_broken)
        status, body = await call(url, "POST", "/admin/policy/reload")
        assert status == 422 and body["reload_failures"] == 2
        assert body["last_error"]["issues"] == [
            f"{path}:{len(rule_broken.splitlines())} rules[0].route.targets[1]: unknown backend 'nowhere'"]

        path.write_text("version: 1\nbackends: [unclosed\n")
        status, body = await call(url, "POST", "/admin/policy/reload")
        assert status == 422 and body["reload_failures"] == 3 and "invalid YAML" in body["last_error"]["issues"][0]
        assert (await call(url, "GET", "/admin/policy"))[1]["sha256"] == sha(good)

        fixed = good.replace("chat: {targets: [a, b]}", "chat: {targets: [b, a]}")
        path.write_text(fixed)
        status, body = await call(url, "POST", "/admin/policy/reload")
        assert status == 200 and body["ok"] is True and body["last_error"] is None
        assert body["reloads"] == 1 and body["reload_failures"] == 3 and body["sha256"] == sha(fixed)
        assert (await call(url, "GET", "/readyz"))[1]["reload"]["last_error"] is None
        assert await backend_of(url) == "b"


async def test_the_file_watcher_picks_up_a_change_by_itself(tmp_path, fake_openai, fake_openai_b):
    path = tmp_path / "policy.yaml"
    path.write_text(policy(fake_openai, fake_openai_b, watch=True))
    async with serving(path) as url:
        assert await aliases(url) == ["chat"]
        changed = policy(fake_openai, fake_openai_b, watch=True,
                         models="  chat: {targets: [a, b]}\n  watched: {targets: [b]}\n")
        path.write_text(changed)
        for _ in range(100):  # the watcher polls every second and waits for the file to settle: ≤ 10 s here
            if "watched" in await aliases(url):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the file watcher did not reload the policy within 10 s")
        _, status = await call(url, "GET", "/admin/policy")
        assert status["sha256"] == sha(changed) and status["reloads"] == 1
        assert await backend_of(url, model="watched") == "b"


@pytest.mark.parametrize("stream", [False, True])
async def test_a_request_in_flight_finishes_on_the_old_policy(tmp_path, fake_openai, fake_openai_b, stream):
    path = tmp_path / "policy.yaml"
    path.write_text(policy(fake_openai, fake_openai_b))
    fake_openai.faults.push(Fault(delay_s=0.8))  # only the first request is slow
    async with serving(path) as url:

        async def slow() -> tuple[str, str]:
            async with client(url) as c:
                if not stream:
                    raw = await c.chat.completions.with_raw_response.create(model="chat", messages=HELLO)
                    return raw.headers["x-switchyard-backend"], raw.parse().choices[0].message.content
                async with c.chat.completions.with_streaming_response.create(model="chat", messages=HELLO,
                                                                             stream=True) as resp:
                    text = "".join([ch.choices[0].delta.content or ""
                                    async for ch in await resp.parse() if ch.choices])
                    return resp.headers["x-switchyard-backend"], text

        in_flight = asyncio.create_task(slow())
        await fake_openai.wait_received(1)  # the old policy sent it to a
        path.write_text(policy(fake_openai, fake_openai_b, models="  chat: {targets: [b]}\n"))
        status, body = await call(url, "POST", "/admin/policy/reload")
        assert status == 200 and body["reloads"] == 1
        assert not in_flight.done()
        assert await backend_of(url) == "b"  # new requests: the new policy
        assert await in_flight == ("a", fake_openai.reply_text)  # the old one finished, on a, completely
        assert len(fake_openai.calls("/v1/chat/completions")) == 1


async def test_circuit_state_carries_over_for_unchanged_backends(tmp_path, fake_openai, fake_openai_b):
    path = tmp_path / "policy.yaml"
    circuit = "{failures: 1, cooldown_s: 60}"
    path.write_text(policy(fake_openai, fake_openai_b, circuit_a=circuit))
    fake_openai.faults.push(Fault(status=503))
    async with serving(path) as url:
        assert await backend_of(url) == "b"  # a failed once: its circuit opened
        backends = (await call(url, "GET", "/admin/backends"))[1]["backends"]
        assert backends["a"]["circuit"]["state"] == "open" and backends["a"]["circuit"]["times_opened"] == 1

        path.write_text(policy(fake_openai, fake_openai_b, circuit_a=circuit,
                               models="  chat: {targets: [a, b]}\n  unrelated: {targets: [b]}\n"))
        assert (await call(url, "POST", "/admin/policy/reload"))[0] == 200
        backends = (await call(url, "GET", "/admin/backends"))[1]["backends"]
        assert backends["a"]["circuit"]["state"] == "open" and backends["a"]["circuit"]["times_opened"] == 1
        assert backends["a"]["circuit"]["errors"] == {"upstream_error": 1}
        assert await backend_of(url) == "b"
        assert len(fake_openai.calls("/v1/chat/completions")) == 1  # still skipped without being touched

        # changing a's circuit settings starts it afresh
        path.write_text(policy(fake_openai, fake_openai_b, circuit_a="{failures: 2, cooldown_s: 60}"))
        assert (await call(url, "POST", "/admin/policy/reload"))[0] == 200
        backends = (await call(url, "GET", "/admin/backends"))[1]["backends"]
        assert backends["a"]["circuit"]["state"] == "closed"
        assert await backend_of(url) == "a"
