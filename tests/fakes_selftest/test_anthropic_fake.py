"""FakeAnthropic driven by the official `anthropic` SDK and by raw HTTP."""

from __future__ import annotations

import aiohttp
import anthropic
import pytest

from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.faults import Fault
from tests.fakes.sse_client import read_sse

REPLY = "Hello from the fake upstream."
MESSAGES = [{"role": "user", "content": "what is up"}]
TOOLS = [
    {"name": "lookup", "description": "d", "input_schema": {"type": "object"}},
    {"name": "other", "description": "d", "input_schema": {"type": "object"}},
]
STREAM_ORDER = (
    ["message_start", "content_block_start", "ping"]
    + ["content_block_delta"] * 5
    + ["content_block_stop", "message_delta", "message_stop"]
)


async def test_messages_non_stream(ant: anthropic.AsyncAnthropic, ant_fake: FakeAnthropic):
    raw = await ant.messages.with_raw_response.create(
        model="claude-x", max_tokens=64, system="be kind", messages=MESSAGES
    )
    message = await raw.parse()
    assert raw.headers["x-fake-upstream"] == "ant-1" and raw.headers["request-id"]
    assert message.id.startswith("msg_") and message.type == "message"
    assert message.role == "assistant" and message.model == "claude-fake"
    assert [(b.type, b.text) for b in message.content] == [("text", REPLY)]
    assert (message.stop_reason, message.stop_sequence) == ("end_turn", None)
    assert (message.usage.input_tokens, message.usage.output_tokens) == (5, 5)
    assert ant_fake.received[0].headers["anthropic-version"]


async def test_messages_stream_final_message(ant: anthropic.AsyncAnthropic):
    async with ant.messages.stream(model="m", max_tokens=64, messages=MESSAGES) as stream:
        texts = [t async for t in stream.text_stream]
        final = await stream.get_final_message()
    assert "".join(texts) == REPLY and len(texts) == 5
    assert final.content[0].text == REPLY and final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (3, 5)


async def test_raw_stream_event_sequence(
    ant_fake: FakeAnthropic, http: aiohttp.ClientSession, ant_headers: dict[str, str]
):
    body = {"model": "m", "max_tokens": 64, "messages": MESSAGES, "stream": True}
    async with http.post(f"{ant_fake.base_url}/v1/messages", json=body, headers=ant_headers) as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        read = await read_sse(resp)
    assert read.complete and read.names == STREAM_ORDER
    payloads = read.json_events()
    assert [p["type"] for p in payloads] == STREAM_ORDER  # data.type mirrors the event name
    start = payloads[0]["message"]
    assert start["content"] == [] and start["stop_reason"] is None
    assert start["usage"] == {"input_tokens": 3, "output_tokens": 1}
    assert payloads[1]["content_block"] == {"type": "text", "text": ""}
    assert payloads[3]["delta"] == {"type": "text_delta", "text": "Hello"}
    assert payloads[-2]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert payloads[-2]["usage"] == {"output_tokens": 5}


async def test_tool_use_non_stream_and_stream(ant: anthropic.AsyncAnthropic):
    message = await ant.messages.create(model="m", max_tokens=64, messages=MESSAGES, tools=TOOLS)
    block = message.content[0]
    assert message.stop_reason == "tool_use"
    assert block.type == "tool_use" and block.id.startswith("toolu_")
    assert (block.name, block.input) == ("lookup", {})
    async with ant.messages.stream(
        model="m",
        max_tokens=64,
        messages=MESSAGES,
        tools=TOOLS,
        tool_choice={"type": "tool", "name": "other"},
    ) as stream:
        final = await stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert (final.content[0].type, final.content[0].name, final.content[0].input) == (
        "tool_use",
        "other",
        {},
    )


async def test_max_tokens_truncates(ant: anthropic.AsyncAnthropic):
    message = await ant.messages.create(model="m", max_tokens=2, messages=MESSAGES)
    assert message.content[0].text == "Hello from" and message.stop_reason == "max_tokens"


@pytest.mark.parametrize(
    ("fault", "exc", "status", "type_"),
    [
        (Fault(status=429, retry_after=3), anthropic.RateLimitError, 429, "rate_limit_error"),
        (Fault(status=500), anthropic.InternalServerError, 500, "api_error"),
        (
            Fault(error_type="overloaded_error"),
            anthropic.InternalServerError,
            529,
            "overloaded_error",
        ),
        (
            Fault(error_type="context_length_exceeded"),
            anthropic.BadRequestError,
            400,
            "invalid_request_error",
        ),
    ],
)
async def test_error_mapping(
    ant: anthropic.AsyncAnthropic,
    ant_fake: FakeAnthropic,
    fault: Fault,
    exc: type[Exception],
    status: int,
    type_: str,
):
    ant_fake.faults.push(fault)
    with pytest.raises(exc) as info:
        await ant.messages.create(model="m", max_tokens=64, messages=MESSAGES)
    err = info.value
    assert err.status_code == status and err.type == type_
    assert err.body["type"] == "error" and err.body["request_id"] == err.request_id
    if fault.retry_after:
        assert err.response.headers["retry-after"] == "3"
    if fault.error_type == "context_length_exceeded":
        assert err.api_message == "prompt is too long: 210000 tokens > 200000 maximum"


async def test_validation_errors(ant: anthropic.AsyncAnthropic):
    with pytest.raises(anthropic.BadRequestError) as system_role:
        await ant.messages.create(
            model="m", max_tokens=8, messages=[{"role": "system", "content": "x"}, *MESSAGES]
        )
    assert 'Unexpected role "system"' in system_role.value.api_message
    with pytest.raises(anthropic.BadRequestError) as missing:
        await ant.messages.create(model="m", max_tokens=8, messages=[], system="s")
    assert missing.value.api_message == "messages: at least one message is required"


async def test_raw_header_requirements(
    ant_fake: FakeAnthropic, http: aiohttp.ClientSession, ant_headers: dict[str, str]
):
    url = f"{ant_fake.base_url}/v1/messages"
    body = {"model": "m", "max_tokens": 8, "messages": MESSAGES}
    async with http.post(url, json=body, headers=ant_headers) as resp:
        assert resp.status == 200  # x-api-key (litellm style) is accepted
    async with http.post(url, json=body, headers={**ant_headers, "x-api-key": "bad"}) as resp:
        error = await resp.json()
    assert resp.status == 401 and error["error"]["type"] == "authentication_error"
    async with http.post(url, json=body, headers={"x-api-key": ant_headers["x-api-key"]}) as resp:
        error = await resp.json()
    assert resp.status == 400 and error["error"]["message"] == "anthropic-version: header is required"
    async with http.post(url, json={"model": "m", "messages": MESSAGES}, headers=ant_headers) as resp:
        error = await resp.json()
    assert error == {
        "type": "error",
        "request_id": error["request_id"],
        "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"},
    }
