"""The response cache through the running gateway (openai SDK): exact hits cost $0 and never
reach the upstream, streams replay from the cache, scope per team, Cache-Control, coalescing,
the sensitivity invariant on hits, errors never cached; memory and the real Redis."""

from __future__ import annotations

import asyncio
import secrets

import openai
import pytest

from router.settings import Settings
from tests.fakes.faults import Fault
from tests.fakes.openai_upstream import FakeOpenAI

CHAT = "/v1/chat/completions"


def cache_policy(local_fake, closed_fake=None, scope: str = "team", extra: str = "") -> str:
    closed = (f"  cloud: {{kind: openai, base_url: '{closed_fake.base_url}', model: gpt-4o-mini, api_key: sk-c}}\n"
              if closed_fake else "")
    targets = "[cloud, gpu]" if closed_fake else "[gpu]"
    return f"""
version: 1
backends:
  gpu: {{kind: vllm, base_url: '{local_fake.base_url}', model: m}}
{closed}models:
  chat: {{targets: {targets}}}
teams:
  a: {{keys: ["${{KEY_A}}"]}}
  b: {{keys: ["${{KEY_B}}"]}}
cache: {{mode: exact, ttl_s: 60, scope: {scope}, max_entry_kb: 4}}
{extra}
"""


ENV = {"KEY_A": "sk-a", "KEY_B": "sk-b"}


def client(url: str, key: str = "sk-a", **headers: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=10,
                              default_headers=headers or None)


def fresh() -> list[dict]:
    return [{"role": "user", "content": f"cache test {secrets.token_hex(6)}"}]  # never seen before


@pytest.fixture(autouse=True)
async def _deadline():
    async with asyncio.timeout(20):
        yield


@pytest.mark.parametrize("redis", [False, True], ids=["memory", "redis"])
async def test_exact_hit_costs_nothing_and_skips_the_upstream(gateway, fake_openai, redis):
    settings = Settings(access_log=False, redis_url="redis://127.0.0.1:6379/0" if redis else None)
    url = await gateway(cache_policy(fake_openai), env=ENV, settings=settings)
    messages = fresh()
    first = await client(url).chat.completions.with_raw_response.create(model="chat", messages=messages)
    second = await client(url).chat.completions.with_raw_response.create(model="chat", messages=messages)
    assert first.headers["x-switchyard-cache"] == "miss" and second.headers["x-switchyard-cache"] == "hit"
    assert second.headers["x-switchyard-cost-usd"] == "0.00000000"
    assert second.parse().choices[0].message.content == first.parse().choices[0].message.content
    assert len(fake_openai.calls(CHAT)) == 1
    other = await client(url).chat.completions.with_raw_response.create(model="chat", messages=messages,
                                                                        temperature=0.3)
    assert other.headers["x-switchyard-cache"] == "miss"  # a parameter that changes the output


async def test_a_stream_replays_a_cached_answer_with_usage(gateway, fake_openai):
    url = await gateway(cache_policy(fake_openai), env=ENV)
    messages = fresh()
    await client(url).chat.completions.create(model="chat", messages=messages)
    stream = await client(url).chat.completions.create(model="chat", messages=messages, stream=True,
                                                       stream_options={"include_usage": True})
    chunks = [c async for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == fake_openai.reply_text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert len(fake_openai.calls(CHAT)) == 1


@pytest.mark.parametrize("redis", [False, True], ids=["memory", "redis"])
async def test_a_clean_stream_fills_the_cache(gateway, fake_openai, redis):
    """A streamed answer that finished cleanly, with usage, is stored as its JSON answer:
    the next identical request — streamed or not — is a hit."""
    settings = Settings(access_log=False, redis_url="redis://127.0.0.1:6379/0" if redis else None)
    url = await gateway(cache_policy(fake_openai), env=ENV, settings=settings)
    messages = fresh()
    stream = await client(url).chat.completions.create(model="chat", messages=messages, stream=True,
                                                       stream_options={"include_usage": True})
    streamed = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    raw = await client(url).chat.completions.with_raw_response.create(model="chat", messages=messages)
    answer = raw.parse()
    assert raw.headers["x-switchyard-cache"] == "hit" and raw.headers["x-switchyard-cost-usd"] == "0.00000000"
    assert answer.choices[0].message.content == streamed == fake_openai.reply_text
    assert answer.choices[0].finish_reason == "stop" and answer.usage is not None and answer.usage.total_tokens > 0
    again = await client(url).chat.completions.create(model="chat", messages=messages, stream=True)
    assert "".join([c.choices[0].delta.content or "" async for c in again if c.choices]) == streamed
    assert len(fake_openai.calls(CHAT)) == 1


async def test_streams_that_are_not_clean_do_not_fill_the_cache(gateway, fake_openai):
    url = await gateway(cache_policy(fake_openai), env=ENV)
    no_usage, broken = fresh(), fresh()
    stream = await client(url).chat.completions.create(model="chat", messages=no_usage, stream=True)
    [c async for c in stream]  # no usage asked: nothing to price a hit's replay from
    fake_openai.faults.push(Fault(cut_after_chunks=2))
    stream = await client(url).chat.completions.create(model="chat", messages=broken, stream=True,
                                                       stream_options={"include_usage": True})
    try:
        [c async for c in stream]
    except openai.APIError:
        pass  # a truncated answer ends with an error event
    for messages in (no_usage, broken):
        raw = await client(url).chat.completions.with_raw_response.create(model="chat", messages=messages)
        assert raw.headers["x-switchyard-cache"] == "miss"
    assert len(fake_openai.calls(CHAT)) == 4


async def test_cache_is_per_team_unless_global(gateway, fake_openai):
    url = await gateway(cache_policy(fake_openai), env=ENV)
    messages = fresh()
    await client(url, "sk-a").chat.completions.create(model="chat", messages=messages)
    raw = await client(url, "sk-b").chat.completions.with_raw_response.create(model="chat", messages=messages)
    assert raw.headers["x-switchyard-cache"] == "miss" and len(fake_openai.calls(CHAT)) == 2
    url = await gateway(cache_policy(fake_openai, scope="global"), env=ENV)
    await client(url, "sk-a").chat.completions.create(model="chat", messages=messages)
    raw = await client(url, "sk-b").chat.completions.with_raw_response.create(model="chat", messages=messages)
    assert raw.headers["x-switchyard-cache"] == "hit" and len(fake_openai.calls(CHAT)) == 3


async def test_cache_control_no_store_and_no_cache(gateway, fake_openai):
    url = await gateway(cache_policy(fake_openai), env=ENV)
    messages = fresh()
    raw = await client(url, **{"Cache-Control": "no-store"}).chat.completions.with_raw_response.create(
        model="chat", messages=messages)
    assert raw.headers["x-switchyard-cache"] == "bypass"
    raw = await client(url).chat.completions.with_raw_response.create(model="chat", messages=messages)
    assert raw.headers["x-switchyard-cache"] == "miss"  # nothing was stored by no-store
    raw = await client(url, **{"Cache-Control": "no-cache"}).chat.completions.with_raw_response.create(
        model="chat", messages=messages)
    assert raw.headers["x-switchyard-cache"] == "bypass" and len(fake_openai.calls(CHAT)) == 3


async def test_identical_concurrent_requests_are_coalesced(gateway, fake_openai):
    fake_openai.faults.always(Fault(delay_s=0.3))
    url = await gateway(cache_policy(fake_openai), env=ENV)
    messages = fresh()
    results = await asyncio.gather(*(client(url).chat.completions.with_raw_response.create(
        model="chat", messages=messages) for _ in range(5)))
    assert len(fake_openai.calls(CHAT)) == 1
    assert sorted(r.headers["x-switchyard-cache"] for r in results) == ["hit"] * 4 + ["miss"]
    assert all(r.parse().choices[0].message.content == fake_openai.reply_text for r in results)


async def test_a_hit_never_leaves_the_allowed_set(gateway, fake_openai, stack):
    cloud = await stack.enter_async_context(FakeOpenAI(name="cloud", api_key="sk-c", reply_text="from the cloud"))
    url = await gateway(cache_policy(fake_openai, cloud), env=ENV)
    messages = fresh()
    raw = await client(url).chat.completions.with_raw_response.create(model="chat", messages=messages)
    assert raw.headers["x-switchyard-backend"] == "cloud"
    restricted = await client(url, **{"x-switchyard-sensitivity": "restricted"}).chat.completions.with_raw_response \
        .create(model="chat", messages=messages)
    assert restricted.headers["x-switchyard-backend"] == "gpu"  # the cloud's cached answer was not served
    assert restricted.headers["x-switchyard-cache"] == "miss"


async def test_errors_and_oversized_answers_are_not_cached(gateway, fake_openai):
    url = await gateway(cache_policy(fake_openai), env=ENV)
    messages = fresh()
    fake_openai.faults.push(Fault(status=503), Fault(status=503))
    with pytest.raises(openai.APIStatusError):
        await client(url).chat.completions.create(model="chat", messages=messages)
    raw = await client(url).chat.completions.with_raw_response.create(model="chat", messages=messages)
    assert raw.headers["x-switchyard-cache"] == "miss"  # the failure was not stored
    fake_openai.reply_text = "word " * 2000  # over max_entry_kb: 4
    big = fresh()
    await client(url).chat.completions.create(model="chat", messages=big)
    raw = await client(url).chat.completions.with_raw_response.create(model="chat", messages=big)
    assert raw.headers["x-switchyard-cache"] == "miss"


async def test_identical_requests_on_two_replicas_make_one_upstream_call(gateway, fake_openai):
    """Three identical requests on each of two replicas (one Redis) while the upstream takes
    0.4 s: one upstream call, six identical answers (the first a miss, the rest hits)."""
    redis = Settings(access_log=False, redis_url="redis://127.0.0.1:6379/0")
    a = await gateway(cache_policy(fake_openai), env=ENV, settings=redis)
    b = await gateway(cache_policy(fake_openai), env=ENV, settings=redis)
    fake_openai.faults.always(Fault(delay_s=0.4))
    messages = fresh()
    raws = await asyncio.gather(*(client(url).chat.completions.with_raw_response.create(model="chat",
                                                                                        messages=messages)
                                  for url in (a, a, a, b, b, b)))
    assert len(fake_openai.calls(CHAT)) == 1
    assert len({raw.parse().choices[0].message.content for raw in raws}) == 1
    assert sorted(raw.headers["x-switchyard-cache"] for raw in raws) == ["hit"] * 5 + ["miss"]


async def test_waiters_do_not_hang_when_the_first_request_fails(gateway, fake_openai):
    redis = Settings(access_log=False, redis_url="redis://127.0.0.1:6379/0")
    a = await gateway(cache_policy(fake_openai), env=ENV, settings=redis)
    b = await gateway(cache_policy(fake_openai), env=ENV, settings=redis)
    fake_openai.faults.push(Fault(status=400, delay_s=0.3))  # the first call is refused: nothing to cache
    messages = fresh()
    results = await asyncio.gather(*(client(url).chat.completions.create(model="chat", messages=messages)
                                     for url in (a, b)), return_exceptions=True)
    assert sum(isinstance(r, openai.BadRequestError) for r in results) == 1
    assert sum(not isinstance(r, BaseException) for r in results) == 1  # the waiter asked the upstream itself
    assert len(fake_openai.calls(CHAT)) == 2


async def test_a_hit_through_one_replica_is_served_by_another(gateway, fake_openai):
    redis = Settings(access_log=False, redis_url="redis://127.0.0.1:6379/0")
    a = await gateway(cache_policy(fake_openai), env=ENV, settings=redis)
    b = await gateway(cache_policy(fake_openai), env=ENV, settings=redis)
    messages = fresh()
    await client(a).chat.completions.create(model="chat", messages=messages)
    raw = await client(b).chat.completions.with_raw_response.create(model="chat", messages=messages)
    assert raw.headers["x-switchyard-cache"] == "hit" and len(fake_openai.calls(CHAT)) == 1


async def test_a_hit_is_served_even_when_the_budget_is_spent(gateway, fake_openai):
    policy = cache_policy(fake_openai).replace(
        "gpu: {kind: vllm, base_url: '" + fake_openai.base_url + "', model: m}",
        "gpu: {kind: vllm, base_url: '" + fake_openai.base_url + "', model: m, "
        "price: {input_per_mtok_usd: 1000, output_per_mtok_usd: 1000}}").replace(
        'a: {keys: ["${KEY_A}"]}', 'a: {keys: ["${KEY_A}"], budget: {daily_usd: 0.015}}')
    url = await gateway(policy, env=ENV)
    messages = fresh()
    await client(url).chat.completions.create(model="chat", messages=messages, max_tokens=5)
    with pytest.raises(openai.APIStatusError) as info:  # a new question: the budget is spent
        await client(url).chat.completions.create(model="chat", messages=fresh(), max_tokens=5)
    assert info.value.body["type"] == "budget_exceeded"
    raw = await client(url).chat.completions.with_raw_response.create(model="chat", messages=messages, max_tokens=5)
    assert raw.headers["x-switchyard-cache"] == "hit"  # the same question again costs nothing
