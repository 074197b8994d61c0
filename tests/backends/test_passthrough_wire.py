"""Passthrough-only wire behaviour (``backends.openai_compat``): per-kind health paths, and
SSE quirks the scripted fakes cannot produce (CRLF, one-byte writes, blank keep-alive lines,
comments, in-band error events, EOF without an end), served by a tiny raw upstream that
writes exactly the bytes a case gives it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import orjson
import pytest
from aiohttp import web

from backends.base import BackendConfig, TimeLimits
from backends.errors import StreamBroken
from backends.kinds import KIND_TRAITS
from backends.openai_compat import OpenAICompatBackend
from backends.sse import DONE
from backends.types import BackendRequest
from tests.backends.harness import CALM, chat, drain
from tests.fakes.openai_upstream import FakeOpenAI

# -- health per kind ---------------------------------------------------------------------------

@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(name="kinds", model_name="kinds-model") as f:
        yield f


def passthrough(kind: str, base_url: str, session: aiohttp.ClientSession,
                limits: TimeLimits = CALM) -> OpenAICompatBackend:
    return OpenAICompatBackend(BackendConfig(name=f"pt-{kind}", kind=kind, model="served",
                                             base_url=base_url, limits=limits), session)


def probed(fake: FakeOpenAI) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in [*fake.received, *getattr(fake, "probes", [])]]


@pytest.mark.parametrize(("kind", "path"), [("vllm", "/health"), ("tgi", "/health"),
                                            ("llamacpp", "/health"), ("openai_compatible", "/v1/models")])
async def test_health_hits_the_kind_path(kind: str, path: str, fake: FakeOpenAI,
                                         session: aiohttp.ClientSession) -> None:
    assert KIND_TRAITS[kind].health_path == path
    health = await passthrough(kind, fake.base_url, session).health()
    assert health.ok, health.detail
    assert path in health.detail and "200" in health.detail
    assert probed(fake) == [("GET", path)]


async def test_ollama_health_path_missing_on_fake_is_not_ok(fake: FakeOpenAI,
                                                            session: aiohttp.ClientSession) -> None:
    # FakeOpenAI has no /api/version (Ollama's), so the probe gets a 404.
    health = await passthrough("ollama", fake.base_url, session).health()
    assert not health.ok
    assert "/api/version" in health.detail and "404" in health.detail
    assert probed(fake) == [("GET", "/api/version")]


@pytest.mark.parametrize("kind", ["vllm", "llamacpp"])
async def test_health_of_loading_server_is_not_ok(kind: str, fake: FakeOpenAI,
                                                  session: aiohttp.ClientSession) -> None:
    fake.healthy = False  # llama.cpp answers 503 "Loading model"
    health = await passthrough(kind, fake.base_url, session).health()
    assert not health.ok and "503" in health.detail


@pytest.mark.parametrize("endpoint", ["completions", "embeddings"])
async def test_other_endpoints_go_to_their_paths(endpoint: str, fake: FakeOpenAI,
                                                 session: aiohttp.ClientSession) -> None:
    body = {"model": "alias", "prompt": "Hi"} if endpoint == "completions" else {"model": "a", "input": "Hi"}
    response = await passthrough("vllm", fake.base_url, session).complete(
        BackendRequest(endpoint, body, False, "req-ep"))  # type: ignore[arg-type]
    assert orjson.loads(response.body)["object"] in ("text_completion", "list")
    [call] = fake.calls(f"/v1/{endpoint}")
    assert call.body == {**body, "model": "served"}


# -- a raw upstream ----------------------------------------------------------------------------

@dataclass
class RawUpstream:
    """Answers POST /v1/chat/completions with ``chunks``, one write each, then EOF."""

    chunks: list[bytes] = field(default_factory=list)
    content_type: str = "text/event-stream"
    runner: web.AppRunner | None = None
    base_url: str = ""

    async def _handler(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": self.content_type})
        await response.prepare(request)
        for chunk in self.chunks:
            await response.write(chunk)
        await response.write_eof()
        return response

    async def __aenter__(self) -> RawUpstream:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handler)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.base_url = f"http://127.0.0.1:{self.runner.addresses[0][1]}/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


@pytest.fixture
async def raw() -> AsyncIterator[RawUpstream]:
    async with RawUpstream() as upstream:
        yield upstream


def chunk_event(content: str | None = None, finish: str | None = None) -> bytes:
    delta = {} if content is None else {"content": content}
    payload = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "raw",
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + orjson.dumps(payload) + b"\n\n"


ANSWER = [chunk_event("Hello"), chunk_event(" there"), chunk_event(finish="stop"), DONE]


async def stream_from(raw: RawUpstream, session: aiohttp.ClientSession, chunks: list[bytes]):  # type: ignore[no-untyped-def]
    raw.chunks = chunks
    return await drain(passthrough("vllm", raw.base_url, session), chat(stream=True))


async def test_one_byte_writes_are_reassembled_into_whole_events(raw: RawUpstream,
                                                                session: aiohttp.ClientSession) -> None:
    body = b"".join(ANSWER)
    drained = await stream_from(raw, session, [body[i:i + 1] for i in range(len(body))])
    assert drained.error is None
    assert drained.events == ANSWER


async def test_crlf_upstream_is_relayed_with_lf(raw: RawUpstream, session: aiohttp.ClientSession) -> None:
    drained = await stream_from(raw, session, [e.replace(b"\n", b"\r\n") for e in ANSWER])
    assert drained.error is None
    assert drained.events == ANSWER


async def test_comment_keepalives_do_not_break_the_stream(raw: RawUpstream,
                                                          session: aiohttp.ClientSession) -> None:
    drained = await stream_from(raw, session, [b": ping\n\n", *ANSWER[:2], b": ping\n\n", *ANSWER[2:]])
    assert drained.error is None
    assert drained.events[-1] == DONE and drained.events.count(DONE) == 1
    assert drained.text() == "Hello there"
    # Current behaviour, not a contract: comment events are relayed as they came (valid SSE,
    # but not `data:` events); the resilience work may drop them.


async def test_blank_keepalive_line_before_done_gives_one_clean_done(
        raw: RawUpstream, session: aiohttp.ClientSession) -> None:
    drained = await stream_from(raw, session, [*ANSWER[:3], b"\n", DONE])
    assert drained.error is None
    assert drained.events == ANSWER


async def test_error_event_mid_stream_raises_stream_broken(raw: RawUpstream,
                                                           session: aiohttp.ClientSession) -> None:
    error = b'data: {"error":{"message":"CUDA out of memory","type":"server_error"}}\n\n'
    drained = await stream_from(raw, session, [*ANSWER[:2], error])
    assert drained.events == ANSWER[:2]
    assert isinstance(drained.error, StreamBroken)
    assert "CUDA out of memory" in drained.error.message


async def test_clean_eof_without_finish_is_stream_broken(raw: RawUpstream,
                                                         session: aiohttp.ClientSession) -> None:
    drained = await stream_from(raw, session, ANSWER[:2])  # no finish_reason, no [DONE], clean EOF
    assert drained.events == ANSWER[:2]
    assert isinstance(drained.error, StreamBroken) and drained.error.retryable


async def test_clean_eof_after_finish_without_done_gets_done(raw: RawUpstream,
                                                             session: aiohttp.ClientSession) -> None:
    drained = await stream_from(raw, session, ANSWER[:3])
    assert drained.error is None
    assert drained.events == ANSWER


async def test_complete_body_is_relayed_byte_for_byte(raw: RawUpstream,
                                                      session: aiohttp.ClientSession) -> None:
    body = b'{ "object": "chat.completion",  "model": "raw", "x_vendor": [1, 2],\n "choices": [] }'
    raw.chunks, raw.content_type = [body], "application/json"
    response = await passthrough("vllm", raw.base_url, session).complete(chat())
    assert response.body == body and response.status == 200


# -- issue 16: the stream as an iterator ---------------------------------------------------------

async def open_raw(raw: RawUpstream, session: aiohttp.ClientSession, chunks: list[bytes],
                   limits: TimeLimits = CALM):  # type: ignore[no-untyped-def]
    raw.chunks = chunks
    return await passthrough("vllm", raw.base_url, session, limits).open_stream(chat(stream=True))


async def test_events_of_one_read_are_ready_without_waiting(raw: RawUpstream,
                                                            session: aiohttp.ClientSession) -> None:
    """``ready()``: the next event is already here (the relay writes such events together)."""
    stream = await open_raw(raw, session, [b"".join(ANSWER)])
    events = aiter(stream)
    assert not stream.ready()  # nothing read yet
    got = [await anext(events)]
    readies = [stream.ready()]
    while got[-1] != DONE:
        got.append(await anext(events))
        readies.append(stream.ready())
    assert got == ANSWER
    assert readies == [True, True, True, False]  # one read brought all four
    with pytest.raises(StopAsyncIteration):
        await anext(events)
    await stream.aclose()


async def test_nothing_after_an_error_event_is_relayed(raw: RawUpstream, session: aiohttp.ClientSession) -> None:
    error = b'data: {"error":{"message":"CUDA out of memory","type":"server_error"}}\n\n'
    stream = await open_raw(raw, session, [b"".join([ANSWER[0], error, *ANSWER[1:]])])
    events = aiter(stream)
    assert await anext(events) == ANSWER[0]
    with pytest.raises(StreamBroken):
        await anext(events)
    with pytest.raises(StopAsyncIteration):
        await anext(events)
    await stream.aclose()


async def test_the_idle_limit_counts_waiting_for_the_upstream_not_a_slow_reader(
        raw: RawUpstream, session: aiohttp.ClientSession) -> None:
    """The idle watchdog fires only while a read waits: a relay slowed by its client (here:
    not reading for 3 idle limits) does not fail a stream whose events have arrived."""
    import asyncio

    limits = TimeLimits(connect_s=2.0, first_token_s=10.0, idle_s=0.1, total_s=10.0)
    body = b"".join(ANSWER)
    stream = await open_raw(raw, session, [body[:40], body[40:]], limits)
    events = aiter(stream)
    got = [await anext(events)]
    await asyncio.sleep(0.3)  # a slow client: the relay does not read meanwhile
    async for event in events:
        got.append(event)
    assert got == ANSWER
    await stream.aclose()
