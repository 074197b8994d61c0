"""Issue 11, item 1: streams that finish are billed and counted, whatever the client does with
its connection once it has what it wanted.

Clients, through the running gateway (the real app, ``handler_cancellation`` on as ``serve``
runs it, access log on) against the fake OpenAI upstream:

- curl-like: a raw socket that reads to ``data: [DONE]`` and closes the connection at once;
- the official SDK streaming normally, and breaking off after the first chunk;
- a client that reads every content token and leaves before the answer finished;
- a client that leaves after the first content chunk.

A stream that reached the client complete is settled from its usage (or, without one, from
the relayed content's token count plus the input estimate), is a success in the access log,
the request metrics and the dashboard; a stream cut short by its client is billed for what
the upstream produced. The budget in the store holds the settled cost, never the reservation
(in memory and in Redis).
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
import openai
import orjson
import pytest
from aiohttp import web

from policies import load_policy_text
from router.app import create_app
from router.cli import ACCESS_FORMAT
from router.reload import SERVING
from router.runtime import KIND_TABLE
from router.settings import Settings
from tests.e2e.test_budgets import ADMIN, budget_policy, spend
from tests.e2e.test_gateway_sdk import MESSAGES
from tests.fakes.faults import Fault
from tests.fakes.openai_upstream import FakeOpenAI

KEY = "sk-stream-billing-0000000000"
REDIS = "redis://127.0.0.1:6379/0"
MAX_TOKENS = 50  # the reservation: (5 + 50) tokens = 0.055 USD — never what a stream is billed

# 0.001 USD per token in and out (``budget_policy``). The fake answers "Hello from the fake
# upstream." in 5 word pieces (29 characters); MESSAGES are 4 words for the fake's usage.
USAGE_USD = (4 + 5) * 0.001  # the upstream's own usage: 4 prompt + 5 completion tokens
INPUT_ESTIMATE = 19 // 4 + 1  # the gateway's estimate: 19 characters of text → 5 tokens


def relayed(pieces: list[str]) -> int:
    """Completion tokens the gateway counts for relayed content without usage: one per
    content chunk, or characters / 4 when that is more."""
    return max(len(pieces), -(-len("".join(pieces)) // 4))


PIECES = ["Hello", " from", " the", " fake", " upstream."]
ESTIMATE_USD = (INPUT_ESTIMATE + relayed(PIECES)) * 0.001  # 5 + 8 tokens


class AccessLog(logging.Handler):
    """The gateway's access log lines, awaitable by request id."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []
        self._changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
        self._changed.set()

    async def line_for(self, rid: str, within_s: float = 5.0) -> str:
        async with asyncio.timeout(within_s):
            while True:
                found = [line for line in self.lines if f"rid={rid} " in line]
                if found:
                    return found[0]
                self._changed.clear()
                await self._changed.wait()


@dataclass
class Gateway:
    url: str
    app: web.Application
    access: AccessLog
    team: str

    async def dashboard(self) -> dict:
        await self.app[SERVING].gateway.stats.flush()
        async with aiohttp.ClientSession() as http, http.get(
                self.url + "/dashboard/data?minutes=5", headers={"Authorization": f"Bearer {ADMIN}"}) as r:
            assert r.status == 200
            return await r.json()

    async def outcomes(self) -> dict[str, float]:
        """``switchyard_requests_total`` by outcome, for this test's team."""
        async with aiohttp.ClientSession() as http, http.get(
                self.url + "/metrics", headers={"Authorization": f"Bearer {ADMIN}"}) as r:
            text = await r.text()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("switchyard_requests_total{") and f'switchyard_team="{self.team}"' in line:
                outcome = re.search(r'switchyard_outcome="([a-z_]+)"', line)
                assert outcome is not None
                out[outcome.group(1)] = out.get(outcome.group(1), 0.0) + float(line.rsplit(" ", 1)[1])
        return out

    async def metered(self) -> float:
        """``switchyard_cost_USD_total`` for this test's team."""
        async with aiohttp.ClientSession() as http, http.get(
                self.url + "/metrics", headers={"Authorization": f"Bearer {ADMIN}"}) as r:
            text = await r.text()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("switchyard_cost_USD_total{") and f'switchyard_team="{self.team}"' in line)

    async def spent(self) -> float:
        return float((await spend(self.url, self.team))["spent_usd"])


@asynccontextmanager
async def serving(fake: FakeOpenAI, redis: bool) -> AsyncIterator[Gateway]:
    """The app as ``switchyard serve`` runs it (handler cancellation on, the access log in its
    format), on a free port, for a team of its own with a budget."""
    team = "sb" + secrets.token_hex(4)
    settings = Settings(admin_key=ADMIN, redis_url=REDIS if redis else None)
    loaded = load_policy_text(budget_policy(fake, team, 5.0), {"TEAM_KEY": KEY}, kinds=KIND_TABLE)
    app = create_app(settings, loaded)
    access = AccessLog()
    logger = logging.getLogger(f"switchyard.test.access.{team}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logger.addHandler(access)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=logger, access_log_format=ACCESS_FORMAT)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield Gateway(f"http://127.0.0.1:{runner.addresses[0][1]}", app, access, team)
    finally:
        await runner.cleanup()
        logger.removeHandler(access)


def body(usage: bool) -> dict[str, object]:
    out: dict[str, object] = {"model": "chat", "messages": MESSAGES, "max_tokens": MAX_TOKENS, "stream": True}
    if usage:
        out["stream_options"] = {"include_usage": True}
    return out


async def curl_like(url: str, payload: dict[str, object], rid: str, until: bytes = b"data: [DONE]") -> bytes:
    """POST over a raw socket, read the response until ``until`` has arrived, then close the
    connection at once (what curl does at the end of every stream)."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    data = orjson.dumps(payload)
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {KEY}\r\n"
            f"x-request-id: {rid}\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n")
    writer.write(head.encode() + data)
    received = b""
    try:
        while until not in received:
            chunk = await reader.read(65536)
            assert chunk, f"the connection closed before {until!r}: {received!r}"
            received += chunk
    finally:
        writer.close()
        await writer.wait_closed()
    assert received.startswith(b"HTTP/1.1 200"), received[:200]
    return received


def rid() -> str:
    return "rid-" + secrets.token_hex(8)


@pytest.fixture(autouse=True)
async def _deadline():
    async with asyncio.timeout(30):
        yield


@pytest.fixture(params=[False, True], ids=["memory", "redis"])
def redis(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


# -- complete streams: billed and counted as successes ------------------------------------------------
@pytest.mark.parametrize("usage", [True, False], ids=["usage", "no-usage"])
@pytest.mark.parametrize("upstream", ["done", "lingers"])
async def test_a_curl_like_client_that_closes_after_done_is_billed_and_a_success(
        fake_openai, redis: bool, usage: bool, upstream: str) -> None:
    """``lingers``: the upstream sends its finish (and usage) but neither ``[DONE]`` nor the end
    of its body; the gateway ends the client's stream itself and waits a moment for the
    upstream's last bytes — when the client closes in that moment, it was cancelled."""
    if upstream == "lingers":
        fake_openai.faults.always(Fault(no_done=True, linger=True))
    async with serving(fake_openai, redis) as gw:
        for _ in range(2):
            request_id = rid()
            received = await curl_like(gw.url, body(usage), request_id)
            assert b"Hello" in received and b"upstream." in received
            line = await gw.access.line_for(request_id)
            assert '"POST /v1/chat/completions HTTP/1.1" 200 ' in line and "backend=gpu" in line
        assert await gw.spent() == pytest.approx(2 * (USAGE_USD if usage else ESTIMATE_USD))
        assert await gw.outcomes() == {"ok": 2.0}
        assert await gw.metered() == pytest.approx(2 * (USAGE_USD if usage else ESTIMATE_USD))
        board = await gw.dashboard()
        assert board["teams"][gw.team]["spend_usd"] == pytest.approx(2 * (USAGE_USD if usage else ESTIMATE_USD))
        assert board["teams"][gw.team]["output_tokens"] == 2 * (5 if usage else relayed(PIECES))
        if not redis:  # the shared store's counters hold other tests' requests too
            assert (board["totals"]["requests"], board["totals"]["errors"]) == (2, 0)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
@pytest.mark.parametrize("upstream", ["done", "lingers"])
async def test_curl_itself_is_billed_and_a_success(fake_openai, redis: bool, upstream: str) -> None:
    if upstream == "lingers":
        fake_openai.faults.always(Fault(no_done=True, linger=True))
    async with serving(fake_openai, redis) as gw:
        request_id = rid()
        curl = await asyncio.create_subprocess_exec(
            "curl", "-sSN", "--fail", gw.url + "/v1/chat/completions", "-H", f"Authorization: Bearer {KEY}",
            "-H", "Content-Type: application/json", "-H", f"x-request-id: {request_id}",
            "--data-binary", orjson.dumps(body(usage=True)).decode(), stdout=asyncio.subprocess.PIPE)
        out, _ = await curl.communicate()
        assert curl.returncode == 0 and out.rstrip().endswith(b"data: [DONE]"), out
        assert " 200 " in await gw.access.line_for(request_id)
        assert await gw.spent() == pytest.approx(USAGE_USD)
        assert await gw.outcomes() == {"ok": 1.0}


@pytest.mark.parametrize("usage", [True, False], ids=["usage", "no-usage"])
async def test_the_sdk_streaming_to_the_end_is_billed_and_a_success(fake_openai, redis: bool, usage: bool) -> None:
    fake_openai.faults.always(Fault(no_done=True, linger=True))
    async with serving(fake_openai, redis) as gw:
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0, timeout=10)
        ids = [rid(), rid()]
        for request_id in ids:
            extra = {"stream_options": {"include_usage": True}} if usage else {}
            stream = await client.chat.completions.create(
                model="chat", messages=MESSAGES, max_tokens=MAX_TOKENS, stream=True,  # type: ignore[arg-type]
                extra_headers={"x-request-id": request_id}, **extra)
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            assert text == fake_openai.reply_text
        await client.close()  # the SDK keeps its connection: closing it ends the last stream's wait
        for request_id in ids:
            assert " 200 " in await gw.access.line_for(request_id)
        assert await gw.spent() == pytest.approx(2 * (USAGE_USD if usage else ESTIMATE_USD))
        assert await gw.outcomes() == {"ok": 2.0}


# -- streams cut short by the client: billed for what was produced ------------------------------------
async def test_a_client_that_reads_every_token_and_leaves_before_the_finish_pays_for_them(
        fake_openai, redis: bool) -> None:
    fake_openai.faults.always(Fault(stall_after_chunks=len(PIECES)))  # every token, then nothing
    async with serving(fake_openai, redis) as gw:
        request_id = rid()
        await curl_like(gw.url, body(usage=True), request_id, until=b'"content":" upstream."')
        assert " 200 " in await gw.access.line_for(request_id)
        assert await gw.spent() == pytest.approx(ESTIMATE_USD)  # no usage came: the relayed text is counted
        assert await gw.metered() == pytest.approx(ESTIMATE_USD)
        assert await gw.outcomes() == {"error": 1.0}  # the answer never finished: not a success


@pytest.mark.parametrize("client", ["curl", "sdk"])
async def test_a_client_that_leaves_after_the_first_chunk_pays_for_what_was_produced(
        fake_openai, redis: bool, client: str) -> None:
    fake_openai.faults.always(Fault(stall_after_chunks=1))
    async with serving(fake_openai, redis) as gw:
        request_id = rid()
        if client == "curl":
            await curl_like(gw.url, body(usage=False), request_id, until=b'"content":"Hello"')
        else:
            sdk = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0, timeout=10)
            stream = await sdk.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=MAX_TOKENS,
                                                       stream=True, extra_headers={"x-request-id": request_id})
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    break
            await stream.close()
            await sdk.close()
        assert " 200 " in await gw.access.line_for(request_id)
        assert await gw.spent() == pytest.approx((INPUT_ESTIMATE + relayed(["Hello"])) * 0.001)
        assert await gw.outcomes() == {"error": 1.0}
        board = await gw.dashboard()
        assert board["teams"][gw.team]["output_tokens"] == relayed(["Hello"])
        if not redis:
            assert (board["totals"]["requests"], board["totals"]["errors"]) == (1, 1)


async def test_a_client_that_leaves_before_any_token_pays_nothing(fake_openai, redis: bool) -> None:
    fake_openai.faults.always(Fault(stall_after_chunks=0))  # the role chunk, then nothing
    async with serving(fake_openai, redis) as gw:
        request_id = rid()
        await curl_like(gw.url, body(usage=False), request_id, until=b'"role":"assistant"')
        assert " 200 " in await gw.access.line_for(request_id)
        assert await gw.spent() == 0  # released: the upstream produced nothing
        assert await gw.outcomes() == {"error": 1.0}
