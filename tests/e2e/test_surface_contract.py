"""One contract, every route: the same conversations through each client surface and each
way a request can be served, compared on what the client sees.

Surfaces (each with its official SDK): ``chat`` (the reference, ``openai`` chat completions),
``messages`` (``anthropic``) and ``responses`` (``openai`` Responses). Conversations: a text
turn, a multi-turn history, a tool call then its result, a base64 image, and a streamed turn.
Routes:

- ``translated``: a ``FakeOpenAI`` behind ``kind: openai_compatible`` (the gateway's own
  translation to chat completions);
- ``closed-anthropic`` / ``closed-openai``: closed kinds through the real litellm against
  ``FakeAnthropic`` / ``FakeOpenAI``;
- ``cache``: a policy with the exact cache; the whole conversation runs twice and every
  request of the second run is a hit (``x-switchyard-cache: hit``) that never reaches the
  upstream and reads the same;
- ``fallback`` / ``fallback-closed``: the first target refuses (503 / Anthropic 529), the
  second answers (``x-switchyard-tried``);
- ``recovery`` / ``recovery-closed`` (streamed turns only): the first target's stream breaks
  after two chunks and a prefill-capable target continues it; the client still reads one
  complete stream in its surface's own event format.

Every fake answers the same deterministic text, so a conversation has one expected result
(text, tool called, stop, output tokens) whatever the route. ``test_llamacpp_*`` run a text
and a streamed turn per surface against the real llama.cpp server (shape only).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import anthropic
import openai
import pytest

from tests.e2e.test_closed_providers import claude
from tests.e2e.test_gateway_sdk import local, policy
from tests.e2e.test_llamacpp import gemma
from tests.e2e.test_messages_api import KEYS, PNG_B64, STREAM_GRAMMAR, aclient, assert_anthropic_error, close_clients
from tests.e2e.test_messages_api import TOOLS as MESSAGE_TOOLS
from tests.e2e.test_resilience import spec
from tests.e2e.test_responses_api import DATA_URL, assert_event_sequence, oclient
from tests.e2e.test_responses_api import TOOLS as RESPONSE_TOOLS
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.base import DEFAULT_REPLY
from tests.fakes.faults import Fault
from tests.fakes.openai_upstream import FakeOpenAI

CHAT_TOOLS = [{"type": "function", "function": {"name": t["name"], "description": t["description"],
                                                 "parameters": t["input_schema"]}} for t in MESSAGE_TOOLS]
TOOL_RESULT = "100 C"


# -- the neutral conversation and result ------------------------------------------------------
@dataclass(frozen=True)
class Turn:
    role: str  # user | assistant | tool
    text: str = ""
    image: bool = False
    call: tuple[str, str] | None = None  # (id, name) of an assistant tool call; the id for a tool result


@dataclass(frozen=True)
class Step:
    turns: tuple[Turn, ...]
    tools: bool = False
    tool_choice: str | None = None  # "none" to forbid another call
    stream: bool = False


@dataclass
class Result:
    """What a client sees of one answer, in surface-neutral terms."""

    text: str
    tool: str | None
    tool_id: str | None
    stop: str  # stop | tool | length
    output_tokens: int
    headers: dict[str, str] = field(repr=False)
    events: list[str] = field(default_factory=list, repr=False)

    def seen(self) -> tuple[str, str | None, str, int]:
        return self.text, self.tool, self.stop, self.output_tokens


# -- one driver per surface -------------------------------------------------------------------
class ChatDriver:
    name = "chat"

    def __init__(self, url: str) -> None:
        self.client = oclient(url, KEYS["KEY_A"])

    @staticmethod
    def _message(turn: Turn) -> dict[str, Any]:
        if turn.role == "tool":
            assert turn.call is not None
            return {"role": "tool", "tool_call_id": turn.call[0], "content": turn.text}
        if turn.call is not None:
            return {"role": "assistant", "content": None, "tool_calls": [
                {"id": turn.call[0], "type": "function", "function": {"name": turn.call[1], "arguments": "{}"}}]}
        if turn.image:
            return {"role": "user", "content": [{"type": "text", "text": turn.text}, {
                "type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}}]}
        return {"role": turn.role, "content": turn.text}

    def _args(self, step: Step) -> dict[str, Any]:
        args: dict[str, Any] = {"model": "chat", "max_tokens": 64, "messages": [self._message(t) for t in step.turns]}
        if step.tools:
            args["tools"] = CHAT_TOOLS
        if step.tool_choice:
            args["tool_choice"] = step.tool_choice
        return args

    async def run(self, step: Step) -> Result:
        if step.stream:
            return await self._stream(step)
        raw = await self.client.chat.completions.with_raw_response.create(**self._args(step))
        done = raw.parse()
        choice = done.choices[0]
        call = (choice.message.tool_calls or [None])[0]
        return Result(choice.message.content or "", call.function.name if call else None, call.id if call else None,
                      _chat_stop(choice.finish_reason), done.usage.completion_tokens, dict(raw.headers))

    async def _stream(self, step: Step) -> Result:
        async with self.client.chat.completions.with_streaming_response.create(
                **self._args(step), stream=True, stream_options={"include_usage": True}) as resp:
            chunks = [c async for c in await resp.parse()]
            headers = dict(resp.headers)
        assert len({c.id for c in chunks}) == 1
        deltas = [c.choices[0] for c in chunks if c.choices]
        finish = next(d.finish_reason for d in reversed(deltas) if d.finish_reason)
        usage = next(c.usage for c in reversed(chunks) if c.usage)
        calls = [tc for d in deltas for tc in d.delta.tool_calls or []]
        name = next((tc.function.name for tc in calls if tc.function and tc.function.name), None)
        text = "".join(d.delta.content or "" for d in deltas)
        return Result(text, name, calls[0].id if calls else None, _chat_stop(finish), usage.completion_tokens,
                      headers, ["chunk"] * len(chunks))


class MessagesDriver:
    name = "messages"

    def __init__(self, url: str) -> None:
        self.client = aclient(url, KEYS["KEY_A"])

    @staticmethod
    def _message(turn: Turn) -> dict[str, Any]:
        if turn.role == "tool":
            assert turn.call is not None
            return {"role": "user", "content": [{"type": "tool_result", "tool_use_id": turn.call[0],
                                                 "content": turn.text}]}
        if turn.call is not None:
            return {"role": "assistant", "content": [{"type": "tool_use", "id": turn.call[0], "name": turn.call[1],
                                                      "input": {}}]}
        if turn.image:
            return {"role": "user", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}},
                {"type": "text", "text": turn.text}]}
        if turn.role == "assistant":
            return {"role": "assistant", "content": [{"type": "text", "text": turn.text}]}
        return {"role": turn.role, "content": turn.text}

    def _args(self, step: Step) -> dict[str, Any]:
        args: dict[str, Any] = {"model": "chat", "max_tokens": 64, "messages": [self._message(t) for t in step.turns]}
        if step.tools:
            args["tools"] = MESSAGE_TOOLS
        if step.tool_choice:
            args["tool_choice"] = {"type": step.tool_choice}
        return args

    @staticmethod
    def _result(message: Any, headers: Any, events: list[str] | None = None) -> Result:
        text = "".join(b.text for b in message.content if b.type == "text")
        use = next((b for b in message.content if b.type == "tool_use"), None)
        stop = {"end_turn": "stop", "tool_use": "tool", "max_tokens": "length"}.get(message.stop_reason, "?")
        return Result(text, use.name if use else None, use.id if use else None, stop, message.usage.output_tokens,
                      dict(headers), events or [])

    async def run(self, step: Step) -> Result:
        if not step.stream:
            raw = await self.client.messages.with_raw_response.create(**self._args(step))
            return self._result(await raw.parse(), raw.headers)
        async with self.client.messages.stream(**self._args(step)) as stream:
            headers = stream.response.headers
            events = [e async for e in stream]
            final = await stream.get_final_message()
        wire = [e.type for e in events if e.type not in ("text", "input_json", "citation", "thinking", "signature")]
        assert STREAM_GRAMMAR.fullmatch("".join(f"{t} " for t in wire)), wire
        streamed = "".join(e.text for e in events if e.type == "text")
        result = self._result(final, headers, wire)
        assert streamed == result.text
        return result


class ResponsesDriver:
    name = "responses"

    def __init__(self, url: str) -> None:
        self.client = oclient(url, KEYS["KEY_A"])

    @staticmethod
    def _item(turn: Turn) -> dict[str, Any]:
        if turn.role == "tool":
            assert turn.call is not None
            return {"type": "function_call_output", "call_id": turn.call[0], "output": turn.text}
        if turn.call is not None:
            return {"type": "function_call", "call_id": turn.call[0], "name": turn.call[1], "arguments": "{}"}
        if turn.image:
            return {"role": "user", "content": [{"type": "input_text", "text": turn.text},
                                                {"type": "input_image", "image_url": DATA_URL, "detail": "auto"}]}
        if turn.role == "assistant":
            return {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": turn.text}]}
        return {"role": turn.role, "content": turn.text}

    def _args(self, step: Step) -> dict[str, Any]:
        args: dict[str, Any] = {"model": "chat", "max_output_tokens": 64, "input": [self._item(t) for t in step.turns]}
        if step.tools:
            args["tools"] = RESPONSE_TOOLS
        if step.tool_choice:
            args["tool_choice"] = step.tool_choice
        return args

    @staticmethod
    def _result(response: Any, headers: Any, events: list[str] | None = None) -> Result:
        call = next((item for item in response.output if item.type == "function_call"), None)
        stop = "tool" if call else {"completed": "stop", "incomplete": "length"}.get(response.status, "?")
        return Result(response.output_text, call.name if call else None, call.call_id if call else None, stop,
                      response.usage.output_tokens, dict(headers), events or [])

    async def run(self, step: Step) -> Result:
        if not step.stream:
            raw = await self.client.responses.with_raw_response.create(**self._args(step))
            return self._result(raw.parse(), raw.headers)
        async with self.client.responses.with_streaming_response.create(**self._args(step), stream=True) as resp:
            headers = resp.headers
            events = [e async for e in await resp.parse()]
        assert_event_sequence(events)
        final = events[-1].response  # response.completed carries the whole response
        streamed = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        result = self._result(final, headers, [e.type for e in events])
        assert streamed == result.text
        return result


DRIVERS: dict[str, Callable[[str], Any]] = {"chat": ChatDriver, "messages": MessagesDriver,
                                            "responses": ResponsesDriver}


def _chat_stop(finish: str | None) -> str:
    return {"stop": "stop", "tool_calls": "tool", "length": "length"}.get(finish or "", "?")


# -- conversations ----------------------------------------------------------------------------
USER = Turn("user", "Say hello.")
TEXT_LIKE = (DEFAULT_REPLY, None, "stop", len(DEFAULT_REPLY.split()))
TOOL_CALL = ("", "lookup", "tool", 1)


async def text(drive: Any) -> list[Result]:
    return [await drive.run(Step((USER,)))]


async def multi_turn(drive: Any) -> list[Result]:
    turns = (Turn("user", "My name is Ada."), Turn("assistant", "Hello Ada."), Turn("user", "What is my name?"))
    return [await drive.run(Step(turns))]


async def tools(drive: Any) -> list[Result]:
    ask = Turn("user", "Look up the boiling point of water.")
    first = await drive.run(Step((ask,), tools=True))
    assert first.tool_id, "a tool call carries an id"
    call = (first.tool_id, first.tool or "")
    follow = Step((ask, Turn("assistant", call=call), Turn("tool", TOOL_RESULT, call=call)), tools=True,
                  tool_choice="none")
    return [first, await drive.run(follow)]


async def image(drive: Any) -> list[Result]:
    return [await drive.run(Step((Turn("user", "What is in this picture?", image=True),)))]


async def stream(drive: Any) -> list[Result]:
    return [await drive.run(Step((USER,), stream=True))]


async def stream_tools(drive: Any) -> list[Result]:
    return [await drive.run(Step((Turn("user", "Look up the boiling point of water."),), tools=True, stream=True))]


CONVERSATIONS: dict[str, tuple[Callable[[Any], Awaitable[list[Result]]], list[tuple[Any, ...]]]] = {
    "text": (text, [TEXT_LIKE]),
    "multi-turn": (multi_turn, [TEXT_LIKE]),
    "tools": (tools, [TOOL_CALL, TEXT_LIKE]),
    "image": (image, [TEXT_LIKE]),
    "stream": (stream, [TEXT_LIKE]),
    "stream-tools": (stream_tools, [TOOL_CALL]),
}


# -- routes -----------------------------------------------------------------------------------
@dataclass
class Route:
    url: str
    backend: str  # who the x-switchyard-backend header names
    answering: FakeOpenAI | FakeAnthropic  # the fake whose recorded calls show what was sent
    tried: str | None = None
    runs: int = 1  # the cache route runs every conversation twice


def _openai_compat(fake: FakeOpenAI) -> str:
    return f"{{kind: openai_compatible, base_url: '{fake.base_url}', model: served-model}}"


async def _fake(stack: AsyncExitStack, cls: type, **kw: Any) -> Any:
    return await stack.enter_async_context(cls(**kw))


async def translated(gateway, stack) -> Route:
    fake = await _fake(stack, FakeOpenAI, name="compat")
    return Route(await gateway(policy(("compat", _openai_compat(fake)))), "compat", fake)


async def closed_anthropic(gateway, stack) -> Route:
    fake = await _fake(stack, FakeAnthropic, api_key="sk-ant-test", model_name="claude-fake-1")
    return Route(await gateway(policy(("claude", claude(fake)))), "claude", fake)


async def closed_openai(gateway, stack) -> Route:
    fake = await _fake(stack, FakeOpenAI, name="gpt", api_key="sk-openai-test")
    gpt = f"{{kind: openai, base_url: '{fake.base_url}', model: gpt-4o-mini, api_key: sk-openai-test}}"
    return Route(await gateway(policy(("gpt", gpt))), "gpt", fake)


async def cached(gateway, stack) -> Route:
    fake = await _fake(stack, FakeOpenAI, name="gpu")
    extra = 'teams:\n  a: {keys: ["${KEY_A}"]}\ncache: {mode: exact, ttl_s: 60, scope: team}\n'
    return Route(await gateway(policy(("gpu", local(fake)), extra=extra), env=KEYS), "gpu", fake, runs=2)


async def fallback(gateway, stack) -> Route:
    refusing = await _fake(stack, FakeOpenAI, name="a")
    refusing.faults.always(Fault(status=503))
    fake = await _fake(stack, FakeOpenAI, name="b")
    url = await gateway(policy(("a", spec(refusing)), ("b", spec(fake)), aliases={"chat": ["a", "b"]}))
    return Route(url, "b", fake, tried="a")


async def fallback_closed(gateway, stack) -> Route:
    refusing = await _fake(stack, FakeAnthropic, api_key="sk-ant-test")
    refusing.faults.always(Fault(status=529, error_type="overloaded_error"))
    fake = await _fake(stack, FakeOpenAI, name="b")
    url = await gateway(policy(("a", claude(refusing)), ("b", spec(fake)), aliases={"chat": ["a", "b"]}))
    return Route(url, "b", fake, tried="a")


async def recovery(gateway, stack) -> Route:
    broken = await _fake(stack, FakeOpenAI, name="a")
    broken.faults.always(Fault(cut_after_chunks=2))
    fake = await _fake(stack, FakeOpenAI, name="b", prefill="echo")
    url = await gateway(policy(("a", spec(broken)), ("b", spec(fake, kind="llamacpp")),
                               aliases={"chat": ["a", "b"]}))
    return Route(url, "a", fake)  # the header names where the stream started


async def recovery_closed(gateway, stack) -> Route:
    broken = await _fake(stack, FakeAnthropic, api_key="sk-ant-test")
    broken.faults.always(Fault(cut_after_chunks=2))
    fake = await _fake(stack, FakeOpenAI, name="b", prefill="echo", reply_text=broken.reply_text)
    url = await gateway(policy(("a", claude(broken)), ("b", spec(fake, kind="llamacpp")),
                               aliases={"chat": ["a", "b"]}))
    return Route(url, "a", fake)


ROUTES: dict[str, Callable[..., Awaitable[Route]]] = {
    "translated": translated, "closed-anthropic": closed_anthropic, "closed-openai": closed_openai,
    "cache": cached, "fallback": fallback, "fallback-closed": fallback_closed,
    "recovery": recovery, "recovery-closed": recovery_closed,
}
STREAM_ONLY = {"recovery", "recovery-closed"}
CASES = [pytest.param(route, surface, conversation, id=f"{route}-{surface}-{conversation}")
         for route in ROUTES for surface in DRIVERS for conversation in CONVERSATIONS
         if route not in STREAM_ONLY or conversation == "stream"]


def sent_roles(fake: FakeOpenAI | FakeAnthropic) -> list[str]:
    """Roles of the last conversation the answering fake was sent (either wire format)."""
    body = fake.received[-1].body
    assert body is not None
    return [m["role"] for m in body["messages"] if m["role"] not in ("system", "developer")]


@pytest.fixture(autouse=True)
async def _deadline():
    async with asyncio.timeout(20):
        yield
    await close_clients()


@pytest.mark.parametrize(("route_name", "surface", "conversation"), CASES)
async def test_contract(gateway, stack, route_name, surface, conversation):
    route = await ROUTES[route_name](gateway, stack)
    run, expected = CONVERSATIONS[conversation]
    runs = [await run(DRIVERS[surface](route.url)) for _ in range(route.runs)]
    for results in runs:
        assert [r.seen() for r in results] == expected
        for r in results:
            assert r.headers["x-switchyard-backend"] == route.backend
            assert r.headers["x-switchyard-route"] == "chat"
            assert r.headers["x-switchyard-sensitivity"] == "public"
            if route.tried:
                assert r.headers["x-switchyard-tried"] == route.tried
    if conversation == "multi-turn":
        assert sent_roles(route.answering) == ["user", "assistant", "user"]
    if route.runs == 2:
        first, second = runs
        assert [r.headers["x-switchyard-cache"] for r in first] == ["miss"] * len(first)
        if conversation == "stream-tools":  # by design a streamed tool call is not stored (chunks.as_answer)
            assert [r.headers["x-switchyard-cache"] for r in second] == ["miss"] * len(second)
            assert len(route.answering.received) == 2 * len(first)
        else:
            assert [r.headers["x-switchyard-cache"] for r in second] == ["hit"] * len(second)
            assert [r.tool_id for r in second] == [r.tool_id for r in first]
            assert len(route.answering.received) == len(first)  # hits never reach the upstream
    if route_name in STREAM_ONLY:
        assert route.answering.received, "the broken stream was continued on the second target"


# -- keys and limits are one budget across surfaces -------------------------------------------
async def test_one_rate_limit_counts_every_surface(gateway, stack):
    fake = await _fake(stack, FakeOpenAI, name="gpu")
    extra = 'teams:\n  a: {keys: ["${KEY_A}"], limits: {rpm: 3}}\n'
    url = await gateway(policy(("gpu", local(fake)), extra=extra), env=KEYS)
    for driver in (ChatDriver, MessagesDriver, ResponsesDriver):
        await driver(url).run(Step((USER,)))
    with pytest.raises(anthropic.RateLimitError) as limited:
        await MessagesDriver(url).run(Step((USER,)))
    assert_anthropic_error(limited.value.body, "rate_limit_error")
    assert int(limited.value.response.headers["retry-after"]) >= 1
    with pytest.raises(openai.RateLimitError) as info:
        await ResponsesDriver(url).run(Step((USER,), stream=True))
    assert info.value.body["type"] == "rate_limit_error"
    assert int(info.value.response.headers["retry-after"]) >= 1
    assert len(fake.received) == 3


# -- the real model ---------------------------------------------------------------------------
@pytest.mark.llamacpp
@pytest.mark.parametrize("surface", ["messages", "responses"])
async def test_llamacpp_text(gateway, llamacpp_url, surface):
    url = await gateway(policy(("local", gemma(llamacpp_url))))
    if surface == "messages":
        raw = await aclient(url, timeout=60).messages.with_raw_response.create(
            model="chat", max_tokens=8, messages=[{"role": "user", "content": "Name a colour."}])
        message = await raw.parse()
        assert message.type == "message" and message.role == "assistant"
        assert message.stop_reason in ("end_turn", "max_tokens")
        assert message.content[0].type == "text" and message.content[0].text
        assert 0 < message.usage.output_tokens <= 8 and message.usage.input_tokens > 0
    else:
        raw = await oclient(url, timeout=60).responses.with_raw_response.create(
            model="chat", max_output_tokens=16, input="Name a colour.")
        response = raw.parse()
        assert response.status in ("completed", "incomplete")
        assert response.output_text
        assert 0 < response.usage.output_tokens <= 16 and response.usage.input_tokens > 0
    assert raw.headers["x-switchyard-backend"] == "local"


@pytest.mark.llamacpp
@pytest.mark.parametrize("surface", ["messages", "responses"])
async def test_llamacpp_stream(gateway, llamacpp_url, surface):
    url = await gateway(policy(("local", gemma(llamacpp_url))))
    if surface == "messages":
        async with aclient(url, timeout=60).messages.stream(
                model="chat", max_tokens=8, messages=[{"role": "user", "content": "Name a colour."}]) as s:
            events = [e async for e in s]
            final = await s.get_final_message()
        wire = [e.type for e in events if e.type != "text"]
        assert STREAM_GRAMMAR.fullmatch("".join(f"{t} " for t in wire)), wire
        text = "".join(e.text for e in events if e.type == "text")
        assert text and text == final.content[0].text
        assert final.stop_reason in ("end_turn", "max_tokens") and 0 < final.usage.output_tokens <= 8
    else:
        stream = await oclient(url, timeout=60).responses.create(model="chat", max_output_tokens=16,
                                                                 input="Name a colour.", stream=True)
        events = [e async for e in stream]
        assert_event_sequence(events, terminal=("response.completed", "response.incomplete"))
        final = events[-1].response  # the tiny model may well hit the limit: response.incomplete
        text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        assert text and text == final.output_text
        assert final.status in ("completed", "incomplete") and 0 < final.usage.output_tokens <= 16


# -- the sensitivity invariant holds on every surface -----------------------------------------
CARD = "4111 1111 1111 1111"
EMAIL = "jane.doe@example.com"
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
#: (surface, where the secret sits) → (request arguments, secret, level).
SENSITIVE: dict[tuple[str, str], tuple[dict[str, Any], str, str]] = {
    ("messages", "system-blocks"): ({"system": [{"type": "text", "text": "Be brief."},
                                                {"type": "text", "text": f"Escalate to {EMAIL}."}],
                                     "messages": [{"role": "user", "content": "Say hello."}]}, EMAIL, "confidential"),
    ("messages", "tool-result"): ({"messages": [
        {"role": "user", "content": "What does the config say?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                      "content": [{"type": "text", "text": f"aws_access_key_id = {AWS_KEY}"}]}]}],
        "tools": MESSAGE_TOOLS, "tool_choice": {"type": "none"}}, AWS_KEY, "restricted"),
    ("messages", "text-next-to-image"): ({"messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}},
        {"type": "text", "text": f"My card is {CARD}; is it on this photo?"}]}]}, CARD, "restricted"),
    ("responses", "instructions"): ({"instructions": f"Escalate to {EMAIL}.", "input": "Say hello."},
                                    EMAIL, "confidential"),
    ("responses", "function-call-output"): ({"input": [
        {"role": "user", "content": "What does the config say?"},
        {"type": "function_call", "call_id": "call_1", "name": "lookup", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": f"aws_access_key_id = {AWS_KEY}"}],
        "tools": RESPONSE_TOOLS, "tool_choice": "none"}, AWS_KEY, "restricted"),
    ("responses", "input-text-part"): ({"input": [{"role": "user", "content": [
        {"type": "input_text", "text": f"My card is {CARD}, why was it declined?"}]}]}, CARD, "restricted"),
}


async def home(gateway, stack) -> tuple[str, FakeOpenAI, FakeOpenAI]:
    """The shipped default's shape: sensitive requests stay on the local target, fail closed."""
    from tests.e2e.test_policy_routing import home_policy

    near = await _fake(stack, FakeOpenAI, name="local", model_name="local-model")
    far = await _fake(stack, FakeOpenAI, name="closed", model_name="gpt-fake", api_key="sk-closed-test-key")
    return await gateway(home_policy(near, far)), near, far


def leaked(fake: FakeOpenAI, secret: str) -> bool:
    return secret in str([r.body for r in fake.received])


@pytest.mark.parametrize(("surface", "where"), list(SENSITIVE), ids=[f"{s}-{w}" for s, w in SENSITIVE])
@pytest.mark.parametrize("streamed", [False, True], ids=["json", "stream"])
async def test_sensitive_content_in_surface_fields_stays_home(gateway, stack, surface, where, streamed):
    url, near, far = await home(gateway, stack)
    args, secret, level = SENSITIVE[(surface, where)]
    if surface == "messages":
        raw = await aclient(url).messages.with_raw_response.create(model="chat", max_tokens=64, stream=streamed,
                                                                  **args)
        if streamed:
            [e async for e in await raw.parse()]
    else:
        raw = await oclient(url).responses.with_raw_response.create(model="chat", stream=streamed, **args)
        if streamed:
            [e async for e in raw.parse()]
    assert raw.headers["x-switchyard-sensitivity"] == level
    assert raw.headers["x-switchyard-rule"] == "sensitive-stays-home"
    assert raw.headers["x-switchyard-backend"] == "local"
    assert leaked(near, secret)  # the self-hosted model gets the original
    assert far.received == []


async def test_a_stored_sensitive_turn_keeps_its_follow_ups_home(gateway, stack):
    """``previous_response_id`` replays the stored conversation: a follow-up that says nothing
    sensitive itself still carries the card of the first turn, so it stays home too."""
    url, near, far = await home(gateway, stack)
    c = oclient(url)
    first = await c.responses.with_raw_response.create(model="chat", input=f"My card is {CARD}.")
    assert first.headers["x-switchyard-backend"] == "local"
    follow = await c.responses.with_raw_response.create(model="chat", input="Say hello.",
                                                        previous_response_id=first.parse().id)
    assert follow.headers["x-switchyard-sensitivity"] == "restricted"
    assert follow.headers["x-switchyard-rule"] == "sensitive-stays-home"
    assert follow.headers["x-switchyard-backend"] == "local"
    near.faults.always(Fault(status=503))  # local down: the follow-up fails closed ...
    with pytest.raises(openai.APIStatusError) as info:
        await c.responses.create(model="chat", input="Say hello.", previous_response_id=follow.parse().id)
    assert info.value.status_code == 503
    plain = await c.responses.with_raw_response.create(model="chat", input="Say hello.")
    assert plain.headers["x-switchyard-backend"] == "closed"  # ... while a fresh request may leave
    assert len(far.received) == 1 and not leaked(far, CARD)


async def test_a_declared_level_is_a_floor_for_the_stored_conversation(gateway, stack):
    """A client that declares its first turn restricted keeps the whole conversation home,
    although nothing in it is detectable."""
    url, near, far = await home(gateway, stack)
    c = oclient(url)
    first = await c.responses.with_raw_response.create(
        model="chat", input="Say hello.", extra_headers={"x-switchyard-sensitivity": "restricted"})
    assert first.headers["x-switchyard-backend"] == "local"
    follow = await c.responses.with_raw_response.create(model="chat", input="And again.",
                                                        previous_response_id=first.parse().id)
    assert follow.headers["x-switchyard-sensitivity"] == "restricted"
    assert follow.headers["x-switchyard-rule"] == "sensitive-stays-home"
    assert follow.headers["x-switchyard-backend"] == "local"
    assert far.received == []
