"""Resilience, row by row (issue: retries, timeouts, circuit breakers, stream recovery).

Every test goes through the running gateway with the official ``openai`` SDK (or raw
HTTP where the exact SSE bytes matter), against fake upstreams that inject the fault
and log every attempt (arrival times included). Each test runs under a hard deadline
so that a hang fails it instead of stalling the suite.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import openai
import orjson
import pytest

from tests.e2e.test_gateway_sdk import MESSAGES, client, policy
from tests.fakes.faults import Fault
from tests.fakes.openai_upstream import FakeOpenAI

DEADLINE_S = 15
FAST = "{connect_s: 1, first_token_s: 0.5, idle_s: 0.5, total_s: 1}"
CHAT = "/v1/chat/completions"


def spec(fake: FakeOpenAI, kind: str = "vllm", timeouts: str = "{connect_s: 1, first_token_s: 3, idle_s: 3, total_s: 5}",
         retry: str = "{attempts: 2, backoff_base_s: 0.05, backoff_max_s: 0.2}", extra: str = "") -> str:
    return (f"{{kind: {kind}, base_url: '{fake.base_url}', model: served, timeouts: {timeouts}, "
            f"retry: {retry}{', ' + extra if extra else ''}}}")


async def two(gateway, a: str, b: str) -> str:
    return await gateway(policy(("a", a), ("b", b), aliases={"chat": ["a", "b"]}))


async def chat(url: str, stream: bool, **kw) -> tuple[str, dict[str, str], str]:
    """(backend header, headers, text) for one request, streamed or not."""
    c = client(url)
    if not stream:
        raw = await c.chat.completions.with_raw_response.create(model="chat", messages=MESSAGES, **kw)
        return raw.headers["x-switchyard-backend"], dict(raw.headers), raw.parse().choices[0].message.content
    async with c.chat.completions.with_streaming_response.create(model="chat", messages=MESSAGES, stream=True,
                                                                 **kw) as resp:
        text = "".join([ch.choices[0].delta.content or "" async for ch in await resp.parse() if ch.choices])
        return resp.headers["x-switchyard-backend"], dict(resp.headers), text


def gaps(fake: FakeOpenAI) -> list[float]:
    times = [r.at for r in fake.calls(CHAT)]
    return [b - a for a, b in zip(times, times[1:], strict=False)]


async def sse(url: str, body: dict) -> list[bytes]:
    async with aiohttp.ClientSession() as http, http.post(url + CHAT, json=body) as resp:
        assert resp.status == 200
        raw = await resp.read()
    return [e for e in raw.split(b"\n\n") if e.strip()]


@pytest.fixture(autouse=True)
async def _deadline():
    async with asyncio.timeout(DEADLINE_S):
        yield


@pytest.fixture
async def fake_c(stack) -> FakeOpenAI:
    return await stack.enter_async_context(FakeOpenAI(name="third", model_name="fake-third"))


# -- 429 -------------------------------------------------------------------------------------
@pytest.mark.parametrize("stream", [False, True])
async def test_429_with_retry_after_waits_then_retries_same_backend(gateway, fake_openai, fake_openai_b, stream):
    fake_openai.faults.push(Fault(status=429, retry_after=1))
    url = await two(gateway, spec(fake_openai), spec(fake_openai_b))
    backend, _, text = await chat(url, stream)
    assert backend == "a" and text == fake_openai.reply_text
    assert len(fake_openai.calls(CHAT)) == 2 and fake_openai_b.received == []
    assert gaps(fake_openai)[0] >= 0.95  # never sooner than Retry-After


async def test_429_with_retry_after_over_the_cap_fails_over_at_once(gateway, fake_openai, fake_openai_b):
    fake_openai.faults.always(Fault(status=429, retry_after=30))
    url = await two(gateway, spec(fake_openai, retry="{attempts: 3, max_retry_after_s: 2}"), spec(fake_openai_b))
    started = time.monotonic()
    backend, _, _ = await chat(url, False)
    assert backend == "b" and len(fake_openai.calls(CHAT)) == 1
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("stream", [False, True])
async def test_429_without_retry_after_backs_off_exponentially_then_fails_over(gateway, fake_openai, fake_openai_b,
                                                                               stream):
    fake_openai.faults.always(Fault(status=429))
    url = await two(gateway, spec(fake_openai, retry="{attempts: 3, backoff_base_s: 0.1, backoff_max_s: 1}"),
                    spec(fake_openai_b))
    backend, headers, _ = await chat(url, stream)
    assert backend == "b" and headers["x-switchyard-tried"] == "a"
    assert len(fake_openai.calls(CHAT)) == 3  # bounded
    first, second = gaps(fake_openai)
    assert first >= 0.1 and second >= 0.2  # base·2^n, never a tight loop
    assert first <= 0.5 and second <= 0.8  # base·2^n + jitter ≤ base


# -- 5xx ------------------------------------------------------------------------------------
@pytest.mark.parametrize("stream", [False, True])
async def test_500_once_is_retried_on_the_same_backend(gateway, fake_openai, fake_openai_b, stream):
    fake_openai.faults.push(Fault(status=500))
    url = await two(gateway, spec(fake_openai), spec(fake_openai_b))
    backend, headers, text = await chat(url, stream)
    assert backend == "a" and text == fake_openai.reply_text
    assert len(fake_openai.calls(CHAT)) == 2 and fake_openai_b.received == []
    assert headers["x-switchyard-tried"] == "a"  # the failed first attempt is reported


@pytest.mark.parametrize("stream", [False, True])
async def test_503_every_time_fails_over_then_reports_every_backend(gateway, fake_openai, fake_openai_b, stream):
    fake_openai.faults.always(Fault(status=503, message="a is overloaded"))
    fake_openai_b.faults.always(Fault(status=503, message="b is overloaded"))
    url = await two(gateway, spec(fake_openai), spec(fake_openai_b))
    with pytest.raises(openai.APIStatusError) as info:
        await chat(url, stream)
    assert info.value.status_code == 503
    assert "a is overloaded" in info.value.body["message"] and "b is overloaded" in info.value.body["message"]
    assert info.value.response.headers["x-switchyard-tried"] == "a,b"
    assert len(fake_openai.calls(CHAT)) == 2 and len(fake_openai_b.calls(CHAT)) == 2  # within the budget


# -- connection-level ------------------------------------------------------------------------
@pytest.mark.parametrize("stream", [False, True])
async def test_connection_reset_before_any_byte_is_retried(gateway, fake_openai, fake_openai_b, stream):
    fake_openai.faults.push(Fault(reset=True))
    url = await two(gateway, spec(fake_openai), spec(fake_openai_b))
    backend, _, text = await chat(url, stream)
    assert backend == "a" and text == fake_openai.reply_text and len(fake_openai.calls(CHAT)) == 2


@pytest.mark.parametrize("stream", [False, True])
async def test_silent_backend_times_out_and_is_not_retried_on_itself(gateway, fake_openai, fake_openai_b, stream):
    fake_openai.faults.always(Fault(hang=True))
    url = await two(gateway, spec(fake_openai, timeouts=FAST, retry="{attempts: 3}"), spec(fake_openai_b))
    started = time.monotonic()
    backend, _, _ = await chat(url, stream)
    assert backend == "b" and len(fake_openai.calls(CHAT)) == 1
    assert time.monotonic() - started < 3


async def test_late_first_token_fails_over_at_the_ttft_limit(gateway, fake_openai, fake_openai_b):
    fake_openai.faults.always(Fault(headers_then_stall_s=10))
    url = await two(gateway, spec(fake_openai, timeouts=FAST), spec(fake_openai_b))
    started = time.monotonic()
    backend, _, text = await chat(url, True)
    assert backend == "b" and text == fake_openai_b.reply_text
    assert 0.45 <= time.monotonic() - started < 3
    assert len(fake_openai.calls(CHAT)) == 1


# -- mid-stream ------------------------------------------------------------------------------
def _chunks(events: list[bytes]) -> list[dict]:
    return [orjson.loads(e[5:]) for e in events if e.startswith(b"data: {")]


@pytest.mark.parametrize("prefill", ["continue", "echo"])
async def test_cut_stream_is_continued_on_a_prefill_target(gateway, stack, fake_openai, prefill):
    fake_b = await stack.enter_async_context(FakeOpenAI(name="b", model_name="fake-b", prefill=prefill))
    fake_openai.faults.always(Fault(cut_after_chunks=2))
    url = await two(gateway, spec(fake_openai), spec(fake_b, kind="llamacpp"))
    events = await sse(url, {"model": "chat", "messages": MESSAGES, "stream": True, "max_tokens": 50,
                             "stream_options": {"include_usage": True}})
    chunks = _chunks(events)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == fake_openai.reply_text  # nothing missing, nothing repeated
    assert len({c["id"] for c in chunks}) == 1
    assert events[-1] == b"data: [DONE]"
    usage = chunks[-1]["usage"]
    assert usage["completion_tokens"] == len(fake_openai.reply_text.split())  # 2 before + 3 after
    assert chunks[-1]["switchyard"]["recovered"][0]["broken"] == "a"
    assert chunks[-1]["switchyard"]["recovered"][0]["continued_by"] == "b"
    state = await _admin(url)
    assert state["a"]["circuit"]["streams"] == {"broken": 1} and state["b"]["circuit"]["streams"] == {"continued": 1}
    sent = fake_b.calls(CHAT)[0].body
    assert sent["messages"][-1] == {"role": "assistant", "content": "Hello from"}
    assert sent["max_tokens"] == 48


async def test_cut_stream_through_the_sdk_reads_as_one_answer(gateway, stack, fake_openai):
    fake_b = await stack.enter_async_context(FakeOpenAI(name="b", model_name="fake-b", prefill="echo"))
    fake_openai.faults.always(Fault(cut_after_chunks=1))
    url = await two(gateway, spec(fake_openai), spec(fake_b, kind="llamacpp"))
    backend, _, text = await chat(url, True)
    assert backend == "a"  # the header names where the stream started
    assert text == fake_openai.reply_text


async def test_vllm_continuation_asks_for_continue_final_message(gateway, stack, fake_openai):
    fake_b = await stack.enter_async_context(FakeOpenAI(name="b", model_name="fake-b"))
    fake_openai.faults.always(Fault(cut_after_chunks=2))
    url = await two(gateway, spec(fake_openai, kind="openai_compatible"), spec(fake_b, kind="vllm"))
    _, _, text = await chat(url, True)
    assert text == fake_openai.reply_text
    sent = fake_b.calls(CHAT)[0].body
    assert sent["continue_final_message"] is True and sent["add_generation_prompt"] is False


async def test_cut_stream_with_no_prefill_target_ends_with_error_event(gateway, fake_openai, fake_openai_b):
    fake_openai.faults.always(Fault(cut_after_chunks=2))
    url = await two(gateway, spec(fake_openai), spec(fake_openai_b, kind="openai_compatible"))
    events = await sse(url, {"model": "chat", "messages": MESSAGES, "stream": True})
    error = orjson.loads(events[-2][5:])["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert "b: does not support prefill" in error["message"]
    assert events[-1] == b"data: [DONE]"
    assert not any(c["choices"][0].get("finish_reason") for c in _chunks(events[:-2]) if c.get("choices"))
    assert fake_openai_b.received == []
    with pytest.raises(openai.APIError):  # the SDK surfaces it as an error, not a finished answer
        await chat(url, True)


async def test_prefill_refusal_does_not_mask_the_real_failure(gateway, fake_openai, fake_openai_b):
    fake_openai.faults.always(Fault(cut_after_chunks=2))
    fake_openai_b.faults.always(Fault(status=400, message="assistant prefill is not supported"))
    url = await two(gateway, spec(fake_openai), spec(fake_openai_b, kind="openai_compatible",
                                                     extra="supports_prefill: true"))
    events = await sse(url, {"model": "chat", "messages": MESSAGES, "stream": True})
    message = orjson.loads(events[-2][5:])["error"]["message"]
    real, _, recovery = message.partition("; the answer could not be continued")
    assert real.startswith("a ") and ("stream failed" in real or "before it was complete" in real)
    assert "b: assistant prefill is not supported" in recovery
    assert events[-1] == b"data: [DONE]"


async def test_silent_stream_is_detected_and_recovered_and_gateway_stays_healthy(gateway, stack, fake_openai):
    fake_b = await stack.enter_async_context(FakeOpenAI(name="b", model_name="fake-b"))
    fake_openai.faults.push(Fault(stall_after_chunks=2))
    url = await two(gateway, spec(fake_openai, timeouts=FAST), spec(fake_b, kind="llamacpp"))
    started = time.monotonic()
    _, _, text = await chat(url, True)
    assert text == fake_openai.reply_text and time.monotonic() - started < 3
    async with aiohttp.ClientSession() as http, http.get(url + "/healthz") as r:
        assert r.status == 200
    backend, _, text = await chat(url, True)  # and serves normally afterwards
    assert backend == "a" and text == fake_openai.reply_text


async def test_one_malformed_event_is_skipped(gateway, fake_openai):
    fake_openai.faults.always(Fault(malformed_after_chunks=2))
    url = await gateway(policy(("a", spec(fake_openai))))
    _, _, text = await chat(url, True)
    assert text == fake_openai.reply_text  # the SDK never saw the broken event
    events = await sse(url, {"model": "chat", "messages": MESSAGES, "stream": True})
    assert all(e == b"data: [DONE]" or orjson.loads(e[5:]) for e in events)
    assert (await _admin(url))["a"]["circuit"]["streams"] == {"malformed_events": 2}  # logged and counted


async def test_complete_stream_without_done_is_finalised_promptly_with_usage(gateway, fake_openai):
    fake_openai.faults.always(Fault(no_done=True, linger=True))  # and the connection stays open
    url = await gateway(policy(("a", spec(fake_openai, timeouts="{idle_s: 10, first_token_s: 10}"))))
    started = time.monotonic()
    events = await sse(url, {"model": "chat", "messages": MESSAGES, "stream": True,
                             "stream_options": {"include_usage": True}})
    assert time.monotonic() - started < 2  # not the 10 s idle limit
    assert events[-1] == b"data: [DONE]"
    assert _chunks(events)[-1]["usage"]["completion_tokens"] == len(fake_openai.reply_text.split())


# -- 400s -----------------------------------------------------------------------------------
async def test_context_length_fails_over_only_to_a_larger_window(gateway, fake_openai, fake_openai_b, fake_c):
    fake_openai.faults.always(Fault(status=400, error_type="context_length_exceeded"))
    url = await gateway(policy(("a", spec(fake_openai, extra="context_window: 8192")),
                               ("small", spec(fake_openai_b, extra="context_window: 4096")),
                               ("big", spec(fake_c, extra="context_window: 128000")),
                               aliases={"chat": ["a", "small", "big"]}))
    backend, _, _ = await chat(url, False)
    assert backend == "big"
    assert len(fake_openai.calls(CHAT)) == 1 and fake_openai_b.received == []  # not retried, small skipped


async def test_context_length_without_a_larger_window_is_a_clean_400(gateway, fake_openai, fake_openai_b):
    fake_openai.faults.always(Fault(status=400, error_type="context_length_exceeded"))
    url = await two(gateway, spec(fake_openai), spec(fake_openai_b))
    with pytest.raises(openai.BadRequestError) as info:
        await chat(url, False)
    assert info.value.body["code"] == "context_length_exceeded"
    assert len(fake_openai.calls(CHAT)) == 1 and fake_openai_b.received == []


@pytest.mark.parametrize("stream", [False, True])
async def test_content_policy_rejection_is_not_retried(gateway, fake_openai, fake_openai_b, stream):
    fake_openai.faults.always(Fault(status=400, error_type="content_policy_violation",
                                    message="Your request was rejected by the safety system."))
    url = await two(gateway, spec(fake_openai), spec(fake_openai_b))
    with pytest.raises(openai.BadRequestError) as info:
        await chat(url, stream)
    assert "safety system" in info.value.body["message"]
    assert len(fake_openai.calls(CHAT)) == 1 and fake_openai_b.received == []


# -- circuit breaker -------------------------------------------------------------------------
async def test_circuit_opens_serves_from_fallback_then_probes_and_closes(gateway, fake_openai, fake_openai_b):
    """Down for a while under steady traffic: after `failures` failures the dead backend is
    skipped without being touched; after the cooldown one request probes it; once it answers,
    traffic returns to it."""
    fake_openai.faults.always(Fault(status=503))
    cooldown = 0.6
    url = await two(gateway, spec(fake_openai, retry="{attempts: 1}",
                                  extra=f"circuit: {{failures: 3, window_s: 10, cooldown_s: {cooldown}}}"),
                    spec(fake_openai_b))
    for _ in range(10):
        assert (await chat(url, False))[0] == "b"
    assert len(fake_openai.calls(CHAT)) == 3  # opened after 3; 7 requests never touched it
    state = await _admin(url)
    assert state["a"]["circuit"]["state"] == "open" and state["a"]["circuit"]["skipped"] == 7

    await asyncio.sleep(cooldown)  # the cooldown is the behaviour under test
    assert (await chat(url, False))[0] == "b"  # half-open probe fails: open again
    assert len(fake_openai.calls(CHAT)) == 4
    assert (await _admin(url))["a"]["circuit"]["state"] == "open"

    fake_openai.faults.always(None)  # the backend recovers
    await asyncio.sleep(cooldown)
    results = await asyncio.gather(*(chat(url, False) for _ in range(3)))
    assert sorted(r[0] for r in results).count("a") >= 1  # one probe let through and it succeeded
    assert len(fake_openai.calls(CHAT)) == 5  # exactly one probe while half-open
    assert (await _admin(url))["a"]["circuit"]["state"] == "closed"
    for _ in range(3):
        assert (await chat(url, False))[0] == "a"  # traffic is back


async def _admin(url: str) -> dict:
    async with aiohttp.ClientSession() as http, http.get(url + "/admin/backends") as r:
        assert r.status == 200
        return (await r.json())["backends"]


async def test_fallback_answer_names_the_fallback_model(gateway, fake_openai, fake_openai_b):
    fake_openai.faults.always(Fault(status=502))
    url = await two(gateway, spec(fake_openai), spec(fake_openai_b))
    raw = await client(url).chat.completions.with_raw_response.create(model="chat", messages=MESSAGES)
    result = raw.parse()
    assert raw.headers["x-switchyard-backend"] == "b"
    assert result.model == "fake-secondary"
    assert result.usage.completion_tokens == len(fake_openai_b.reply_text.split())


# -- closed providers (litellm) --------------------------------------------------------------
def claude_spec(fake, retry: str = "{attempts: 2, backoff_base_s: 0.05}") -> str:
    return (f"{{kind: anthropic, base_url: '{fake.base_url}', model: claude-sonnet-4-5, api_key: sk-ant-test, "
            f"retry: {retry}, timeouts: {{connect_s: 1, first_token_s: 3, idle_s: 3, total_s: 5}}}}")


@pytest.mark.parametrize("stream", [False, True])
async def test_anthropic_429_retry_after_is_honoured(gateway, fake_anthropic, fake_openai, stream):
    fake_anthropic.faults.push(Fault(status=429, error_type="rate_limit_error", retry_after=1))
    url = await two(gateway, claude_spec(fake_anthropic), spec(fake_openai))
    backend, _, text = await chat(url, stream, max_tokens=64)
    assert backend == "a" and text == fake_anthropic.reply_text
    times = [r.at for r in fake_anthropic.calls("/v1/messages")]
    assert len(times) == 2 and times[1] - times[0] >= 0.95


@pytest.mark.parametrize("stream", [False, True])
async def test_anthropic_overloaded_every_time_fails_over(gateway, fake_anthropic, fake_openai, stream):
    fake_anthropic.faults.always(Fault(status=529, error_type="overloaded_error"))
    url = await two(gateway, claude_spec(fake_anthropic), spec(fake_openai))
    backend, headers, _ = await chat(url, stream, max_tokens=64)
    assert backend == "b" and headers["x-switchyard-tried"] == "a"
    assert len(fake_anthropic.calls("/v1/messages")) == 2


async def test_anthropic_cut_stream_is_continued_on_local(gateway, stack, fake_anthropic):
    local = await stack.enter_async_context(FakeOpenAI(name="local", model_name="fake-local", prefill="echo",
                                                       reply_text=fake_anthropic.reply_text))
    fake_anthropic.faults.always(Fault(cut_after_chunks=2))
    url = await two(gateway, claude_spec(fake_anthropic), spec(local, kind="llamacpp"))
    _, _, text = await chat(url, True, max_tokens=64)
    assert text == fake_anthropic.reply_text


async def test_local_cut_stream_is_continued_on_anthropic_prefill(gateway, fake_openai, fake_anthropic):
    fake_openai.faults.always(Fault(cut_after_chunks=2))
    fake_anthropic.reply_text = fake_openai.reply_text
    url = await two(gateway, spec(fake_openai), claude_spec(fake_anthropic))
    events = await sse(url, {"model": "chat", "messages": MESSAGES, "stream": True, "max_tokens": 64,
                             "stream_options": {"include_usage": True}})
    chunks = _chunks(events)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == fake_openai.reply_text
    assert chunks[-1]["switchyard"]["recovered"][0]["continued_by"] == "b"
    sent = fake_anthropic.calls("/v1/messages")[0].body
    assert sent["messages"][-1]["role"] == "assistant"  # litellm sends the prefill as Anthropic expects

