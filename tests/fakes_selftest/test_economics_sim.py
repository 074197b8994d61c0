"""The simulators and workload of ``bench/economics.py`` (issue 15), checked on their own: the
GPU queues past its slots and says so in vLLM's ``/metrics`` as the gateway parses them; the
closed provider rate-limits, checks its key and bills from its own log; the workload is
deterministic for a seed and its sensitive prompts are the ones the gateway's scanner flags
(and its planner keeps home)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import openai
import orjson
import pytest

from backends.metrics import load_sample
from bench.economics_sim import (
    ClosedSpec,
    GpuSpec,
    SimClosed,
    SimGPU,
    WorkloadSpec,
    answer_text,
    prompt_tokens,
    workload,
)
from policies import Planner, load_policy
from policies.sensitivity import Scanner
from router.body import parse_body
from router.facts import build_facts
from router.runtime import KIND_TABLE

SHIPPED = Path(__file__).resolve().parents[2] / "policies" / "burst-spillover.yaml"
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Summarise the weekly report."}]
FAST_GPU = GpuSpec(slots=2, prefill_tps=1e6, decode_tps=100.0, batch_slowdown=0.0)
FAST_CLOSED = ClosedSpec(ttft_s=0.01, ttft_jitter_s=0.0, tokens_per_s=2000.0, rpm=2)


async def _post(http: aiohttp.ClientSession, url: str, body: dict[str, object], **kw: object) -> tuple[float, float]:
    """(seconds to the first body byte, seconds to the end) of one request."""
    started = time.monotonic()
    async with http.post(url + "/chat/completions", json=body, **kw) as resp:  # type: ignore[arg-type]
        assert resp.status == 200, await resp.text()
        await resp.content.readany()
        first = time.monotonic() - started
        await resp.read()
    return first, time.monotonic() - started


def _gateway_estimate(body: dict[str, object]) -> int:
    loaded = load_policy(SHIPPED, {"OPENAI_API_KEY": "sk-test"}, kinds=KIND_TABLE)
    facts, _ = build_facts(parse_body(orjson.dumps(body), "chat"), "chat", {}, Scanner(loaded.policy.sensitivity),
                           loaded.policy.settings)
    return facts.input_tokens


async def test_gpu_queues_past_its_slots_and_exports_it_as_vllm_does() -> None:
    async with SimGPU(FAST_GPU) as gpu, aiohttp.ClientSession() as http:
        body = {"model": "m", "messages": MESSAGES, "max_tokens": 20}  # 0.2 s of decode each
        jobs = [asyncio.create_task(_post(http, gpu.base_url, body)) for _ in range(3)]
        await asyncio.sleep(0.1)
        async with http.get(gpu.base_url.removesuffix("/v1") + "/metrics") as resp:
            sample = load_sample("vllm", await resp.text())
        assert (sample.queue, sample.running) == (1, 2)
        assert sample.kv_cache is not None and 0 < sample.kv_cache < 1
        times = await asyncio.gather(*jobs)
    third = gpu.log[2]
    assert third.start is not None and third.first_token is not None
    assert third.start - third.arrival >= 0.15  # waited for a slot: one whole answer
    assert max(total for _, total in times) >= 0.35 > min(total for _, total in times)
    assert [r.completion_tokens for r in gpu.log] == [20, 20, 20] and all(r.served for r in gpu.log)
    assert gpu.busy_slot_seconds() == pytest.approx(0.6, abs=0.15)


async def test_a_client_that_leaves_the_queue_gives_its_place_up() -> None:
    async with SimGPU(GpuSpec(slots=1, prefill_tps=1e6, decode_tps=100.0)) as gpu, \
            aiohttp.ClientSession() as http:
        long = asyncio.create_task(_post(http, gpu.base_url, {"messages": MESSAGES, "max_tokens": 30}))
        await asyncio.sleep(0.05)
        with pytest.raises(TimeoutError):
            await _post(http, gpu.base_url, {"messages": MESSAGES, "max_tokens": 5},
                        timeout=aiohttp.ClientTimeout(total=0.1))
        _, waited = await _post(http, gpu.base_url, {"messages": MESSAGES, "max_tokens": 1})
        await long
        assert gpu.waiting == 0 and gpu.running == []
    gone = gpu.log[1]
    assert gone.cancelled and gone.start is None and not gone.served
    assert waited < 0.4  # behind the long answer only, not also behind the one that left


async def test_gpu_speaks_openai_streaming_with_usage_and_the_gateways_token_estimate() -> None:
    async with SimGPU(FAST_GPU) as gpu:
        client = openai.AsyncOpenAI(base_url=gpu.base_url, api_key="unused", max_retries=0)
        stream = await client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=12,  # type: ignore[arg-type]
                                                      stream=True, stream_options={"include_usage": True})
        chunks = [c async for c in stream]
        models = await client.models.list()
        await client.close()
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == answer_text(0, 12)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None and usage.completion_tokens == 12
    body = {"model": "chat", "messages": MESSAGES, "max_tokens": 12}
    assert usage.prompt_tokens == prompt_tokens(body) == _gateway_estimate(body)
    assert len(answer_text(0, 12)) == 12 * 4
    assert [m.id for m in models.data] == [GpuSpec().model]


async def test_closed_checks_its_key_rate_limits_and_bills_from_its_log() -> None:
    spec = FAST_CLOSED
    async with SimClosed(spec, seed=1) as closed:
        wrong = openai.AsyncOpenAI(base_url=closed.base_url, api_key="sk-wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            await wrong.chat.completions.create(model="gpt-4o", messages=MESSAGES)  # type: ignore[arg-type]
        await wrong.close()
        client = openai.AsyncOpenAI(base_url=closed.base_url, api_key=spec.api_key, max_retries=0)
        done = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=7)  # type: ignore[arg-type]
        stream = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=9,  # type: ignore[arg-type]
                                                      stream=True)
        assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices]) == answer_text(0, 9)
        with pytest.raises(openai.RateLimitError) as refused:
            await client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=3)  # type: ignore[arg-type]
        await client.close()
    assert done.choices[0].message.content == answer_text(0, 7) and done.usage is not None
    error = refused.value
    assert error.status_code == 429 and error.code == "rate_limit_exceeded"
    assert int(error.response.headers["retry-after"]) >= 59 and error.response.headers["retry-after-ms"]
    assert [r.status for r in closed.log] == [401, 200, 200, 429]
    prompt = prompt_tokens({"messages": MESSAGES})
    billed = (2 * prompt * spec.input_per_mtok_usd + (7 + 9) * spec.output_per_mtok_usd) / 1e6
    assert closed.cost_usd() == pytest.approx(billed)
    assert closed.log[0].cost_usd == closed.log[3].cost_usd == 0  # refused: not billed


def test_workload_is_deterministic_for_a_seed_and_shaped_as_asked() -> None:
    spec = WorkloadSpec(duration_s=600.0, base_rate=2.0)
    jobs = workload(spec, 7)
    assert jobs == workload(spec, 7) and jobs != workload(spec, 8)
    assert [j.n for j in jobs] == list(range(len(jobs))) and all(0 <= j.at < 600 for j in jobs)
    assert len({j.marker for j in jobs}) == len(jobs)
    burst = sum(j.at % 30 >= 20 for j in jobs) / 200  # per second of burst, then of quiet
    quiet = sum(j.at % 30 < 20 for j in jobs) / 400
    assert 2.4 < burst / quiet < 3.6
    assert abs(len(jobs) / 600 - spec.mean_rate) < 0.2
    assert 0.15 < sum(j.sensitive for j in jobs) / len(jobs) < 0.25
    assert 0.55 < sum(j.stream for j in jobs) / len(jobs) < 0.65
    assert all(4 <= j.max_tokens <= spec.output_max and j.prompt_tokens <= spec.prompt_max + 1 for j in jobs)
    median = sorted(j.prompt_tokens for j in jobs)[len(jobs) // 2]
    assert 0.8 * spec.prompt_median < median < 1.2 * spec.prompt_median


def test_sensitive_jobs_are_the_ones_the_gateway_flags_and_keeps_home() -> None:
    loaded = load_policy(SHIPPED, {"OPENAI_API_KEY": "sk-test"}, kinds=KIND_TABLE)
    scanner, planner = Scanner(loaded.policy.sensitivity), Planner(loaded)
    jobs = workload(WorkloadSpec(duration_s=60.0), 3)
    assert any(j.sensitive for j in jobs) and not all(j.sensitive for j in jobs)
    for job in jobs:
        body = {"model": "chat", "messages": list(job.messages), "max_tokens": job.max_tokens, "stream": job.stream}
        facts, scan = build_facts(parse_body(orjson.dumps(body), "chat"), "chat", {}, scanner, loaded.policy.settings)
        assert scan.level == ("restricted" if job.sensitive else "public"), (job.n, scan.detectors)
        assert facts.input_tokens == job.prompt_tokens
        plan = planner.plan(facts)
        assert plan.allowed == ({"gpu"} if job.sensitive else {"gpu", "gpt-mini"})
