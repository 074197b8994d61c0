"""The Anthropic Messages surface (``POST /v1/messages``, ``/v1/messages/count_tokens``)
end to end, with the official ``anthropic`` SDK as the client.

The gateway translates a Messages request into a chat completion for the chosen backend
(here a ``FakeOpenAI`` behind ``kind: vllm``) and answers in Anthropic's own wire format:
the ``message`` object, its named SSE events (``message_start`` … ``message_stop``, with
``ping``), ``tool_use``/``tool_result`` blocks, and errors as
``{"type": "error", "error": {"type", "message"}}`` (also as an ``event: error`` once a stream
has started). Every answer names where it went in ``x-switchyard-*`` headers.

Field names come from the SDK's types (``anthropic.types.Message``,
``RawMessageStreamEvent``); the upstream side is checked on the fake's recorded calls.
"""

from __future__ import annotations

import asyncio
import base64
import re
from typing import Any

import aiohttp
import anthropic
import openai
import orjson
import pytest

from tests.e2e.test_gateway_sdk import local, policy
from tests.fakes.faults import Fault

CHAT = "/v1/chat/completions"
HELLO = [{"role": "user", "content": "Say hello."}]
TOOLS = [{"name": "lookup", "description": "Find a fact.",
          "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}]
#: A 1x1 PNG (the one tests/e2e/test_url_images.py uses).
PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")
PNG_B64 = base64.b64encode(PNG).decode()
#: Anthropic's error types (``anthropic.types.shared.ErrorType``).
ERROR_TYPES = {"invalid_request_error", "authentication_error", "billing_error", "permission_error",
               "not_found_error", "rate_limit_error", "timeout_error", "api_error", "overloaded_error"}
#: The event grammar of one streamed message (names joined by spaces).
STREAM_GRAMMAR = re.compile(
    r"message_start (ping )*"
    r"(content_block_start (ping )*(content_block_delta (ping )*)*content_block_stop (ping )*)+"
    r"message_delta (ping )*message_stop ")
KEYS = {"KEY_A": "sk-team-a-0123456789", "KEY_B": "sk-team-b-0123456789"}


#: SDK clients made during the running test, closed when it ends (while its loop still runs).
OPEN_CLIENTS: list[anthropic.AsyncAnthropic | openai.AsyncOpenAI] = []


def aclient(url: str, key: str = "unused", timeout: float = 10) -> anthropic.AsyncAnthropic:
    """The SDK pointed at the gateway's root (it adds ``/v1/messages`` itself)."""
    made = anthropic.AsyncAnthropic(base_url=url, api_key=key, max_retries=0, timeout=timeout)
    OPEN_CLIENTS.append(made)
    return made


async def close_clients() -> None:
    while OPEN_CLIENTS:
        await OPEN_CLIENTS.pop().close()


def keyed(fake) -> str:
    return policy(("gpu", local(fake)),
                  extra='teams:\n  a: {keys: ["${KEY_A}"]}\n  b: {keys: ["${KEY_B}"]}\n')


def text_of(content: Any) -> str:
    """The text of an upstream chat message's content (a string or a list of parts)."""
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content or [] if isinstance(p, dict) and p.get("type") == "text")


def upstream(fake, index: int = 0) -> dict[str, Any]:
    calls = fake.calls(CHAT)
    assert calls, "the gateway sent nothing upstream"
    return calls[index].body


def assert_anthropic_error(body: Any, type_: str | None = None) -> dict[str, Any]:
    assert isinstance(body, dict) and body.get("type") == "error", body
    error = body["error"]
    assert error["type"] in ERROR_TYPES, error
    assert isinstance(error["message"], str) and error["message"], error
    if type_ is not None:
        assert error["type"] == type_, error
    return error


def assert_routed(headers: Any, backend: str = "gpu", route: str = "chat") -> None:
    assert headers["x-switchyard-backend"] == backend
    assert headers["x-switchyard-route"] == route
    assert headers["x-switchyard-sensitivity"] == "public"


async def post(url: str, path: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    merged = {"content-type": "application/json", "anthropic-version": "2023-06-01", **(headers or {})}
    async with aiohttp.ClientSession() as http, http.post(url + path, data=data, headers=merged) as r:
        raw = await r.read()
    try:
        return r.status, orjson.loads(raw)
    except orjson.JSONDecodeError:
        return r.status, raw


def parse_sse(raw: bytes) -> list[tuple[str | None, Any]]:
    """(event name, decoded data) for every event of a ``text/event-stream`` body."""
    events: list[tuple[str | None, Any]] = []
    for block in re.split(r"\r?\n\r?\n", raw.decode()):
        if not block.strip():
            continue
        name, data = None, []
        for line in block.splitlines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
        joined = "\n".join(data)
        try:
            events.append((name, orjson.loads(joined)))
        except orjson.JSONDecodeError:
            events.append((name, joined))
    return events


async def raw_stream(url: str, body: dict[str, Any], headers: dict[str, str] | None = None, query: str = ""
                     ) -> tuple[int, dict[str, str], list[tuple[str | None, Any]]]:
    merged = {"anthropic-version": "2023-06-01", **(headers or {})}
    async with aiohttp.ClientSession() as http, \
            http.post(url + "/v1/messages" + query, json={**body, "stream": True}, headers=merged) as r:
        raw = await r.read()
        return r.status, dict(r.headers), parse_sse(raw)


def assert_event_grammar(events: list[tuple[str | None, Any]]) -> None:
    """Every event is named by its own ``type``; the sequence is one well-formed message."""
    for name, data in events:
        assert isinstance(data, dict) and data.get("type") == name, (name, data)
    names = "".join(f"{name} " for name, _ in events)
    assert STREAM_GRAMMAR.fullmatch(names), names
    open_block = None
    for name, data in events:
        if name == "content_block_start":
            assert open_block is None
            open_block = data["index"]
        elif name == "content_block_delta":
            assert data["index"] == open_block
        elif name == "content_block_stop":
            assert data["index"] == open_block
            open_block = None


@pytest.fixture(autouse=True)
async def _deadline():
    async with asyncio.timeout(20):
        yield
    await close_clients()


# -- create -----------------------------------------------------------------------------------
async def test_text_message_and_routing_headers(gateway, fake_openai):
    url = await gateway(policy(("gpu", local(fake_openai))))
    raw = await aclient(url).messages.with_raw_response.create(model="chat", max_tokens=64, messages=HELLO)
    message = await raw.parse()
    assert_routed(raw.headers)
    assert raw.headers["content-type"].startswith("application/json")
    assert message.type == "message" and message.role == "assistant"
    assert message.id.startswith("msg_")
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == fake_openai.reply_text
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert message.model == "fake-primary"  # the model that answered, as on the chat surface
    assert message.usage.input_tokens > 0
    assert message.usage.output_tokens == len(fake_openai.reply_text.split())
    sent = upstream(fake_openai)
    assert sent["model"] == "served-model"
    assert [(m["role"], text_of(m["content"])) for m in sent["messages"]] == [("user", "Say hello.")]
    assert sent.get("max_tokens", sent.get("max_completion_tokens")) == 64
    assert not sent.get("stream")


async def test_sampling_fields_and_stop_sequences_reach_the_backend(gateway, fake_openai):
    url = await gateway(policy(("gpu", local(fake_openai))))
    # anthropic 2.10 has no temperature/top_p keywords any more; the wire API still takes them
    await aclient(url).messages.create(model="chat", max_tokens=32, messages=HELLO,
                                       stop_sequences=["\n\nHuman:", "END"],
                                       extra_body={"temperature": 0.2, "top_p": 0.9})
    sent = upstream(fake_openai)
    assert sent["temperature"] == 0.2 and sent["top_p"] == 0.9
    assert sent["stop"] == ["\n\nHuman:", "END"]


async def test_multi_turn_keeps_order_and_roles(gateway, fake_openai):
    url = await gateway(policy(("gpu", local(fake_openai))))
    turns = [{"role": "user", "content": "My name is Ada."},
             {"role": "assistant", "content": [{"type": "text", "text": "Hello Ada."}]},
             {"role": "user", "content": [{"type": "text", "text": "What is my name?"}]}]
    message = await aclient(url).messages.create(model="chat", max_tokens=64, messages=turns)
    assert message.content[0].text == fake_openai.reply_text
    sent = upstream(fake_openai)["messages"]
    assert [(m["role"], text_of(m["content"])) for m in sent] == [
        ("user", "My name is Ada."), ("assistant", "Hello Ada."), ("user", "What is my name?")]


@pytest.mark.parametrize("system", ["Be brief. Answer in English.",
                                    [{"type": "text", "text": "Be brief."},
                                     {"type": "text", "text": "Answer in English."}]],
                         ids=["string", "blocks"])
async def test_system_string_or_blocks_becomes_the_system_message(gateway, fake_openai, system):
    url = await gateway(policy(("gpu", local(fake_openai))))
    message = await aclient(url).messages.create(model="chat", max_tokens=64, system=system, messages=HELLO)
    assert message.content[0].text == fake_openai.reply_text
    sent = upstream(fake_openai)["messages"]
    assert sent[0]["role"] in ("system", "developer")
    system_text = " ".join(text_of(m["content"]) for m in sent if m["role"] in ("system", "developer"))
    assert "Be brief." in system_text and "Answer in English." in system_text
    assert [(m["role"], text_of(m["content"])) for m in sent[1:] if m["role"] not in ("system", "developer")] == \
        [("user", "Say hello.")]


async def test_max_tokens_cut_is_stop_reason_max_tokens(gateway, fake_openai):
    url = await gateway(policy(("gpu", local(fake_openai))))
    message = await aclient(url).messages.create(model="chat", max_tokens=2, messages=HELLO)
    assert message.stop_reason == "max_tokens"
    assert message.content[0].text == "Hello from" and message.usage.output_tokens == 2


# -- tools ------------------------------------------------------------------------------------
async def test_tool_use_answer_then_tool_result_follow_up(gateway, fake_openai):
    url = await gateway(policy(("gpu", local(fake_openai))))
    c = aclient(url)
    first = await c.messages.create(model="chat", max_tokens=64, tools=TOOLS, messages=[
        {"role": "user", "content": "Look up the boiling point of water."}])
    assert first.stop_reason == "tool_use"
    uses = [block for block in first.content if block.type == "tool_use"]
    assert len(uses) == 1
    use = uses[0]
    assert use.name == "lookup" and use.input == {} and use.id
    sent = upstream(fake_openai)
    assert sent["tools"] == [{"type": "function", "function": {
        "name": "lookup", "description": "Find a fact.", "parameters": TOOLS[0]["input_schema"]}}]

    follow = [{"role": "user", "content": "Look up the boiling point of water."},
              {"role": "assistant", "content": [b.model_dump(mode="json", exclude_none=True) for b in first.content]},
              {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "100 C"}]}]
    second = await c.messages.create(model="chat", max_tokens=64, tools=TOOLS, tool_choice={"type": "none"},
                                     messages=follow)
    assert second.stop_reason == "end_turn"
    assert second.content[0].type == "text" and second.content[0].text == fake_openai.reply_text
    sent = upstream(fake_openai, 1)
    assert sent["tool_choice"] == "none"
    assistant = next(m for m in sent["messages"] if m["role"] == "assistant")
    call = assistant["tool_calls"][0]
    assert call["id"] == use.id and call["type"] == "function"
    assert call["function"]["name"] == "lookup" and orjson.loads(call["function"]["arguments"]) == {}
    result = next(m for m in sent["messages"] if m["role"] == "tool")
    assert result["tool_call_id"] == use.id and text_of(result["content"]) == "100 C"
    assert sent["messages"].index(assistant) < sent["messages"].index(result)


async def test_parallel_tool_uses_and_their_results_keep_the_chat_order(gateway, fake_openai):
    """Text and two tool_use blocks in one assistant turn become one assistant message with two
    tool_calls; the two tool_result blocks (and the text after them) follow in order."""
    url = await gateway(policy(("gpu", local(fake_openai))))
    history = [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": [
            {"type": "text", "text": "Let me check both."},
            {"type": "tool_use", "id": "toolu_paris", "name": "lookup", "input": {"q": "Paris"}},
            {"type": "tool_use", "id": "toolu_rome", "name": "lookup", "input": {"q": "Rome"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_paris", "content": "sunny"},
            {"type": "tool_result", "tool_use_id": "toolu_rome", "content": [{"type": "text", "text": "rain"}],
             "is_error": False},
            {"type": "text", "text": "Summarise, please."}]}]
    message = await aclient(url).messages.create(model="chat", max_tokens=64, tools=TOOLS,
                                                 tool_choice={"type": "none"}, messages=history)
    assert message.content[0].text == fake_openai.reply_text
    sent = upstream(fake_openai)["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "tool", "user"]
    assert text_of(sent[1]["content"]) == "Let me check both."
    calls = sent[1]["tool_calls"]
    assert [c["id"] for c in calls] == ["toolu_paris", "toolu_rome"]
    assert [orjson.loads(c["function"]["arguments"]) for c in calls] == [{"q": "Paris"}, {"q": "Rome"}]
    assert [(m["tool_call_id"], text_of(m["content"])) for m in sent[2:4]] == [
        ("toolu_paris", "sunny"), ("toolu_rome", "rain")]
    assert text_of(sent[4]["content"]) == "Summarise, please."


@pytest.mark.parametrize(("choice", "expected"), [
    ({"type": "auto"}, "auto"),
    ({"type": "any"}, "required"),
    ({"type": "tool", "name": "lookup"}, {"type": "function", "function": {"name": "lookup"}}),
], ids=["auto", "any", "tool"])
async def test_tool_choice_maps_to_the_chat_form(gateway, fake_openai, choice, expected):
    url = await gateway(policy(("gpu", local(fake_openai))))
    message = await aclient(url).messages.create(model="chat", max_tokens=64, tools=TOOLS, tool_choice=choice,
                                                 messages=HELLO)
    assert message.content[-1].type == "tool_use" and message.content[-1].name == "lookup"
    assert upstream(fake_openai)["tool_choice"] == expected


async def test_base64_image_reaches_the_backend_as_a_data_url(gateway, fake_openai):
    url = await gateway(policy(("gpu", local(fake_openai))))
    content = [{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}},
               {"type": "text", "text": "What is in this picture?"}]
    message = await aclient(url).messages.create(model="chat", max_tokens=64,
                                                 messages=[{"role": "user", "content": content}])
    assert message.content[0].text == fake_openai.reply_text
    parts = upstream(fake_openai)["messages"][-1]["content"]
    assert isinstance(parts, list)
    images = [p for p in parts if p.get("type") == "image_url"]
    assert len(images) == 1
    assert images[0]["image_url"]["url"] == f"data:image/png;base64,{PNG_B64}"
    assert text_of(parts) == "What is in this picture?"


# -- streaming --------------------------------------------------------------------------------
async def test_stream_helper_final_message_equals_the_non_stream_answer(gateway, fake_openai):
    url = await gateway(policy(("gpu", local(fake_openai))))
    c = aclient(url)
    whole = await c.messages.create(model="chat", max_tokens=64, messages=HELLO)
    async with c.messages.stream(model="chat", max_tokens=64, messages=HELLO) as stream:
        headers = stream.response.headers
        events = [event async for event in stream]
        final = await stream.get_final_message()
    assert headers["content-type"].startswith("text/event-stream")
    assert_routed(headers)
    raw_types = [e.type for e in events if e.type not in ("text", "input_json", "citation", "thinking",
                                                           "signature")]
    assert raw_types[0] == "message_start" and raw_types[-1] == "message_stop"
    assert raw_types[-2] == "message_delta"
    streamed = "".join(e.text for e in events if e.type == "text")
    assert streamed == final.content[0].text == whole.content[0].text == fake_openai.reply_text
    assert final.stop_reason == "end_turn"
    assert final.id.startswith("msg_")
    assert final.usage.output_tokens == len(fake_openai.reply_text.split())
    assert final.usage.input_tokens == whole.usage.input_tokens > 0  # message_start or message_delta
    assert upstream(fake_openai, 1).get("stream") is True


async def test_stream_wire_events_follow_the_messages_grammar(gateway, fake_openai):
    url = await gateway(policy(("gpu", local(fake_openai))))
    status, headers, events = await raw_stream(url, {"model": "chat", "max_tokens": 64, "messages": HELLO})
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    assert_event_grammar(events)
    start = events[0][1]["message"]
    assert start["type"] == "message" and start["role"] == "assistant" and start["content"] == []
    assert start["stop_reason"] is None and isinstance(start["usage"]["input_tokens"], int)
    block_start = next(d for n, d in events if n == "content_block_start")
    assert block_start["content_block"] == {"type": "text", "text": ""}
    deltas = [d["delta"] for n, d in events if n == "content_block_delta"]
    assert all(d["type"] == "text_delta" for d in deltas)
    assert "".join(d["text"] for d in deltas) == fake_openai.reply_text
    delta = next(d for n, d in events if n == "message_delta")
    assert delta["delta"]["stop_reason"] == "end_turn"
    assert delta["usage"]["output_tokens"] == len(fake_openai.reply_text.split())


async def test_stream_of_a_tool_use(gateway, fake_openai):
    url = await gateway(policy(("gpu", local(fake_openai))))
    async with aclient(url).messages.stream(model="chat", max_tokens=64, tools=TOOLS, messages=HELLO) as stream:
        final = await stream.get_final_message()
    assert final.stop_reason == "tool_use"
    use = final.content[-1]
    assert use.type == "tool_use" and use.name == "lookup" and use.input == {} and use.id
    _, _, events = await raw_stream(url, {"model": "chat", "max_tokens": 64, "tools": TOOLS, "messages": HELLO})
    assert_event_grammar(events)
    starts = [d["content_block"] for n, d in events if n == "content_block_start"]
    assert starts[-1]["type"] == "tool_use" and starts[-1]["name"] == "lookup" and starts[-1]["input"] == {}
    json_deltas = [d["delta"] for n, d in events if n == "content_block_delta"
                   and d["delta"]["type"] == "input_json_delta"]
    assert orjson.loads("".join(d["partial_json"] for d in json_deltas) or "{}") == {}


async def test_a_broken_stream_ends_with_an_error_event_not_message_stop(gateway, fake_openai):
    fake_openai.faults.always(Fault(cut_after_chunks=2))
    url = await gateway(policy(("gpu", local(fake_openai))))
    status, _, events = await raw_stream(url, {"model": "chat", "max_tokens": 64, "messages": HELLO})
    assert status == 200
    names = [name for name, _ in events]
    assert names[0] == "message_start"
    assert names[-1] == "error" and "message_stop" not in names
    assert_anthropic_error(events[-1][1])
    with pytest.raises(anthropic.APIStatusError) as info:
        async with aclient(url).messages.stream(model="chat", max_tokens=64, messages=HELLO) as stream:
            await stream.get_final_message()
    assert info.value.type in ERROR_TYPES


# -- count_tokens -----------------------------------------------------------------------------
async def test_count_tokens(gateway, fake_openai):
    url = await gateway(policy(("gpu", local(fake_openai))))
    c = aclient(url)
    short = await c.messages.count_tokens(model="chat", messages=HELLO)
    long = await c.messages.count_tokens(model="chat", system="You are a careful assistant.", messages=[
        {"role": "user", "content": "Say hello. " * 50}])
    assert isinstance(short.input_tokens, int) and short.input_tokens > 0
    assert long.input_tokens > short.input_tokens
    raw = await c.messages.with_raw_response.count_tokens(model="chat", messages=HELLO)
    assert orjson.loads(await raw.read()) == {"input_tokens": short.input_tokens}
    assert fake_openai.calls(CHAT) == []  # counting generates nothing


async def test_count_tokens_for_an_unknown_model_is_not_found(gateway, fake_openai):
    url = await gateway(policy(("gpu", local(fake_openai))))
    with pytest.raises(anthropic.NotFoundError) as info:
        await aclient(url).messages.count_tokens(model="no-such-alias", messages=HELLO)
    assert_anthropic_error(info.value.body, "not_found_error")


# -- beta path --------------------------------------------------------------------------------
async def test_beta_messages_path(gateway, fake_openai):
    url = await gateway(policy(("gpu", local(fake_openai))))
    c = aclient(url)
    raw = await c.messages.with_raw_response.create(model="chat", max_tokens=64, messages=HELLO,
                                                    extra_query={"beta": "true"})
    assert raw.http_request.url.params.get("beta") == "true"  # what Claude Code sends
    assert_routed(raw.headers)
    assert (await raw.parse()).content[0].text == fake_openai.reply_text
    beta = await c.beta.messages.create(model="chat", max_tokens=64, messages=HELLO,
                                        betas=["interleaved-thinking-2025-05-14"])
    assert beta.content[0].text == fake_openai.reply_text
    status, _, events = await raw_stream(url, {"model": "chat", "max_tokens": 64, "messages": HELLO},
                                         query="?beta=true")
    assert status == 200
    assert_event_grammar(events)


# -- errors -----------------------------------------------------------------------------------
async def test_unknown_model_is_not_found_in_anthropic_shape(gateway, fake_openai):
    url = await gateway(policy(("gpu", local(fake_openai))))
    with pytest.raises(anthropic.NotFoundError) as info:
        await aclient(url).messages.create(model="no-such-alias", max_tokens=64, messages=HELLO)
    error = assert_anthropic_error(info.value.body, "not_found_error")
    assert "no-such-alias" in error["message"]
    assert info.value.type == "not_found_error"
    assert fake_openai.received == []


async def test_malformed_body_through_the_sdk_is_a_bad_request(gateway, fake_openai):
    url = await gateway(policy(("gpu", local(fake_openai))))
    with pytest.raises(anthropic.BadRequestError) as info:
        await aclient(url).messages.create(model="chat", max_tokens=64,
                                           messages=[{"role": "robot", "content": "not a message role"}])
    assert_anthropic_error(info.value.body, "invalid_request_error")
    assert fake_openai.received == []


@pytest.mark.parametrize("body", [
    b"{not json",
    b"[1, 2]",
    {"model": "chat", "messages": HELLO},  # max_tokens is required
    {"model": "chat", "max_tokens": 16},  # messages is required
    {"model": "chat", "max_tokens": 16, "messages": "Say hello."},
    {"model": "chat", "max_tokens": "16", "messages": HELLO},
    {"max_tokens": 16, "messages": HELLO},
    {"model": "chat", "max_tokens": 16, "messages": [{"role": "robot", "content": "hi"}]},
    {"model": "chat", "max_tokens": 16, "messages": HELLO, "system": 7},
    {"model": "chat", "max_tokens": 16, "messages": [{"role": "system", "content": "hi"}]},
    {"model": "chat", "max_tokens": 16, "messages": []},
    {"model": "chat", "max_tokens": 0, "messages": HELLO},
    {"model": "chat", "max_tokens": 16, "messages": [{"role": "user", "content": [{"text": "no type"}]}]},
], ids=["not-json", "not-object", "no-max-tokens", "no-messages", "messages-string", "max-tokens-string",
        "no-model", "bad-role", "bad-system", "system-role", "empty-messages", "max-tokens-zero",
        "block-without-type"])
async def test_malformed_bodies_are_400_invalid_request_error(gateway, fake_openai, body):
    url = await gateway(policy(("gpu", local(fake_openai))))
    status, answer = await post(url, "/v1/messages", body)
    assert status == 400, answer
    assert_anthropic_error(answer, "invalid_request_error")
    assert fake_openai.received == []


async def test_upstream_bad_request_keeps_its_message(gateway, fake_openai):
    fake_openai.faults.always(Fault(status=400, error_type="invalid_request_error", message="bad tool schema"))
    url = await gateway(policy(("gpu", local(fake_openai))))
    with pytest.raises(anthropic.BadRequestError) as info:
        await aclient(url).messages.create(model="chat", max_tokens=64, messages=HELLO)
    error = assert_anthropic_error(info.value.body, "invalid_request_error")
    assert "bad tool schema" in error["message"]


async def test_all_backends_failed_is_an_anthropic_shaped_5xx(gateway, fake_openai, fake_openai_b):
    fake_openai.faults.always(Fault(status=503))
    fake_openai_b.faults.always(Fault(status=502))
    url = await gateway(policy(("a", local(fake_openai)), ("b", local(fake_openai_b)),
                               aliases={"chat": ["a", "b"]}))
    with pytest.raises(anthropic.APIStatusError) as info:
        await aclient(url).messages.create(model="chat", max_tokens=64, messages=HELLO)
    assert info.value.status_code >= 500
    assert_anthropic_error(info.value.body)
    assert info.value.response.headers["x-switchyard-tried"] == "a,b"
    with pytest.raises(anthropic.APIStatusError) as info:  # nothing started: an HTTP error, not an event
        async with aclient(url).messages.stream(model="chat", max_tokens=64, messages=HELLO) as stream:
            await stream.get_final_message()
    assert info.value.status_code >= 500
    assert_anthropic_error(info.value.body)


async def test_keys_bearer_and_x_api_key_and_a_bad_key(gateway, fake_openai):
    url = await gateway(keyed(fake_openai), env=KEYS)
    message = await aclient(url, KEYS["KEY_A"]).messages.create(model="chat", max_tokens=64, messages=HELLO)
    assert message.content[0].text == fake_openai.reply_text
    body = {"model": "chat", "max_tokens": 64, "messages": HELLO}
    status, answer = await post(url, "/v1/messages", body, {"x-api-key": KEYS["KEY_B"]})
    assert status == 200 and answer["content"][0]["text"] == fake_openai.reply_text
    with pytest.raises(anthropic.AuthenticationError) as info:
        await aclient(url, "sk-wrong-0123456789").messages.create(model="chat", max_tokens=64, messages=HELLO)
    assert_anthropic_error(info.value.body, "authentication_error")
    status, answer = await post(url, "/v1/messages", body, {"x-api-key": "sk-wrong-0123456789"})
    assert status == 401
    assert_anthropic_error(answer, "authentication_error")
    status, answer = await post(url, "/v1/messages", body)  # no key at all
    assert status == 401
    assert_anthropic_error(answer, "authentication_error")
    status, answer = await post(url, "/v1/messages/count_tokens", {"model": "chat", "messages": HELLO})
    assert status == 401
    assert_anthropic_error(answer, "authentication_error")
    assert len(fake_openai.calls(CHAT)) == 2
