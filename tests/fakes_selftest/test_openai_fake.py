"""FakeOpenAI driven by the official `openai` SDK and by raw HTTP: shapes, streaming, errors."""

from __future__ import annotations

import asyncio

import aiohttp
import openai
import pytest

from tests.fakes.faults import Fault
from tests.fakes.openai_upstream import FakeOpenAI, embedding_vector

REPLY = "Hello from the fake upstream."
MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "say hi now"}]
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},
    {"type": "function", "function": {"name": "other", "parameters": {"type": "object"}}},
]


async def test_chat_non_stream_has_openai_shape(oai: openai.AsyncOpenAI, oai_fake: FakeOpenAI):
    raw = await oai.chat.completions.with_raw_response.create(model="gpt-x", messages=MESSAGES)
    completion = raw.parse()
    assert raw.headers["x-fake-upstream"] == "oai-1"
    assert completion.id.startswith("chatcmpl-")
    assert completion.object == "chat.completion"
    assert completion.model == "fake-model"
    assert completion.created == 1_700_000_000
    choice = completion.choices[0]
    assert (choice.index, choice.finish_reason, choice.logprobs) == (0, "stop", None)
    assert choice.message.role == "assistant" and choice.message.content == REPLY
    usage = completion.usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (5, 5, 10)
    assert oai_fake.calls("/v1/chat/completions")[0].body["model"] == "gpt-x"


async def test_chat_stream_include_usage(oai: openai.AsyncOpenAI):
    stream = await oai.chat.completions.create(
        model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    assert len({(c.id, c.created, c.model) for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == REPLY
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["stop"]
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (5, 5)
    assert all(c.usage is None for c in chunks[:-1])


async def test_chat_stream_raw_wire_without_usage(
    oai_fake: FakeOpenAI, http: aiohttp.ClientSession, oai_auth: dict[str, str]
):
    body = {"model": "m", "messages": MESSAGES, "stream": True}
    async with http.post(f"{oai_fake.base_url}/chat/completions", json=body, headers=oai_auth) as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        raw = await resp.text()
    assert raw.endswith("data: [DONE]\n\n")
    assert "\n\n\n" not in raw and raw.count("data: ") == 1 + 5 + 1 + 1
    assert '"usage"' not in raw  # no usage chunk (nor usage keys) unless include_usage


async def test_chat_tools_non_stream(oai: openai.AsyncOpenAI):
    completion = await oai.chat.completions.create(model="m", messages=MESSAGES, tools=TOOLS)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    call = choice.message.tool_calls[0]
    assert call.id.startswith("call_") and call.type == "function"
    assert (call.function.name, call.function.arguments) == ("get_weather", "{}")


async def test_chat_tools_stream_and_tool_choice_none(oai: openai.AsyncOpenAI):
    stream = await oai.chat.completions.create(model="m", messages=MESSAGES, tools=TOOLS, stream=True)
    chunks = [c async for c in stream]
    calls = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    assert calls[0].function.name == "get_weather" and calls[0].id.startswith("call_")
    assert "".join(tc.function.arguments or "" for tc in calls) == "{}"
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    plain = await oai.chat.completions.create(model="m", messages=MESSAGES, tools=TOOLS, tool_choice="none")
    assert plain.choices[0].message.content == REPLY


async def test_chat_n_and_max_tokens(oai: openai.AsyncOpenAI):
    completion = await oai.chat.completions.create(model="m", messages=MESSAGES, n=2)
    assert [c.index for c in completion.choices] == [0, 1]
    assert all(c.message.content == REPLY for c in completion.choices)
    assert completion.usage.completion_tokens == 10
    short = await oai.chat.completions.create(model="m", messages=MESSAGES, max_tokens=2)
    assert short.choices[0].message.content == "Hello from"
    assert short.choices[0].finish_reason == "length"


async def test_legacy_completions(oai: openai.AsyncOpenAI):
    completion = await oai.completions.create(model="m", prompt="once upon a time")
    assert completion.object == "text_completion" and completion.id.startswith("cmpl-")
    assert completion.choices[0].text == REPLY and completion.choices[0].finish_reason == "stop"
    assert completion.usage.prompt_tokens == 4
    stream = await oai.completions.create(
        model="m", prompt="hi", stream=True, stream_options={"include_usage": True}
    )
    chunks = [c async for c in stream]
    assert "".join(c.choices[0].text for c in chunks if c.choices) == REPLY
    assert chunks[-1].usage.completion_tokens == 5


async def test_embeddings_float_and_base64(oai: openai.AsyncOpenAI):
    default = await oai.embeddings.create(model="m", input=["alpha", "beta gamma"])
    assert [d.index for d in default.data] == [0, 1]
    assert default.data[0].embedding == embedding_vector("alpha")  # SDK decoded base64
    assert default.usage.prompt_tokens == 3
    floats = await oai.embeddings.create(model="m", input="alpha", encoding_format="float")
    assert floats.object == "list" and floats.data[0].object == "embedding"
    assert floats.data[0].embedding == embedding_vector("alpha") and len(floats.data[0].embedding) == 8


async def test_models_list(oai: openai.AsyncOpenAI):
    models = [m async for m in oai.models.list()]
    assert [(m.id, m.object) for m in models] == [("fake-model", "model")]


async def test_rate_limit_error_with_retry_after(oai: openai.AsyncOpenAI, oai_fake: FakeOpenAI):
    oai_fake.faults.push(Fault(status=429, retry_after=7))
    with pytest.raises(openai.RateLimitError) as info:
        await oai.chat.completions.create(model="m", messages=MESSAGES)
    err = info.value
    assert isinstance(err, openai.APIStatusError) and err.status_code == 429
    assert err.response.headers["retry-after"] == "7"
    assert err.body["type"] == "requests" and err.code == "rate_limit_exceeded"
    assert err.param is None
    assert len(oai_fake.received) == 1  # faulted request is recorded too


async def test_context_length_and_content_policy_errors(oai: openai.AsyncOpenAI, oai_fake: FakeOpenAI):
    oai_fake.faults.push(
        Fault(error_type="context_length_exceeded"),
        Fault(error_type="content_policy_violation", message="nope"),
    )
    with pytest.raises(openai.BadRequestError) as ctx:
        await oai.chat.completions.create(model="m", messages=MESSAGES)
    assert ctx.value.code == "context_length_exceeded" and ctx.value.param == "messages"
    assert "maximum context length" in ctx.value.message
    with pytest.raises(openai.BadRequestError) as policy:
        await oai.chat.completions.create(model="m", messages=MESSAGES)
    assert policy.value.code == "content_policy_violation" and policy.value.body["message"] == "nope"


async def test_server_error_and_auth(oai_fake: FakeOpenAI):
    oai_fake.faults.push(Fault(status=503))
    async with openai.AsyncOpenAI(base_url=oai_fake.base_url, api_key=oai_fake.api_key, max_retries=0) as ok:
        with pytest.raises(openai.InternalServerError) as info:
            await ok.chat.completions.create(model="m", messages=MESSAGES)
    assert info.value.status_code == 503 and info.value.body["type"] == "server_error"
    async with openai.AsyncOpenAI(base_url=oai_fake.base_url, api_key="wrong", max_retries=0) as bad:
        with pytest.raises(openai.AuthenticationError) as auth:
            await bad.models.list()
    assert auth.value.code == "invalid_api_key"


async def test_malformed_json_and_missing_messages(
    oai_fake: FakeOpenAI, http: aiohttp.ClientSession, oai_auth: dict[str, str]
):
    url = f"{oai_fake.base_url}/chat/completions"
    async with http.post(url, data=b"{not json", headers=oai_auth) as resp:
        assert resp.status == 400
        error = (await resp.json())["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", None, None)
    async with http.post(url, json={"model": "m"}, headers=oai_auth) as resp:
        missing = (await resp.json())["error"]
    assert resp.status == 400 and missing["param"] == "messages"
    assert oai_fake.received[0].body is None and oai_fake.received[1].body == {"model": "m"}


async def test_health_metrics_and_in_flight(
    oai_fake: FakeOpenAI, http: aiohttp.ClientSession, oai_auth: dict[str, str]
):
    async with http.get(f"{oai_fake.origin}/health") as resp:
        assert await resp.json() == {"status": "ok"}
    oai_fake.faults.push(Fault(hang=True))
    oai_fake.deferred = 3
    hung = http.post(
        f"{oai_fake.base_url}/chat/completions",
        json={"model": "m", "messages": []},
        headers=oai_auth,
    )
    task = asyncio.ensure_future(hung)
    async with asyncio.timeout(2):
        await oai_fake.wait_received(1)  # the hung chat request
    async with http.get(f"{oai_fake.origin}/metrics") as resp:
        text = await resp.text()
    assert "# TYPE llamacpp:requests_processing gauge" in text
    assert "llamacpp:requests_processing 1\n" in text and "llamacpp:requests_deferred 3\n" in text
    task.cancel()  # the client gives up and disconnects: no longer in flight upstream
    with pytest.raises(asyncio.CancelledError):
        await task
    async with asyncio.timeout(2):
        await oai_fake.wait_idle()
    oai_fake.healthy = False
    async with http.get(f"{oai_fake.origin}/health") as resp:
        assert resp.status == 503


async def test_two_fakes_are_distinguishable(http: aiohttp.ClientSession):
    async with (
        FakeOpenAI(name="left") as left,
        FakeOpenAI(name="right", reply_text="other") as right,
    ):
        assert left.port != right.port
        for fake, reply in ((left, REPLY), (right, "other")):
            body = {"model": "m", "messages": MESSAGES}
            async with http.post(f"{fake.base_url}/chat/completions", json=body) as resp:
                assert resp.headers["x-fake-upstream"] == fake.name
                assert (await resp.json())["choices"][0]["message"]["content"] == reply
