"""Every fault mode, observed at the raw aiohttp-client level (plus what the SDKs raise)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import openai
import pytest

from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.faults import Fault
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.sse_client import SSERead, read_sse

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
STREAM = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
WORDS = ["Hello", " from", " the", " fake", " upstream."]


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(name="faulty") as server:
        yield server


async def post(
    http: aiohttp.ClientSession,
    fake: FakeOpenAI,
    body: dict,
    limits: aiohttp.ClientTimeout | None = None,
) -> aiohttp.ClientResponse:
    return await http.post(f"{fake.base_url}/chat/completions", json=body, timeout=limits)


async def stream(
    http: aiohttp.ClientSession, fake: FakeOpenAI, limits: aiohttp.ClientTimeout | None = None
) -> SSERead:
    async with await post(http, fake, STREAM, limits) as resp:
        assert resp.status == 200
        return await read_sse(resp)


def contents(read: SSERead) -> list[str]:
    return [
        c["choices"][0]["delta"]["content"]
        for c in read.json_events()
        if c["choices"] and c["choices"][0]["delta"].get("content")
    ]


def finishes(read: SSERead) -> list[str]:
    return [
        c["choices"][0]["finish_reason"]
        for c in read.json_events()
        if c["choices"] and c["choices"][0]["finish_reason"]
    ]


async def test_hang_times_out_and_close_releases_it(http: aiohttp.ClientSession):
    server = await FakeOpenAI().start()
    server.faults.push(Fault(hang=True), Fault(hang=True))
    with pytest.raises(TimeoutError):
        await post(http, server, CHAT, aiohttp.ClientTimeout(total=0.15))
    async with asyncio.timeout(2):
        await server.wait_idle()  # the abandoned handler ends when its client disconnects
    waiting = asyncio.ensure_future(post(http, server, CHAT))
    async with asyncio.timeout(2):
        await server.wait_received(2)
    assert server.in_flight == 1  # a client that keeps waiting keeps the handler parked
    started = time.monotonic()
    await server.close()
    assert time.monotonic() - started < 1.0 and server.in_flight == 0
    with pytest.raises(aiohttp.ClientError):
        await waiting


async def test_reset_drops_connection_before_any_byte(http: aiohttp.ClientSession, fake: FakeOpenAI):
    fake.faults.push(Fault(reset=True), Fault(reset=True))
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await post(http, fake, CHAT)
    async with openai.AsyncOpenAI(base_url=fake.base_url, api_key="k", max_retries=0) as client:
        with pytest.raises(openai.APIConnectionError):
            await client.chat.completions.create(**CHAT)
    assert len(fake.received) == 2


async def test_cut_ends_stream_without_finish_or_done(http: aiohttp.ClientSession, fake: FakeOpenAI):
    fake.faults.push(Fault(cut_after_chunks=2))
    read = await stream(http, fake)
    assert not read.complete and isinstance(read.error, aiohttp.ClientPayloadError)
    assert contents(read) == WORDS[:2]
    assert finishes(read) == [] and not read.has_done


async def test_cut_surfaces_as_connection_error_in_openai_sdk(fake: FakeOpenAI):
    fake.faults.push(Fault(cut_after_chunks=1))
    seen: list[str] = []
    async with openai.AsyncOpenAI(base_url=fake.base_url, api_key="k", max_retries=0) as client:
        with pytest.raises(openai.APIConnectionError):
            async for chunk in await client.chat.completions.create(**STREAM):
                seen.append(chunk.choices[0].delta.content)
    assert seen == ["", "Hello"]


async def test_stall_after_chunks_keeps_connection_silent(http: aiohttp.ClientSession, fake: FakeOpenAI):
    fake.faults.push(Fault(stall_after_chunks=3))
    read = await stream(http, fake, aiohttp.ClientTimeout(sock_read=0.15))
    assert isinstance(read.error, TimeoutError)
    assert contents(read) == WORDS[:3] and not read.has_done


async def test_malformed_event_then_stream_continues(http: aiohttp.ClientSession, fake: FakeOpenAI):
    fake.faults.push(Fault(malformed_after_chunks=1))
    read = await stream(http, fake)
    bad = [e for e in read.events if not e.is_json and e.data != "[DONE]"]
    assert len(bad) == 1 and bad[0].data.startswith('{"id":"chatcmpl-')
    assert read.events.index(bad[0]) == 2  # role chunk, one content chunk, then garbage
    assert read.complete and read.has_done
    assert contents(read) == WORDS and finishes(read) == ["stop"]


async def test_no_done_completes_with_usage_but_no_sentinel(http: aiohttp.ClientSession, fake: FakeOpenAI):
    fake.faults.push(Fault(no_done=True))
    read = await stream(http, fake)
    assert read.complete and not read.has_done
    assert finishes(read) == ["stop"] and read.json_events()[-1]["usage"]["completion_tokens"] == 5


async def test_headers_then_stall(http: aiohttp.ClientSession, fake: FakeOpenAI):
    fake.faults.push(Fault(headers_then_stall_s=0.3))
    started = time.monotonic()
    async with await post(http, fake, STREAM) as resp:
        assert resp.status == 200 and time.monotonic() - started < 0.25
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(resp.content.readline(), 0.1)
        read = await read_sse(resp)
    assert time.monotonic() - started >= 0.3
    assert read.complete and read.has_done and contents(read)[1:] == WORDS[1:]


async def test_delay_and_fifo_then_always(http: aiohttp.ClientSession, fake: FakeOpenAI):
    fake.faults.push(Fault(status=429, delay_s=0.1), Fault(status=500)).always(Fault(status=503))
    started = time.monotonic()
    statuses = []
    for _ in range(4):
        async with await post(http, fake, CHAT) as resp:
            statuses.append(resp.status)
    assert statuses == [429, 500, 503, 503] and time.monotonic() - started >= 0.1
    fake.faults.always(None)
    async with await post(http, fake, CHAT) as resp:
        assert resp.status == 200
    assert fake.in_flight == 0 and len(fake.calls("/v1/chat/completions")) == 5


async def test_stream_faults_do_not_affect_non_stream(http: aiohttp.ClientSession, fake: FakeOpenAI):
    fake.faults.push(Fault(cut_after_chunks=0, no_done=True))
    async with await post(http, fake, CHAT) as resp:
        assert resp.status == 200 and (await resp.json())["object"] == "chat.completion"


async def test_ops_endpoints_do_not_consume_faults(http: aiohttp.ClientSession, fake: FakeOpenAI):
    fake.faults.push(Fault(status=500))
    async with http.get(f"{fake.origin}/health") as resp:
        assert resp.status == 200
    async with http.get(f"{fake.origin}/metrics") as resp:
        assert resp.status == 200
    assert fake.faults.pending == 1 and fake.received == []
    assert [p.path for p in fake.probes] == ["/health", "/metrics"]


async def test_anthropic_stream_faults(http: aiohttp.ClientSession):
    body = {
        "model": "m",
        "max_tokens": 50,
        "messages": [{"role": "user", "content": "x"}],
        "stream": True,
    }
    headers = {"anthropic-version": "2023-06-01"}
    async with FakeAnthropic() as ant:
        ant.faults.push(Fault(cut_after_chunks=2), Fault(no_done=True), Fault(malformed_after_chunks=0))
        reads = []
        for _ in range(3):
            async with http.post(f"{ant.base_url}/v1/messages", json=body, headers=headers) as resp:
                reads.append(await read_sse(resp))
    cut, no_stop, malformed = reads
    assert not cut.complete
    assert cut.names == ["message_start", "content_block_start", "ping"] + ["content_block_delta"] * 2
    assert no_stop.complete and no_stop.names[-1] == "message_delta"
    assert "message_stop" not in no_stop.names
    assert [e.is_json for e in malformed.events].count(False) == 1
    assert malformed.events[3].event == "content_block_delta" and not malformed.events[3].is_json
    assert malformed.names[-1] == "message_stop"
