"""The self-hosted path against a real llama.cpp server running Gemma 3 270M on the CPU.

The base model's text is nonsense, so these tests assert structure, usage and routing,
never exact text; ``max_tokens`` stays small.
"""

from __future__ import annotations

import openai
import pytest

from policies import load_policy
from router.runtime import KIND_TABLE
from router.settings import DEFAULT_POLICY
from tests.e2e.test_gateway_sdk import client, policy

pytestmark = pytest.mark.llamacpp
PROMPT = [{"role": "user", "content": "Name a colour."}]


def gemma(url: str) -> str:
    return f"{{kind: llamacpp, base_url: '{url}', model: gemma-3-270m, timeouts: {{first_token_s: 60}}}}"


async def test_chat_through_gateway(gateway, llamacpp_url):
    url = await gateway(policy(("local", gemma(llamacpp_url))))
    raw = await client(url).chat.completions.with_raw_response.create(
        model="chat", messages=PROMPT, max_tokens=8, temperature=0)
    result = raw.parse()
    assert raw.headers["x-switchyard-backend"] == "local"
    assert result.model == "gemma-3-270m"
    assert result.choices[0].message.role == "assistant"
    assert result.choices[0].finish_reason in ("length", "stop")
    assert 0 < result.usage.completion_tokens <= 8 and result.usage.prompt_tokens > 0


async def test_stream_with_usage_through_gateway(gateway, llamacpp_url):
    url = await gateway(policy(("local", gemma(llamacpp_url))))
    stream = await client(url).chat.completions.create(
        model="chat", messages=PROMPT, max_tokens=6, stream=True, stream_options={"include_usage": True})
    chunks = [c async for c in stream]
    deltas = [c for c in chunks if c.choices]
    assert deltas[0].choices[0].delta.role == "assistant"
    assert deltas[-1].choices[0].finish_reason in ("length", "stop")
    assert chunks[-1].choices == [] and 0 < chunks[-1].usage.completion_tokens <= 6
    assert len({c.id for c in chunks}) == 1


async def test_completions_through_gateway(gateway, llamacpp_url):
    url = await gateway(policy(("local", gemma(llamacpp_url))))
    result = await client(url).completions.create(model="chat", prompt="The sky is", max_tokens=4)
    assert result.choices[0].text is not None and result.usage.completion_tokens > 0


async def test_context_overflow_is_a_clean_400(gateway, llamacpp_url):
    url = await gateway(policy(("local", gemma(llamacpp_url))))
    huge = [{"role": "user", "content": "word " * 3000}]
    with pytest.raises(openai.BadRequestError) as info:
        await client(url).chat.completions.create(model="chat", messages=huge, max_tokens=4)
    assert info.value.status_code == 400


async def test_shipped_default_policy_serves_the_local_model(gateway, llamacpp_url):
    text = DEFAULT_POLICY.read_text()
    env = {"SWITCHYARD_LOCAL_MODEL_URL": llamacpp_url}
    assert load_policy(DEFAULT_POLICY, env, kinds=KIND_TABLE).policy.settings.default_alias == "chat-default"
    url = await gateway(text, env=env)
    raw = await client(url).chat.completions.with_raw_response.create(
        model="chat-default", messages=PROMPT, max_tokens=4)
    assert raw.headers["x-switchyard-backend"] == "local"
    assert raw.headers["x-switchyard-route"] == "chat-default"


async def test_broken_stream_is_continued_by_the_real_model(gateway, stack, llamacpp_url):
    """A fake primary breaks after two chunks; the real llama.cpp continues the answer from
    the prefill. The client's text must be exactly what llama.cpp itself produces for that
    prefill (it echoes the prefill; the gateway must not repeat it)."""
    import aiohttp

    from tests.e2e.test_resilience import spec
    from tests.fakes.faults import Fault
    from tests.fakes.openai_upstream import FakeOpenAI

    fake = await stack.enter_async_context(FakeOpenAI(name="primary", reply_text="Red, green and blue."))
    fake.faults.always(Fault(cut_after_chunks=2))
    url = await gateway(policy(("primary", spec(fake)), ("local", gemma(llamacpp_url)),
                               aliases={"chat": ["primary", "local"]}))
    body = {"model": "chat", "messages": PROMPT, "max_tokens": 12, "temperature": 0, "seed": 1}
    text = ""
    async with aiohttp.ClientSession() as http:
        stream = await client(url).chat.completions.create(**body, stream=True)
        async for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
        direct = {**body, "messages": [*PROMPT, {"role": "assistant", "content": "Red, green"}],
                  "max_tokens": 10}
        async with http.post(llamacpp_url + "/chat/completions", json=direct) as r:
            expected = (await r.json())["choices"][0]["message"]["content"]
    assert expected.startswith("Red, green")  # llama.cpp echoes the prefill
    assert text == expected
