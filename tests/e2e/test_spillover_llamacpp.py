"""Real load, real spillover: the real llama.cpp server with ONE slot is saturated by
direct traffic, its own ``llamacpp:requests_deferred`` crosses the policy's threshold, and
new requests through the gateway spill to the (fake) closed provider; when the queue
drains, traffic returns to the local model (hysteresis)."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from tests.e2e.test_gateway_sdk import MESSAGES, client

pytestmark = pytest.mark.llamacpp


def spill_policy(local_url: str, closed_url: str) -> str:
    return f"""
version: 1
backends:
  local: {{kind: llamacpp, base_url: '{local_url}', model: gemma-3-270m, timeouts: {{first_token_s: 60, total_s: 120}}}}
  cloud: {{kind: openai, base_url: '{closed_url}', model: gpt-4o-mini, api_key: sk-cloud}}
models:
  chat: {{targets: [local, cloud]}}
rules:
  - name: spill-when-busy
    route: {{spillover: {{queue_over: 1, resume_below: 0.5}}}}
settings: {{load_scrape_interval_s: 0.1, load_stale_after_s: 5}}
"""


async def _load(http: aiohttp.ClientSession, url: str) -> dict:
    async with http.get(url + "/admin/backends") as r:
        return (await r.json())["backends"]["local"]["load"]


async def _until(http: aiohttp.ClientSession, url: str, predicate, deadline_s: float = 60) -> dict:
    async with asyncio.timeout(deadline_s):
        while True:
            load = await _load(http, url)
            if load and predicate(load):
                return load
            await asyncio.sleep(0.05)  # bounded polling of the scraped load


async def test_saturated_local_model_spills_and_traffic_returns(gateway, stack, llamacpp_one_slot):
    from tests.fakes.openai_upstream import FakeOpenAI

    cloud = await stack.enter_async_context(FakeOpenAI(name="cloud", model_name="gpt-4o-mini", api_key="sk-cloud"))
    url = await gateway(spill_policy(llamacpp_one_slot, cloud.base_url))
    body = {"messages": [{"role": "user", "content": "Tell a long story."}], "max_tokens": 40,
            "temperature": 0, "ignore_eos": True}
    async with aiohttp.ClientSession() as http:
        assert (await _until(http, url, lambda s: s["queue"] == 0))["scrape_ok"]
        first = await client(url).chat.completions.with_raw_response.create(model="chat", messages=MESSAGES,
                                                                            max_tokens=2)
        assert first.headers["x-switchyard-backend"] == "local"

        async def direct() -> None:  # other traffic on the same GPU, straight to llama.cpp
            async with http.post(llamacpp_one_slot + "/chat/completions", json=body) as r:
                assert r.status == 200
                await r.read()

        burst = [asyncio.create_task(direct()) for _ in range(3)]
        try:
            busy = await _until(http, url, lambda s: (s["queue"] or 0) >= 2)
            assert busy["queue"] >= 2
            spilled = await client(url).chat.completions.with_raw_response.create(
                model="chat", messages=MESSAGES, max_tokens=2)
            assert spilled.headers["x-switchyard-backend"] == "cloud"
            assert spilled.headers["x-switchyard-rule"] == "spill-when-busy"
            assert len(cloud.calls("/v1/chat/completions")) == 1
            backends = (await (await http.get(url + "/admin/backends")).json())
            assert backends["spilling"] == ["local"]
        finally:
            await asyncio.gather(*burst)
        await _until(http, url, lambda s: s["queue"] == 0 and s["running"] == 0)
        back = await client(url).chat.completions.with_raw_response.create(model="chat", messages=MESSAGES,
                                                                           max_tokens=2)
        assert back.headers["x-switchyard-backend"] == "local"
        assert len(cloud.calls("/v1/chat/completions")) == 1
