"""End to end through the running gateway with the official ``openai`` SDK as the client,
against fake upstreams that speak the real wire formats (OpenAI-compatible passthrough,
and Anthropic's Messages API through the real litellm)."""

from __future__ import annotations

import asyncio

import aiohttp
import openai
import pytest

from tests.fakes.faults import Fault


def policy(*backends: tuple[str, str], aliases: dict[str, list[str]] | None = None,
           extra: str = "") -> str:
    """``backends`` are (name, yaml-flow-mapping) pairs."""
    lines = ["version: 1", "backends:"]
    lines += [f"  {name}: {spec}" for name, spec in backends]
    lines.append("models:")
    for alias, targets in (aliases or {"chat": [backends[0][0]]}).items():
        lines.append(f"  {alias}: {{targets: [{', '.join(targets)}]}}")
    return "\n".join(lines) + "\n" + extra


def local(fake, timeouts: str = "{connect_s: 1, first_token_s: 2, idle_s: 2, total_s: 5}") -> str:
    return f"{{kind: vllm, base_url: '{fake.base_url}', model: served-model, timeouts: {timeouts}}}"


def client(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=10)


MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello."}]


async def test_chat_non_stream_names_backend_route_and_model(gateway, fake_openai):
    url = await gateway(policy(("gpu", local(fake_openai))))
    raw = await client(url).chat.completions.with_raw_response.create(model="chat", messages=MESSAGES)
    completion = raw.parse()
    assert completion.choices[0].message.content == fake_openai.reply_text
    assert completion.model == "fake-primary"
    assert completion.usage.total_tokens > 0
    assert raw.headers["x-switchyard-backend"] == "gpu"
    assert raw.headers["x-switchyard-route"] == "chat"
    assert len(raw.headers["x-request-id"]) >= 16
    sent = fake_openai.calls("/v1/chat/completions")[0]
    assert sent.body["model"] == "served-model"  # only `model` is rewritten
    assert sent.body["messages"] == MESSAGES


async def test_standard_fields_pass_through_untouched(gateway, fake_openai):
    url = await gateway(policy(("gpu", local(fake_openai))))
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    extra = {"tools": tools, "tool_choice": "auto", "response_format": {"type": "json_object"}, "n": 2,
             "stop": ["\n\n"], "seed": 7, "logprobs": True, "top_logprobs": 2, "temperature": 0.2,
             "presence_penalty": 0.5, "user": "u-1"}
    result = await client(url).chat.completions.create(model="chat", messages=MESSAGES, **extra,
                                                       extra_body={"vendor_knob": {"x": 1}})
    assert result.choices[0].message.tool_calls[0].function.name == "lookup"
    sent = fake_openai.calls("/v1/chat/completions")[0].body
    for key, value in extra.items():
        assert sent[key] == value, key
    assert sent["vendor_knob"] == {"x": 1}


async def test_stream_with_usage(gateway, fake_openai):
    url = await gateway(policy(("gpu", local(fake_openai))))
    stream = await client(url).chat.completions.create(
        model="chat", messages=MESSAGES, stream=True, stream_options={"include_usage": True})
    text, usage, finish = "", None, None
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage:
            usage = chunk.usage
    assert text == fake_openai.reply_text
    assert finish == "stop"
    assert usage is not None and usage.completion_tokens == len(fake_openai.reply_text.split())
    assert fake_openai.calls("/v1/chat/completions")[0].body["stream_options"] == {"include_usage": True}


async def test_stream_headers(gateway, fake_openai):
    url = await gateway(policy(("gpu", local(fake_openai))))
    async with client(url).chat.completions.with_streaming_response.create(
            model="chat", messages=MESSAGES, stream=True) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        assert resp.headers["x-switchyard-backend"] == "gpu"
        assert resp.headers["x-request-id"]
        body = b"".join([part async for part in resp.http_response.aiter_bytes()])
    assert body.rstrip().endswith(b"data: [DONE]")


async def test_completions_and_embeddings_and_models(gateway, fake_openai):
    url = await gateway(policy(("gpu", local(fake_openai)), aliases={"chat": ["gpu"], "embed": ["gpu"]}))
    c = client(url)
    done = await c.completions.create(model="chat", prompt="Once upon a time", max_tokens=8)
    assert done.choices[0].text == fake_openai.reply_text
    emb = await c.embeddings.create(model="embed", input=["one", "two"])
    assert [d.index for d in emb.data] == [0, 1] and len(emb.data[0].embedding) == 8
    models = await c.models.list()
    assert [m.id for m in models.data] == ["chat", "embed"]


async def test_fallback_on_503_names_the_backend_that_answered(gateway, fake_openai, fake_openai_b):
    fake_openai.faults.always(Fault(status=503))
    url = await gateway(policy(("a", local(fake_openai)), ("b", local(fake_openai_b)),
                               aliases={"chat": ["a", "b"]}))
    raw = await client(url).chat.completions.with_raw_response.create(model="chat", messages=MESSAGES)
    assert raw.headers["x-switchyard-backend"] == "b"
    assert raw.headers["x-switchyard-tried"] == "a"
    assert raw.parse().model == "fake-secondary"
    assert len(fake_openai.received) == 2  # one retry (default retry.attempts: 2), then failover
    assert len(fake_openai_b.received) == 1


@pytest.mark.parametrize("fault", [Fault(status=429), Fault(status=500), Fault(reset=True), Fault(hang=True)],
                         ids=["429", "500", "reset", "hang"])
async def test_fallback_on_retryable_failures_stream(gateway, fake_openai, fake_openai_b, fault):
    fake_openai.faults.always(fault)
    fast = "{connect_s: 1, first_token_s: 0.5, idle_s: 0.5, total_s: 1}"
    url = await gateway(policy(("a", local(fake_openai, fast)), ("b", local(fake_openai_b)),
                               aliases={"chat": ["a", "b"]}))
    stream = await client(url).chat.completions.create(model="chat", messages=MESSAGES, stream=True)
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == fake_openai_b.reply_text


async def test_all_backends_fail_lists_what_was_tried(gateway, fake_openai, fake_openai_b):
    fake_openai.faults.always(Fault(status=503, message="gpu on fire"))
    fake_openai_b.faults.always(Fault(status=502))
    url = await gateway(policy(("a", local(fake_openai)), ("b", local(fake_openai_b)),
                               aliases={"chat": ["a", "b"]}))
    with pytest.raises(openai.APIStatusError) as info:
        await client(url).chat.completions.create(model="chat", messages=MESSAGES)
    err = info.value
    assert err.status_code == 503
    assert err.body["code"] == "all_backends_failed"
    assert "a (upstream_error): gpu on fire" in err.body["message"] and "b (upstream_error):" in err.body["message"]
    assert err.response.headers["x-switchyard-tried"] == "a,b"


async def test_dead_backend_is_a_502_with_its_name(gateway):
    url = await gateway(policy(("gone", "{kind: llamacpp, base_url: 'http://127.0.0.1:9/v1', model: m}")))
    with pytest.raises(openai.APIStatusError) as info:
        await client(url).chat.completions.create(model="chat", messages=MESSAGES)
    assert info.value.status_code == 502
    assert "gone" in info.value.body["message"]


async def test_bad_request_is_not_retried_elsewhere(gateway, fake_openai, fake_openai_b):
    fake_openai.faults.always(Fault(status=400, error_type="invalid_request_error", message="bad tool schema"))
    url = await gateway(policy(("a", local(fake_openai)), ("b", local(fake_openai_b)),
                               aliases={"chat": ["a", "b"]}))
    with pytest.raises(openai.BadRequestError) as info:
        await client(url).chat.completions.create(model="chat", messages=MESSAGES)
    assert "bad tool schema" in info.value.body["message"]
    assert fake_openai_b.received == []


async def test_stream_cut_midway_ends_with_error_event_not_clean_done(gateway, fake_openai):
    fake_openai.faults.always(Fault(cut_after_chunks=2))
    url = await gateway(policy(("a", local(fake_openai))))
    async with aiohttp.ClientSession() as http:
        async with http.post(url + "/v1/chat/completions",
                             json={"model": "chat", "messages": MESSAGES, "stream": True}) as resp:
            assert resp.status == 200
            body = (await resp.read()).decode()
    events = [e for e in body.split("\n\n") if e.strip()]
    assert '"error"' in events[-2] and "upstream_stream_error" in events[-2]
    assert events[-1] == "data: [DONE]"
    assert '"finish_reason":"stop"' not in body


async def test_client_disconnect_cancels_upstream(gateway, fake_openai):
    fake_openai.faults.always(Fault(stall_after_chunks=1))
    url = await gateway(policy(("a", local(fake_openai, "{first_token_s: 30, idle_s: 30}"))))
    async with aiohttp.ClientSession() as http:
        resp = await http.post(url + "/v1/chat/completions",
                               json={"model": "chat", "messages": MESSAGES, "stream": True})
        await resp.content.readuntil(b"\n\n")
        assert fake_openai.in_flight == 1
        resp.close()
    for _ in range(200):  # the upstream sees the close within a few loop turns
        if fake_openai.in_flight == 0:
            break
        await asyncio.sleep(0.01)
    assert fake_openai.in_flight == 0
