"""Hedging through the running gateway (official openai SDK): a request that may leave and
whose self-hosted target has produced nothing ``hedge.after_s`` in gets the closed target
started alongside; the first answer wins, the slow attempt is cancelled and its input tokens
billed; a request that must stay home is never hedged; without a hedge the slow target is
simply waited for. Metrics count the hedges."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import openai
import pytest

from tests.fakes.faults import Fault
from tests.fakes.openai_upstream import FakeOpenAI

CHAT = "/v1/chat/completions"
CARD = "my card is 4111 1111 1111 1111"


def policy(gpu: FakeOpenAI, cloud: FakeOpenAI, hedge: str = "hedge: {after_s: 0.3}") -> str:
    return f"""
version: 1
backends:
  gpu: {{kind: vllm, base_url: '{gpu.base_url}', model: served, price: {{gpu_hour_usd: 36, tokens_per_s: 1000}},
         timeouts: {{first_token_s: 20}}}}
  cloud: {{kind: openai, base_url: '{cloud.base_url}', model: gpt-4o-mini, api_key: sk-cloud,
           price: {{input_per_mtok_usd: 1.0, output_per_mtok_usd: 2.0}}}}
models:
  chat: {{targets: [gpu, cloud], {hedge}}}
"""


def client(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=15)


async def ask(url: str, content: str = "hi") -> Any:
    """One short non-streamed request; the raw response (its headers say who answered)."""
    return await client(url).chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": content}], max_tokens=8)


@pytest.fixture
async def upstreams(stack) -> tuple[FakeOpenAI, FakeOpenAI]:
    gpu = await stack.enter_async_context(FakeOpenAI(name="gpu", model_name="served"))
    cloud = await stack.enter_async_context(FakeOpenAI(name="cloud", model_name="gpt-4o-mini", api_key="sk-cloud"))
    return gpu, cloud


@pytest.mark.parametrize("stream", [False, True])
async def test_a_slow_first_target_is_hedged_and_the_first_answer_wins(gateway, upstreams, stream: bool) -> None:
    gpu, cloud = upstreams
    url = await gateway(policy(gpu, cloud))
    gpu.faults.push(Fault(delay_s=10))
    started = time.monotonic()
    raw = await client(url).chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": "hello " * 100}], max_tokens=8, stream=stream)
    if stream:
        async for _ in raw.parse():
            pass
    assert time.monotonic() - started < 5  # not the gpu's 10 s
    assert raw.headers["x-switchyard-backend"] == "cloud"
    assert len(gpu.calls(CHAT)) == 1 and len(cloud.calls(CHAT)) == 1  # both ran
    async with aiohttp.ClientSession() as http, http.get(url + "/metrics") as r:
        metrics = await r.text()
    assert 'switchyard_hedges_total{switchyard_backend="gpu",switchyard_hedge="won"} 1.0' in metrics
    if not stream:  # the cancelled gpu attempt's input tokens are billed on top of the answer
        usage = raw.parse().usage
        assert usage is not None
        answered = (usage.prompt_tokens * 1.0 + usage.completion_tokens * 2.0) / 1e6
        gpu_input = float(raw.headers["x-switchyard-cost-usd"]) - answered
        assert 100 * 1e-5 < gpu_input < 400 * 1e-5  # ~150 tokens estimated, at $36/h for 1,000 tokens/s


async def test_a_fast_first_target_is_not_hedged(gateway, upstreams) -> None:
    gpu, cloud = upstreams
    url = await gateway(policy(gpu, cloud, "hedge: {after_s: 5}"))
    raw = await ask(url)
    assert raw.headers["x-switchyard-backend"] == "gpu" and not cloud.calls(CHAT)


async def test_a_request_that_must_stay_home_is_never_hedged(gateway, upstreams) -> None:
    gpu, cloud = upstreams
    url = await gateway(policy(gpu, cloud))
    gpu.faults.push(Fault(delay_s=1.0))
    raw = await ask(url, CARD)
    assert raw.headers["x-switchyard-backend"] == "gpu" and raw.headers["x-switchyard-sensitivity"] == "restricted"
    assert not cloud.calls(CHAT)  # waited for the gpu: the card number never left


async def test_without_a_hedge_the_slow_target_is_waited_for(gateway, upstreams) -> None:
    gpu, cloud = upstreams
    url = await gateway(policy(gpu, cloud, "description: no hedge"))
    gpu.faults.push(Fault(delay_s=1.0))
    raw = await ask(url)
    assert raw.headers["x-switchyard-backend"] == "gpu" and not cloud.calls(CHAT)


async def test_a_hedge_that_fails_leaves_the_first_target_to_answer(gateway, upstreams) -> None:
    gpu, cloud = upstreams
    url = await gateway(policy(gpu, cloud))
    gpu.faults.push(Fault(delay_s=1.0))
    cloud.faults.always(Fault(status=503))
    raw = await ask(url)
    assert raw.headers["x-switchyard-backend"] == "gpu" and cloud.calls(CHAT)


async def test_explain_shows_predictions_and_metrics_calibrate_them(gateway, upstreams) -> None:
    gpu, cloud = upstreams
    text = policy(gpu, cloud, "slo: {ttft_s: 2.0}").replace(
        "timeouts: {first_token_s: 20}}", "timeouts: {first_token_s: 20}, capacity: {slots: 2, reserved_slots: 1}}")
    url = await gateway(text)
    body = {"model": "chat", "messages": [{"role": "user", "content": "hello " * 400}], "max_tokens": 8}
    async with aiohttp.ClientSession() as http:
        async with http.post(url + "/v1/route/explain", json=body) as r:
            explained = await r.json()
        assert explained["decision"]["slo"] == {"ttft_s": 2.0} and explained["decision"]["late"] == {}
        gpu_candidate = next(c for c in explained["candidates"] if c["backend"] == "gpu")
        prediction = gpu_candidate["prediction"]
        assert prediction["basis"] == "configured" and prediction["slots"] == 1 and prediction["ahead"] == 0
        assert prediction["ttft_s"] == pytest.approx(600 / 2000, rel=0.2)  # ~600 tokens at the default 2,000/s
        for _ in range(3):
            stream = await client(url).chat.completions.create(**body, stream=True,
                                                                stream_options={"include_usage": True})
            async for _ in stream:
                pass
        def counted(metrics: str) -> float:
            return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                       if line.startswith("switchyard_prediction_error_seconds_count{")
                       and 'switchyard_backend="gpu"' in line and 'switchyard_predicted="ttft"' in line)

        for _ in range(100):  # a stream is recorded when its handler ends, just after the client has read it all
            async with http.get(url + "/metrics") as r:
                metrics = await r.text()
            if counted(metrics) == 3:
                break
            await asyncio.sleep(0.05)
        assert counted(metrics) == 3, [line for line in metrics.splitlines() if "prediction_error_seconds_c" in line]
        async with http.post(url + "/v1/route/explain", json=body) as r:
            observed = next(c for c in (await r.json())["candidates"] if c["backend"] == "gpu")["prediction"]
        assert observed["basis"] == "observed"  # the gateway's own measurements of the fake replaced the defaults


async def test_a_failover_is_not_a_hedge(gateway, upstreams) -> None:
    gpu, cloud = upstreams
    url = await gateway(policy(gpu, cloud).replace("timeouts: {first_token_s: 20}", "retry: {attempts: 1}"))
    gpu.faults.push(Fault(status=503))
    raw = await ask(url)
    assert raw.headers["x-switchyard-backend"] == "cloud" and raw.headers["x-switchyard-tried"] == "gpu"
    async with aiohttp.ClientSession() as http, http.get(url + "/metrics") as r:
        assert "switchyard_hedges_total{" not in await r.text()
