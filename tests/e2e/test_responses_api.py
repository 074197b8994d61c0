"""The OpenAI Responses surface (``POST /v1/responses``, ``GET``/``DELETE /v1/responses/{id}``)
end to end, with the official ``openai`` SDK's Responses client.

The gateway translates a Responses request (``input`` as a string or items,
``instructions``, function tools and ``function_call_output`` items, ``previous_response_id``
from its own store) into a chat completion for the chosen backend (a ``FakeOpenAI`` behind
``kind: vllm``) and answers with a ``response`` object or its typed SSE events
(``response.created`` … ``response.output_text.delta`` … ``response.completed``). Errors are
OpenAI-shaped. Field names come from ``openai.types.responses``; what the backend was sent is
checked on the fake's recorded calls.
"""

from __future__ import annotations

import asyncio
import base64
import re
from typing import Any

import aiohttp
import openai
import orjson
import pytest

from router.settings import Settings
from tests.e2e.test_gateway_sdk import local, policy
from tests.e2e.test_messages_api import KEYS, OPEN_CLIENTS, PNG, close_clients, keyed, text_of, upstream
from tests.fakes.faults import Fault

CHAT = "/v1/chat/completions"
TOOLS = [{"type": "function", "name": "lookup", "description": "Find a fact.", "strict": False,
          "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}]
DATA_URL = "data:image/png;base64," + base64.b64encode(PNG).decode()
ERROR_KEYS = {"message", "type", "param", "code"}


def oclient(url: str, key: str = "unused", timeout: float = 10) -> openai.AsyncOpenAI:
    made = openai.AsyncOpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=timeout)
    OPEN_CLIENTS.append(made)
    return made


def turns(body: dict[str, Any]) -> list[tuple[str, str]]:
    """(role, text) of every upstream chat message."""
    return [(m["role"], text_of(m.get("content"))) for m in body["messages"]]


def assert_openai_error(body: Any) -> dict[str, Any]:
    """The SDK's ``err.body`` is the inner ``error`` object."""
    assert isinstance(body, dict) and ERROR_KEYS <= set(body), body
    assert isinstance(body["message"], str) and body["message"]
    return body


def assert_routed(headers: Any, backend: str = "gpu", route: str = "chat") -> None:
    assert headers["x-switchyard-backend"] == backend
    assert headers["x-switchyard-route"] == route
    assert headers["x-switchyard-sensitivity"] == "public"


def assert_completed_text(response: Any, text: str) -> None:
    assert response.object == "response" and response.status == "completed"
    assert response.id.startswith("resp_")
    assert response.error is None and response.incomplete_details is None
    messages = [item for item in response.output if item.type == "message"]
    assert len(messages) == 1 and messages[0].role == "assistant" and messages[0].status == "completed"
    assert [part.type for part in messages[0].content] == ["output_text"]
    assert response.output_text == text


def assert_event_sequence(events: list[Any], terminal: tuple[str, ...] = ("response.completed",)) -> None:
    types = [e.type for e in events]
    assert types[0] == "response.created" and types[-1] in terminal, types
    assert types.count("response.created") == 1 and types.count(types[-1]) == 1
    numbers = [e.sequence_number for e in events]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), numbers
    assert numbers[0] == 0


async def post(url: str, path: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    async with aiohttp.ClientSession() as http, \
            http.post(url + path, data=data, headers={"content-type": "application/json", **(headers or {})}) as r:
        raw = await r.read()
    try:
        return r.status, orjson.loads(raw)
    except orjson.JSONDecodeError:
        return r.status, raw


async def raw_events(url: str, body: dict[str, Any]) -> list[tuple[str | None, dict[str, Any]]]:
    async with aiohttp.ClientSession() as http, \
            http.post(url + "/v1/responses", json={**body, "stream": True}) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
        raw = (await r.read()).decode()
    events = []
    for block in re.split(r"\r?\n\r?\n", raw):
        if not block.strip():
            continue
        name = next((line[6:].strip() for line in block.splitlines() if line.startswith("event:")), None)
        data = "\n".join(line[5:].removeprefix(" ") for line in block.splitlines() if line.startswith("data:"))
        events.append((name, orjson.loads(data)))
    return events


@pytest.fixture(autouse=True)
async def _deadline():
    async with asyncio.timeout(20):
        yield
    await close_clients()


# -- create -----------------------------------------------------------------------------------
async def test_string_input_and_routing_headers(gateway, fake_openai):
    url = await gateway(policy(("gpu", local(fake_openai))))
    raw = await oclient(url).responses.with_raw_response.create(model="chat", input="Say hello.")
    response = raw.parse()
    assert_routed(raw.headers)
    assert_completed_text(response, fake_openai.reply_text)
    assert response.model == "fake-primary"  # the model that answered, as on the chat surface
    usage = response.usage
    assert usage.input_tokens > 0 and usage.output_tokens == len(fake_openai.reply_text.split())
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    sent = upstream(fake_openai)
    assert sent["model"] == "served-model"
    assert turns(sent) == [("user", "Say hello.")]
    assert not sent.get("stream")


async def test_instructions_become_the_system_message(gateway, fake_openai):
    url = await gateway(policy(("gpu", local(fake_openai))))
    response = await oclient(url).responses.create(model="chat", instructions="Be brief.", input="Say hello.",
                                                   temperature=0.2, top_p=0.9, max_output_tokens=64)
    assert_completed_text(response, fake_openai.reply_text)
    assert response.instructions == "Be brief."
    sent = upstream(fake_openai)
    assert turns(sent)[0] in (("system", "Be brief."), ("developer", "Be brief."))
    assert turns(sent)[1:] == [("user", "Say hello.")]
    assert sent["temperature"] == 0.2 and sent["top_p"] == 0.9
    assert sent.get("max_tokens", sent.get("max_completion_tokens")) == 64


async def test_item_input_keeps_order_and_roles(gateway, fake_openai):
    url = await gateway(policy(("gpu", local(fake_openai))))
    items = [{"role": "developer", "content": "Be brief."},
             {"role": "user", "content": "My name is Ada."},
             {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hello Ada."}]},
             {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "What is my name?"}]}]
    response = await oclient(url).responses.create(model="chat", input=items)
    assert_completed_text(response, fake_openai.reply_text)
    sent = turns(upstream(fake_openai))
    assert sent[0] in (("system", "Be brief."), ("developer", "Be brief."))
    assert sent[1:] == [("user", "My name is Ada."), ("assistant", "Hello Ada."), ("user", "What is my name?")]


async def test_max_output_tokens_cut_is_incomplete(gateway, fake_openai):
    fake_openai.reply_text = " ".join(f"w{i}" for i in range(20))
    url = await gateway(policy(("gpu", local(fake_openai))))
    response = await oclient(url).responses.create(model="chat", input="Say hello.", max_output_tokens=16)
    assert response.status == "incomplete"
    assert response.incomplete_details is not None and response.incomplete_details.reason == "max_output_tokens"
    assert response.output_text == " ".join(f"w{i}" for i in range(16))


async def test_max_output_tokens_cut_stream_ends_with_response_incomplete(gateway, fake_openai):
    fake_openai.reply_text = " ".join(f"w{i}" for i in range(20))
    url = await gateway(policy(("gpu", local(fake_openai))))
    stream = await oclient(url).responses.create(model="chat", input="Say hello.", max_output_tokens=16,
                                                 stream=True)
    events = [event async for event in stream]
    assert_event_sequence(events, terminal=("response.incomplete",))
    assert "response.completed" not in [e.type for e in events]
    final = events[-1].response
    assert final.status == "incomplete" and final.incomplete_details.reason == "max_output_tokens"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == final.output_text == " ".join(f"w{i}" for i in range(16))


async def test_input_image_reaches_the_backend(gateway, fake_openai):
    url = await gateway(policy(("gpu", local(fake_openai))))
    item = {"role": "user", "content": [{"type": "input_text", "text": "What is in this picture?"},
                                        {"type": "input_image", "image_url": DATA_URL, "detail": "auto"}]}
    response = await oclient(url).responses.create(model="chat", input=[item])
    assert_completed_text(response, fake_openai.reply_text)
    parts = upstream(fake_openai)["messages"][-1]["content"]
    images = [p for p in parts if p.get("type") == "image_url"]
    assert len(images) == 1 and images[0]["image_url"]["url"] == DATA_URL
    assert text_of(parts) == "What is in this picture?"


async def test_text_format_json_schema_becomes_response_format(gateway, fake_openai):
    url = await gateway(policy(("gpu", local(fake_openai))))
    schema = {"type": "object", "properties": {"colour": {"type": "string"}}, "required": ["colour"],
              "additionalProperties": False}
    await oclient(url).responses.create(model="chat", input="Name a colour.", text={"format": {
        "type": "json_schema", "name": "colour", "schema": schema, "strict": True}})
    assert upstream(fake_openai)["response_format"] == {
        "type": "json_schema", "json_schema": {"name": "colour", "schema": schema, "strict": True}}


# -- tools ------------------------------------------------------------------------------------
async def test_function_call_then_function_call_output(gateway, fake_openai):
    url = await gateway(policy(("gpu", local(fake_openai))))
    c = oclient(url)
    question = {"role": "user", "content": "Look up the boiling point of water."}
    first = await c.responses.create(model="chat", input=[question], tools=TOOLS)
    assert first.status == "completed"
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1
    call = calls[0]
    assert call.name == "lookup" and orjson.loads(call.arguments) == {} and call.call_id
    assert first.output_text == ""
    sent_tool = upstream(fake_openai)["tools"][0]
    assert sent_tool["type"] == "function"
    assert {k: sent_tool["function"][k] for k in ("name", "description", "parameters")} == {
        "name": "lookup", "description": "Find a fact.", "parameters": TOOLS[0]["parameters"]}

    follow = [question, call.model_dump(mode="json", by_alias=True, exclude_none=True),
              {"type": "function_call_output", "call_id": call.call_id, "output": "100 C"}]
    second = await c.responses.create(model="chat", input=follow, tools=TOOLS, tool_choice="none")
    assert_completed_text(second, fake_openai.reply_text)
    sent = upstream(fake_openai, 1)
    assert sent["tool_choice"] == "none"
    assistant = next(m for m in sent["messages"] if m["role"] == "assistant")
    assert assistant["tool_calls"][0]["id"] == call.call_id
    assert assistant["tool_calls"][0]["function"]["name"] == "lookup"
    result = next(m for m in sent["messages"] if m["role"] == "tool")
    assert result["tool_call_id"] == call.call_id and text_of(result["content"]) == "100 C"
    assert sent["messages"].index(assistant) < sent["messages"].index(result)


async def test_parallel_function_calls_become_one_assistant_turn(gateway, fake_openai):
    """Two function_call items in a row are one assistant message with two tool_calls, and
    each function_call_output a tool message after it, in order (what chat servers require)."""
    url = await gateway(policy(("gpu", local(fake_openai))))
    items = [{"role": "user", "content": "Weather in Paris and Rome?"},
             {"type": "function_call", "call_id": "call_paris", "name": "lookup", "arguments": '{"q": "Paris"}'},
             {"type": "function_call", "call_id": "call_rome", "name": "lookup", "arguments": '{"q": "Rome"}'},
             {"type": "function_call_output", "call_id": "call_paris", "output": "sunny"},
             {"type": "function_call_output", "call_id": "call_rome", "output": "rain"},
             {"role": "user", "content": "Summarise, please."}]
    response = await oclient(url).responses.create(model="chat", input=items, tools=TOOLS, tool_choice="none")
    assert_completed_text(response, fake_openai.reply_text)
    sent = upstream(fake_openai)["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "tool", "user"]
    calls = sent[1]["tool_calls"]
    assert [c["id"] for c in calls] == ["call_paris", "call_rome"]
    assert [orjson.loads(c["function"]["arguments"]) for c in calls] == [{"q": "Paris"}, {"q": "Rome"}]
    assert [(m["tool_call_id"], text_of(m["content"])) for m in sent[2:4]] == [
        ("call_paris", "sunny"), ("call_rome", "rain")]


@pytest.mark.parametrize(("choice", "expected"), [
    ("auto", "auto"),
    ("required", "required"),
    ({"type": "function", "name": "lookup"}, {"type": "function", "function": {"name": "lookup"}}),
], ids=["auto", "required", "named"])
async def test_tool_choice_maps_to_the_chat_form(gateway, fake_openai, choice, expected):
    url = await gateway(policy(("gpu", local(fake_openai))))
    response = await oclient(url).responses.create(model="chat", input="Say hello.", tools=TOOLS,
                                                   tool_choice=choice)
    assert response.output[-1].type == "function_call" and response.output[-1].name == "lookup"
    assert upstream(fake_openai)["tool_choice"] == expected


async def test_function_call_output_after_previous_response_id(gateway, fake_openai):
    url = await gateway(policy(("gpu", local(fake_openai))))
    c = oclient(url)
    first = await c.responses.create(model="chat", input="Look up the boiling point of water.", tools=TOOLS)
    call = next(item for item in first.output if item.type == "function_call")
    second = await c.responses.create(
        model="chat", previous_response_id=first.id, tools=TOOLS, tool_choice="none",
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "100 C"}])
    assert_completed_text(second, fake_openai.reply_text)
    assert second.previous_response_id == first.id
    sent = upstream(fake_openai, 1)["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool"]
    assert text_of(sent[0]["content"]) == "Look up the boiling point of water."
    assert sent[1]["tool_calls"][0]["id"] == call.call_id and sent[2]["tool_call_id"] == call.call_id


# -- streaming --------------------------------------------------------------------------------
async def test_stream_helper_events_and_final_response(gateway, fake_openai):
    url = await gateway(policy(("gpu", local(fake_openai))))
    c = oclient(url)
    whole = await c.responses.create(model="chat", input="Say hello.")
    async with c.responses.stream(model="chat", input="Say hello.") as stream:
        events = [event async for event in stream]
        final = await stream.get_final_response()
    assert_event_sequence(events)
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) > 1
    assert "".join(deltas) == final.output_text == whole.output_text == fake_openai.reply_text
    assert_completed_text(final, fake_openai.reply_text)
    assert final.usage is not None and final.usage.output_tokens == len(fake_openai.reply_text.split())
    created = events[0].response
    assert created.id == final.id and created.status == "in_progress" and created.output == []
    done = next(e for e in events if e.type == "response.output_text.done")
    assert done.text == fake_openai.reply_text
    types = [e.type for e in events]
    for expected in ("response.output_item.added", "response.content_part.added", "response.output_text.done",
                     "response.content_part.done", "response.output_item.done"):
        assert expected in types, expected
    assert upstream(fake_openai, 1).get("stream") is True
    stored = await c.responses.retrieve(final.id)  # a streamed response is stored too
    assert stored.output_text == fake_openai.reply_text


async def test_stream_create_and_wire_event_names(gateway, fake_openai):
    url = await gateway(policy(("gpu", local(fake_openai))))
    async with oclient(url).responses.with_streaming_response.create(model="chat", input="Say hello.",
                                                                     stream=True) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        assert_routed(resp.headers)
        events = [event async for event in await resp.parse()]
    assert_event_sequence(events)
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == fake_openai.reply_text
    for name, data in await raw_events(url, {"model": "chat", "input": "Say hello."}):
        assert name == data["type"], (name, data)  # every event is named by its type


async def test_stream_of_a_function_call(gateway, fake_openai):
    url = await gateway(policy(("gpu", local(fake_openai))))
    async with oclient(url).responses.stream(model="chat", input="Say hello.", tools=TOOLS) as stream:
        events = [event async for event in stream]
        final = await stream.get_final_response()
    assert_event_sequence(events)
    call = next(item for item in final.output if item.type == "function_call")
    assert call.name == "lookup" and orjson.loads(call.arguments) == {} and call.call_id
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert orjson.loads(done.arguments) == {}
    added = next(e for e in events if e.type == "response.output_item.added" and e.item.type == "function_call")
    assert added.item.name == "lookup"


async def test_a_broken_stream_does_not_complete(gateway, fake_openai):
    fake_openai.faults.always(Fault(cut_after_chunks=2))
    url = await gateway(policy(("gpu", local(fake_openai))))
    events = await raw_events(url, {"model": "chat", "input": "Say hello."})
    names = [name for name, _ in events]
    assert names[0] == "response.created"
    assert "response.completed" not in names
    assert names[-1] in ("error", "response.failed"), names
    last = events[-1][1]
    if names[-1] == "error":
        assert isinstance(last["message"], str) and last["message"]
    else:
        assert last["response"]["status"] == "failed" and last["response"]["error"]["message"]
    with pytest.raises((openai.APIError, RuntimeError)):
        async with oclient(url).responses.stream(model="chat", input="Say hello.") as stream:
            await stream.get_final_response()


# -- previous_response_id, store, retrieve, delete --------------------------------------------
async def test_previous_response_id_continues_the_stored_conversation(gateway, fake_openai):
    url = await gateway(policy(("gpu", local(fake_openai))))
    c = oclient(url)
    first = await c.responses.create(model="chat", instructions="Be brief.", input="My name is Ada.")
    second = await c.responses.create(model="chat", input="What is my name?", previous_response_id=first.id)
    assert_completed_text(second, fake_openai.reply_text)
    assert second.previous_response_id == first.id and second.id != first.id
    # the first turn is replayed; its instructions are not carried over (the API's rule)
    assert turns(upstream(fake_openai, 1)) == [
        ("user", "My name is Ada."), ("assistant", fake_openai.reply_text), ("user", "What is my name?")]
    third = await c.responses.create(model="chat", input="And again?", previous_response_id=second.id,
                                     instructions="Answer in English.")
    assert_completed_text(third, fake_openai.reply_text)
    sent = turns(upstream(fake_openai, 2))
    assert sent[0] in (("system", "Answer in English."), ("developer", "Answer in English."))
    assert sent[1:] == [("user", "My name is Ada."), ("assistant", fake_openai.reply_text),
                        ("user", "What is my name?"), ("assistant", fake_openai.reply_text),
                        ("user", "And again?")]


async def test_store_false_is_not_kept(gateway, fake_openai):
    url = await gateway(policy(("gpu", local(fake_openai))))
    c = oclient(url)
    first = await c.responses.create(model="chat", input="My name is Ada.", store=False)
    assert_completed_text(first, fake_openai.reply_text)
    assert first.store is False
    with pytest.raises((openai.NotFoundError, openai.BadRequestError)) as info:
        await c.responses.create(model="chat", input="What is my name?", previous_response_id=first.id)
    assert_openai_error(info.value.body)
    assert first.id in info.value.body["message"]
    with pytest.raises(openai.NotFoundError):
        await c.responses.retrieve(first.id)
    assert len(fake_openai.calls(CHAT)) == 1


async def test_unknown_previous_response_id_is_an_error(gateway, fake_openai):
    url = await gateway(policy(("gpu", local(fake_openai))))
    with pytest.raises((openai.NotFoundError, openai.BadRequestError)) as info:
        await oclient(url).responses.create(model="chat", input="Hi", previous_response_id="resp_does_not_exist")
    error = assert_openai_error(info.value.body)
    assert error["param"] == "previous_response_id"
    assert fake_openai.received == []


async def test_retrieve_and_delete(gateway, fake_openai):
    url = await gateway(policy(("gpu", local(fake_openai))))
    c = oclient(url)
    created = await c.responses.create(model="chat", input="Say hello.")
    got = await c.responses.retrieve(created.id)
    assert got.id == created.id and got.status == "completed"
    assert got.output_text == created.output_text == fake_openai.reply_text
    assert await c.responses.delete(created.id) is None
    with pytest.raises(openai.NotFoundError) as info:
        await c.responses.retrieve(created.id)
    assert_openai_error(info.value.body)
    with pytest.raises(openai.NotFoundError):
        await c.responses.delete(created.id)
    with pytest.raises((openai.NotFoundError, openai.BadRequestError)):
        await c.responses.create(model="chat", input="Again", previous_response_id=created.id)
    assert len(fake_openai.calls(CHAT)) == 1


async def test_a_conversation_continues_on_another_replica_through_redis(gateway, fake_openai):
    settings = Settings(access_log=False, redis_url="redis://127.0.0.1:6379/0")
    one = await gateway(keyed(fake_openai), env=KEYS, settings=settings)
    two = await gateway(keyed(fake_openai), env=KEYS, settings=settings)
    first = await oclient(one, KEYS["KEY_A"]).responses.create(model="chat", input="My name is Ada.")
    assert (await oclient(two, KEYS["KEY_A"]).responses.retrieve(first.id)).output_text == fake_openai.reply_text
    second = await oclient(two, KEYS["KEY_A"]).responses.create(model="chat", input="What is my name?",
                                                                previous_response_id=first.id)
    assert_completed_text(second, fake_openai.reply_text)
    assert turns(upstream(fake_openai, 1)) == [
        ("user", "My name is Ada."), ("assistant", fake_openai.reply_text), ("user", "What is my name?")]
    await oclient(one, KEYS["KEY_A"]).responses.delete(second.id)
    with pytest.raises(openai.NotFoundError):
        await oclient(two, KEYS["KEY_A"]).responses.retrieve(second.id)


async def test_stored_responses_belong_to_their_team(gateway, fake_openai):
    url = await gateway(keyed(fake_openai), env=KEYS)
    a, b = oclient(url, KEYS["KEY_A"]), oclient(url, KEYS["KEY_B"])
    mine = await a.responses.create(model="chat", input="My name is Ada.")
    with pytest.raises(openai.NotFoundError):
        await b.responses.retrieve(mine.id)
    with pytest.raises((openai.NotFoundError, openai.BadRequestError)):
        await b.responses.create(model="chat", input="What is my name?", previous_response_id=mine.id)
    with pytest.raises(openai.NotFoundError):
        await b.responses.delete(mine.id)
    assert (await a.responses.retrieve(mine.id)).output_text == fake_openai.reply_text
    assert len(fake_openai.calls(CHAT)) == 1


# -- errors -----------------------------------------------------------------------------------
async def test_unknown_model_is_404_model_not_found(gateway, fake_openai):
    url = await gateway(policy(("gpu", local(fake_openai))))
    with pytest.raises(openai.NotFoundError) as info:
        await oclient(url).responses.create(model="no-such-alias", input="Hi")
    error = assert_openai_error(info.value.body)
    assert error["code"] == "model_not_found" and error["param"] == "model"
    assert fake_openai.received == []


@pytest.mark.parametrize("body", [
    b"{not json",
    b"[1, 2]",
    {"input": "Hi"},  # no model
    {"model": "chat", "input": 7},
    {"model": "chat", "input": [{"role": "robot", "content": "hi"}]},
    {"model": "chat", "input": [{"type": "function_call_output", "output": "no call id"}]},
    {"model": "chat", "input": "Hi", "tools": "lookup"},
    {"model": "chat", "input": "Hi", "max_output_tokens": "many"},
], ids=["not-json", "not-object", "no-model", "input-number", "bad-role", "output-without-call-id",
        "tools-string", "max-output-tokens-string"])
async def test_malformed_bodies_are_400(gateway, fake_openai, body):
    url = await gateway(policy(("gpu", local(fake_openai))))
    status, answer = await post(url, "/v1/responses", body)
    assert status == 400, answer
    assert isinstance(answer, dict) and set(answer) == {"error"}
    assert_openai_error(answer["error"])
    assert answer["error"]["type"] == "invalid_request_error"
    assert fake_openai.received == []


async def test_malformed_body_through_the_sdk_is_a_bad_request(gateway, fake_openai):
    url = await gateway(policy(("gpu", local(fake_openai))))
    with pytest.raises(openai.BadRequestError) as info:
        await oclient(url).responses.create(model="chat", input=[{"role": "robot", "content": "hi"}])
    assert_openai_error(info.value.body)
    assert fake_openai.received == []


async def test_bad_key_and_good_key(gateway, fake_openai):
    url = await gateway(keyed(fake_openai), env=KEYS)
    response = await oclient(url, KEYS["KEY_A"]).responses.create(model="chat", input="Say hello.")
    assert response.output_text == fake_openai.reply_text
    with pytest.raises(openai.AuthenticationError) as info:
        await oclient(url, "sk-wrong-0123456789").responses.create(model="chat", input="Say hello.")
    assert assert_openai_error(info.value.body)["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        await oclient(url, "sk-wrong-0123456789").responses.retrieve(response.id)
    assert len(fake_openai.calls(CHAT)) == 1


async def test_all_backends_failed_names_what_was_tried(gateway, fake_openai, fake_openai_b):
    fake_openai.faults.always(Fault(status=503, message="gpu on fire"))
    fake_openai_b.faults.always(Fault(status=502))
    url = await gateway(policy(("a", local(fake_openai)), ("b", local(fake_openai_b)),
                               aliases={"chat": ["a", "b"]}))
    with pytest.raises(openai.APIStatusError) as info:
        await oclient(url).responses.create(model="chat", input="Say hello.")
    assert info.value.status_code == 503
    error = assert_openai_error(info.value.body)
    assert error["code"] == "all_backends_failed" and "gpu on fire" in error["message"]
    assert info.value.response.headers["x-switchyard-tried"] == "a,b"
    with pytest.raises(openai.APIStatusError) as info:  # nothing started: an HTTP error, not an event
        await oclient(url).responses.create(model="chat", input="Say hello.", stream=True)
    assert info.value.status_code == 503
    assert assert_openai_error(info.value.body)["code"] == "all_backends_failed"
