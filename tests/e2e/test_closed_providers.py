"""Closed providers through the real litellm: Anthropic's Messages wire format (JSON and
SSE events) and OpenAI's, served by local fakes, with OpenAI-format answers and streams
going back to the official ``openai`` client."""

from __future__ import annotations

import openai
import pytest

from tests.e2e.test_gateway_sdk import MESSAGES, client, local, policy
from tests.fakes.faults import Fault


def claude(fake, key: str = "sk-ant-test", attempts: int = 1) -> str:
    return (f"{{kind: anthropic, base_url: '{fake.base_url}', model: claude-sonnet-4-5, api_key: {key}, "
            f"retry: {{attempts: {attempts}}}, timeouts: {{connect_s: 1, first_token_s: 5, idle_s: 5, total_s: 10}}}}")


async def test_anthropic_non_stream(gateway, fake_anthropic):
    url = await gateway(policy(("claude", claude(fake_anthropic))))
    raw = await client(url).chat.completions.with_raw_response.create(model="chat", messages=MESSAGES,
                                                                      max_tokens=64)
    result = raw.parse()
    assert raw.headers["x-switchyard-backend"] == "claude"
    assert result.object == "chat.completion"
    assert result.choices[0].message.content == fake_anthropic.reply_text
    assert result.choices[0].finish_reason == "stop"
    assert result.model == "claude-fake-1"  # the model that answered
    assert result.usage.completion_tokens == len(fake_anthropic.reply_text.split())
    sent = fake_anthropic.calls("/v1/messages")[0]
    assert sent.headers["x-api-key"] == "sk-ant-test"
    assert sent.body["system"] in ("Be brief.", [{"type": "text", "text": "Be brief."}])
    assert sent.body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Say hello."}]}] or \
        sent.body["messages"] == [{"role": "user", "content": "Say hello."}]
    assert sent.body["max_tokens"] == 64


async def test_anthropic_stream_becomes_openai_chunks_with_usage(gateway, fake_anthropic):
    url = await gateway(policy(("claude", claude(fake_anthropic))))
    stream = await client(url).chat.completions.create(
        model="chat", messages=MESSAGES, max_tokens=64, stream=True, stream_options={"include_usage": True})
    text, finish, usage, ids = "", None, None, set()
    async for chunk in stream:
        ids.add(chunk.id)
        assert chunk.object == "chat.completion.chunk"
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage:
            usage = chunk.usage
    assert text == fake_anthropic.reply_text
    assert finish == "stop"
    assert usage is not None and usage.completion_tokens > 0
    assert len(ids) == 1
    assert fake_anthropic.calls("/v1/messages")[0].body["stream"] is True


async def test_anthropic_tool_use_maps_to_tool_calls(gateway, fake_anthropic):
    url = await gateway(policy(("claude", claude(fake_anthropic))))
    tools = [{"type": "function", "function": {"name": "lookup", "description": "find",
                                               "parameters": {"type": "object", "properties": {}}}}]
    result = await client(url).chat.completions.create(model="chat", messages=MESSAGES, tools=tools,
                                                       max_tokens=32)
    call = result.choices[0].message.tool_calls[0]
    assert call.function.name == "lookup" and result.choices[0].finish_reason == "tool_calls"
    assert fake_anthropic.calls("/v1/messages")[0].body["tools"][0]["name"] == "lookup"


@pytest.mark.parametrize(("status", "error_type"), [(429, "rate_limit_error"), (529, "overloaded_error"),
                                                    (500, "api_error")])
async def test_anthropic_failure_falls_back_to_local(gateway, fake_anthropic, fake_openai, status, error_type):
    fake_anthropic.faults.always(Fault(status=status, error_type=error_type))
    url = await gateway(policy(("claude", claude(fake_anthropic)), ("gpu", local(fake_openai)),
                               aliases={"chat": ["claude", "gpu"]}))
    raw = await client(url).chat.completions.with_raw_response.create(model="chat", messages=MESSAGES)
    assert raw.headers["x-switchyard-backend"] == "gpu"
    assert raw.headers["x-switchyard-tried"] == "claude"
    assert len(fake_anthropic.received) == 1  # litellm's own retries are off (gateway: attempts 1)


async def test_anthropic_bad_key_is_an_upstream_auth_error(gateway, fake_anthropic):
    url = await gateway(policy(("claude", claude(fake_anthropic, key="wrong"))))
    with pytest.raises(openai.APIStatusError) as info:
        await client(url).chat.completions.create(model="chat", messages=MESSAGES)
    assert info.value.status_code == 502
    assert "credentials" in info.value.body["message"]


async def test_anthropic_context_length_is_a_clean_400(gateway, fake_anthropic, fake_openai):
    fake_anthropic.faults.always(Fault(status=400, error_type="invalid_request_error",
                                       message="prompt is too long: 300000 tokens > 200000 maximum"))
    url = await gateway(policy(("claude", claude(fake_anthropic)), ("gpu", local(fake_openai)),
                               aliases={"chat": ["claude", "gpu"]}))
    with pytest.raises(openai.BadRequestError) as info:
        await client(url).chat.completions.create(model="chat", messages=MESSAGES)
    assert "too long" in info.value.body["message"]
    assert fake_openai.received == []


async def test_closed_openai_kind_through_litellm(gateway, fake_openai):
    keyed = fake_openai
    keyed.api_key = "sk-openai-test"
    spec = f"{{kind: openai, base_url: '{keyed.base_url}', model: gpt-4o-mini, api_key: sk-openai-test}}"
    url = await gateway(policy(("gpt", spec), aliases={"chat": ["gpt"], "embed": ["gpt"]}))
    c = client(url)
    result = await c.chat.completions.create(model="chat", messages=MESSAGES, seed=3)
    assert result.choices[0].message.content == keyed.reply_text
    sent = keyed.calls("/v1/chat/completions")[0]
    assert sent.headers["authorization"] == "Bearer sk-openai-test"
    assert sent.body["model"] == "gpt-4o-mini" and sent.body["seed"] == 3
    stream = await c.chat.completions.create(model="chat", messages=MESSAGES, stream=True)
    assert "".join([ch.choices[0].delta.content or "" async for ch in stream if ch.choices]) == keyed.reply_text
    emb = await c.embeddings.create(model="embed", input="hello")
    assert len(emb.data[0].embedding) == 8


async def test_closed_backend_without_key_is_skipped(gateway, fake_openai):
    spec = "{kind: openai, model: gpt-4o-mini, api_key: '${OPENAI_API_KEY:-}'}"
    url = await gateway(policy(("gpt", spec), ("gpu", local(fake_openai)), aliases={"chat": ["gpt", "gpu"],
                                                                                   "closed": ["gpt"]}))
    raw = await client(url).chat.completions.with_raw_response.create(model="chat", messages=MESSAGES)
    assert raw.headers["x-switchyard-backend"] == "gpu"
    with pytest.raises(openai.APIStatusError) as info:
        await client(url).chat.completions.create(model="closed", messages=MESSAGES)
    assert info.value.status_code == 503
    assert "no API key" in info.value.body["message"]
