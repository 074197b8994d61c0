"""Native passthrough: a self-hosted server that ``speaks`` Anthropic's Messages or OpenAI's
Responses gets the client's own body (cache_control, thinking, betas kept) and its answer
goes back unchanged; fallback crosses formats (a native target down → a chat target,
translated); a broken native stream ends with the surface's own error event; the client's
own body is scanned too. Against a fake that speaks Messages and the real llama.cpp server,
which serves both APIs."""

from __future__ import annotations

import anthropic
import openai
import pytest

from tests.e2e.test_gateway_sdk import local
from tests.fakes.faults import Fault

MESSAGES = "/v1/messages"
CHAT = "/v1/chat/completions"


def native(fake, speaks: str = "[messages]") -> str:
    key = f"api_key: '{fake.api_key}', " if fake.api_key else ""
    return (f"{{kind: openai_compatible, base_url: '{fake.base_url}/v1', model: served-native, speaks: {speaks}, {key}"
            "retry: {attempts: 1}, price: {input_per_mtok_usd: 1, output_per_mtok_usd: 2}, "
            "timeouts: {connect_s: 1, first_token_s: 3, idle_s: 3, total_s: 5}}")


def two(native_fake, chat_fake) -> str:
    return f"""
version: 1
backends:
  native: {native(native_fake)}
  chat-only: {local(chat_fake)}
models:
  chat: {{targets: [native, chat-only]}}
"""


def client(url: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=url, api_key="unused", max_retries=0, timeout=10)


BODY = {"model": "chat", "max_tokens": 64,
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": "Say hello."}]}


async def test_a_native_target_gets_the_clients_own_body_and_answers_unchanged(gateway, fake_anthropic,
                                                                               fake_openai):
    url = await gateway(two(fake_anthropic, fake_openai))
    raw = await client(url).messages.with_raw_response.create(
        **BODY, extra_headers={"anthropic-beta": "interleaved-thinking-2025-05-14"})
    message = await raw.parse()
    assert raw.headers["x-switchyard-backend"] == "native"
    assert "x-switchyard-dropped" not in raw.headers  # nothing was translated
    assert message.id.startswith("msg_fake") and message.content[0].text == fake_anthropic.reply_text
    assert float(raw.headers["x-switchyard-cost-usd"]) > 0
    sent = fake_anthropic.calls(MESSAGES)[-1]
    assert sent.body["model"] == "served-native"
    assert sent.body["system"] == BODY["system"]  # cache_control kept: native keeps what translation drops
    assert sent.headers["anthropic-beta"] == "interleaved-thinking-2025-05-14"
    assert sent.headers["anthropic-version"] == raw.http_request.headers["anthropic-version"]  # the client's
    assert fake_openai.calls(CHAT) == []


async def test_a_native_stream_passes_through(gateway, fake_anthropic, fake_openai):
    url = await gateway(two(fake_anthropic, fake_openai))
    async with client(url).messages.stream(**BODY) as stream:
        names = [event.type async for event in stream]
        final = await stream.get_final_message()
    assert final.content[0].text == fake_anthropic.reply_text and final.id.startswith("msg_fake")
    assert names[0] == "message_start" and names[-1] == "message_stop"
    assert fake_anthropic.calls(MESSAGES)[-1].body["stream"] is True


async def test_fallback_crosses_formats(gateway, fake_anthropic, fake_openai):
    fake_anthropic.faults.always(Fault(status=503))
    url = await gateway(two(fake_anthropic, fake_openai))
    raw = await client(url).messages.with_raw_response.create(**BODY)
    message = await raw.parse()
    assert raw.headers["x-switchyard-backend"] == "chat-only" and raw.headers["x-switchyard-tried"] == "native"
    assert message.content[0].text == fake_openai.reply_text  # translated back from chat
    assert raw.headers["x-switchyard-dropped"] == "cache_control"


async def test_a_broken_native_stream_ends_with_an_anthropic_error_event(gateway, fake_anthropic, fake_openai):
    fake_anthropic.faults.push(Fault(cut_after_chunks=3))
    url = await gateway(two(fake_anthropic, fake_openai))
    async with client(url).messages.with_streaming_response.create(**BODY, stream=True) as response:
        body = await response.read()
    assert b"event: error" in body and b"message_stop" not in body
    assert b'"type":"api_error"' in body or b'"type": "api_error"' in body


async def test_the_clients_own_body_is_scanned_too(gateway, fake_anthropic, fake_openai):
    """A card number in a thinking block: translation drops thinking blocks, a native target
    would see it — the request is confidential or above either way."""
    url = await gateway(two(fake_anthropic, fake_openai))
    body = {**BODY, "messages": [
        {"role": "user", "content": "pay"},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "card 4111 1111 1111 1111",
                                           "signature": "c2ln"}, {"type": "text", "text": "ok"}]},
        {"role": "user", "content": "go on"}]}
    raw = await client(url).messages.with_raw_response.create(**body)
    assert raw.headers["x-switchyard-sensitivity"] == "restricted"


def gemma_native(url: str, speaks: str) -> str:
    return f"""
version: 1
backends:
  gemma: {{kind: llamacpp, base_url: '{url}', model: gemma-3-270m, speaks: {speaks},
          timeouts: {{connect_s: 2, first_token_s: 60, idle_s: 30, total_s: 120}}}}
models:
  chat: {{targets: [gemma]}}
"""


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_llamacpp_serves_messages_natively(gateway, llamacpp_url, stream):
    url = await gateway(gemma_native(llamacpp_url, "[messages]"))
    body = {"model": "chat", "max_tokens": 8, "messages": [{"role": "user", "content": "Hello"}]}
    if stream:
        async with client(url).messages.stream(**body) as s:
            names = [event.type async for event in s]
            final = await s.get_final_message()
        assert names[0] == "message_start" and names[-1] == "message_stop"
    else:
        raw = await client(url).messages.with_raw_response.create(**body)
        final = await raw.parse()
        assert raw.headers["x-switchyard-backend"] == "gemma" and "x-switchyard-dropped" not in raw.headers
    assert final.type == "message" and final.usage.output_tokens > 0
    assert final.stop_reason in ("end_turn", "max_tokens")


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_llamacpp_serves_stateless_responses_natively(gateway, llamacpp_url, stream):
    url = await gateway(gemma_native(llamacpp_url, "[messages, responses]"))
    oai = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)
    if stream:
        events = [event async for event in await oai.responses.create(model="chat", input="Hello", store=False,
                                                                     max_output_tokens=8, stream=True)]
        assert events[0].type == "response.created"
        assert events[-1].type in ("response.completed", "response.incomplete")
        final = events[-1].response
    else:
        raw = await oai.responses.with_raw_response.create(model="chat", input="Hello", store=False,
                                                           max_output_tokens=8)
        final = raw.parse()
        assert raw.headers["x-switchyard-backend"] == "gemma" and "x-switchyard-dropped" not in raw.headers
    assert final.object == "response" and final.usage.output_tokens > 0


def provider_native(fake, extra_rules: str = "") -> str:
    """Anthropic's own API reached directly: kind openai_compatible, closed (self_hosted: false),
    speaking Messages natively (a chat request would go to its OpenAI-compatible endpoint)."""
    return f"""
version: 1
backends:
  anthropic-direct: {{kind: openai_compatible, self_hosted: false, base_url: '{fake.base_url}/v1',
                      model: claude-sonnet-4-5, speaks: [messages], headers: {{x-api-key: '{fake.api_key}'}},
                      price: {{input_per_mtok_usd: 3, output_per_mtok_usd: 15}}, retry: {{attempts: 1}}}}
models:
  chat: {{targets: [anthropic-direct]}}
sensitivity: {{closed_max: internal}}
{extra_rules}"""


async def test_a_providers_own_api_can_be_a_closed_native_target(gateway, fake_anthropic):
    url = await gateway(provider_native(fake_anthropic))
    raw = await client(url).messages.with_raw_response.create(**BODY)
    assert raw.headers["x-switchyard-backend"] == "anthropic-direct" and "x-switchyard-dropped" not in raw.headers
    sent = fake_anthropic.calls(MESSAGES)[-1]
    assert sent.headers["x-api-key"] == fake_anthropic.api_key and sent.body["system"] == BODY["system"]
    # a closed target: the sensitivity ceiling holds as for any closed backend
    with pytest.raises(anthropic.APIStatusError) as refused:
        await client(url).messages.create(**{**BODY, "messages": [{"role": "user",
                                                                   "content": "card 4111 1111 1111 1111"}]})
    assert refused.value.status_code in (403, 503)
    assert len(fake_anthropic.calls(MESSAGES)) == 1


async def test_a_closed_native_target_under_a_redacting_rule_gets_the_redacted_translation(gateway, fake_openai):
    """Redaction works on the translation: a closed target that speaks Messages still gets the
    chat translation, redacted, never the client's own body."""
    policy = f"""
version: 1
backends:
  provider: {{kind: openai_compatible, self_hosted: false, base_url: '{fake_openai.base_url}', model: m,
             speaks: [messages], retry: {{attempts: 1}}}}
models:
  chat: {{targets: [provider]}}
rules:
  - {{name: scrub, route: {{targets: [provider], redact: [ip_address]}}}}
"""
    url = await gateway(policy)
    body = {**BODY, "messages": [{"role": "user", "content": "connect to 10.1.2.3 please"}]}
    raw = await client(url).messages.with_raw_response.create(**body)  # internal: may leave, redacted
    assert raw.headers["x-switchyard-sensitivity"] == "internal" and raw.headers["x-switchyard-backend"] == "provider"
    assert fake_openai.calls(MESSAGES) == []
    sent = str(fake_openai.calls(CHAT)[-1].body)
    assert "10.1.2.3" not in sent and "<IP_ADDRESS_1>" in sent
