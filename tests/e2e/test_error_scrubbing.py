"""Errors leak nothing (issue 11, item 3), through the running gateway: an upstream 401 that
echoes the upstream key (a passthrough kind and two litellm kinds), a dead backend's
host:port, a stream that breaks with the key in its error event, and ``/readyz``. Clients
see the backend's name, the error type and the provider's message minus credentials and
internal addresses; the log keeps the detail (addresses) but never a credential."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets

import aiohttp
import pytest
from aiohttp import web

from router.settings import Settings
from tests.conftest import free_port
from tests.e2e.test_gateway_sdk import MESSAGES, policy
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.faults import Fault
from tests.fakes.openai_upstream import FakeOpenAI

ADMIN = "admin-" + "s" * 24
#: Upstream keys of no known shape: only the scrubber's exact match on configured keys finds them.
KEY = "Zq" + secrets.token_hex(16)
TIMEOUTS = "timeouts: {connect_s: 1, first_token_s: 5, idle_s: 5, total_s: 10}"


@pytest.fixture(autouse=True)
async def _deadline():
    async with asyncio.timeout(30):
        yield


async def post(url: str, body: dict, headers: dict | None = None) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.post(url + "/v1/chat/completions", json=body,
                                                          headers=headers or {}) as r:
        return r.status, await r.text()


def backend_yaml(kind: str, fake) -> str:
    return (f"{{kind: {kind}, base_url: '{fake.base_url}', model: m-1, api_key: '${{UPSTREAM_KEY}}', "
            f"retry: {{attempts: 1}}, {TIMEOUTS}}}")


@pytest.mark.parametrize("kind", ["openai_compatible", "openai", "anthropic"])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_an_upstream_401_echoing_the_key_reaches_neither_client_nor_log(gateway, stack, caplog, kind, stream):
    caplog.set_level(logging.DEBUG)
    fake = await stack.enter_async_context(FakeAnthropic() if kind == "anthropic" else FakeOpenAI())
    error_type = "authentication_error" if kind == "anthropic" else "invalid_api_key"
    fake.faults.always(Fault(status=401, error_type=error_type,
                             message=f"Incorrect API key provided: {KEY}. You sent Authorization: Bearer {KEY}"))
    url = await gateway(policy(("upstream", backend_yaml(kind, fake))), env={"UPSTREAM_KEY": KEY})
    status, text = await post(url, {"model": "chat", "messages": MESSAGES, "max_tokens": 16, "stream": stream})
    assert fake.received and KEY in str(fake.received[0].headers)  # the key really went upstream
    assert status == 502, text
    assert KEY not in text
    error = json.loads(text)["error"]
    assert error["code"] == "all_backends_failed"
    assert "upstream (upstream_auth_error): " in error["message"]  # the backend's name and the error type
    assert "Incorrect API key provided: [redacted]" in error["message"]  # the provider's message, minus the key
    assert KEY not in caplog.text
    assert "request" in caplog.text and "failed" in caplog.text  # it was logged, scrubbed


async def test_a_dead_backend_is_named_not_addressed_for_the_client_and_detailed_in_the_log(gateway, caplog):
    port = free_port()  # nothing listens there
    url = await gateway(policy(("gpu", f"{{kind: vllm, base_url: 'http://127.0.0.1:{port}/v1', model: m, "
                                       f"retry: {{attempts: 1}}, {TIMEOUTS}}}")),
                        settings=Settings(access_log=False, admin_key=ADMIN))
    for stream in (False, True):
        status, text = await post(url, {"model": "chat", "messages": MESSAGES, "stream": stream})
        assert status == 502, text
        assert str(port) not in text and "127.0.0.1" not in text, text
        assert "gpu" in text and "cannot connect" in text
    assert f"127.0.0.1:{port}" in caplog.text  # the operator's log keeps where it tried
    async with aiohttp.ClientSession() as http:
        async with http.get(url + "/readyz") as r:
            body = await r.text()
            assert r.status == 503 and body == '{"status":"not ready"}'
        async with http.get(url + "/readyz", headers={"Authorization": f"Bearer {ADMIN}"}) as r:
            details = await r.json()
    assert details["status"] == "not ready" and details["backends"]["gpu"]["ok"] is False
    assert str(port) in details["backends"]["gpu"]["detail"]  # the admin gets the detail


async def test_a_stream_error_event_mid_answer_carries_no_key_or_address(gateway, stack):
    """The upstream starts an answer, then sends an error event naming the key and an
    internal address; nothing can continue it, so the client gets an error event: scrubbed."""
    hits = []

    async def chat(request: web.Request) -> web.StreamResponse:
        hits.append(request.headers.get("Authorization"))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m",'
                             b'"choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"}}]}\n\n')
        message = f"key {KEY} rejected by shard 10.20.30.40:8443 (http://gpu-7.cluster.local:8000/v1)"
        await response.write(f'data: {{"error": {{"message": "{message}", "type": "server_error"}}}}\n\n'.encode())
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app)
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    upstream = f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
    url = await gateway(policy(("gpu", f"{{kind: openai_compatible, base_url: '{upstream}', model: m, "
                                       f"api_key: '${{UPSTREAM_KEY}}', {TIMEOUTS}}}")), env={"UPSTREAM_KEY": KEY})
    status, text = await post(url, {"model": "chat", "messages": MESSAGES, "stream": True})
    assert hits == [f"Bearer {KEY}"]
    assert status == 200 and '"content":"Hel"' in text and '"error"' in text, text
    assert KEY not in text and "10.20.30.40" not in text and "cluster.local" not in text, text
    assert str(runner.addresses[0][1]) not in text
    assert "[redacted]" in text and "[address]" in text
