"""The gateway fetches nothing for clients (issue 11, item 5).

A local server stands in for an internal host: it counts every TCP connection (so an
``https://`` fetch attempt counts too) and answers ``/img.png`` with an image and
``/redirect`` with a 302 to it. Image and file URLs pointing at it go through every closed
kind — the kinds whose providers fetch URLs themselves (``openai``, ``azure``, ``anthropic``
over https) reach their fake upstream with the URL in the body; every other closed kind
answers 400 before any upstream is called — and the server must see zero connections.
Before the fix, litellm downloaded the image for ``anthropic`` (and most other kinds).
"""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import pytest
from aiohttp import web

from tests.e2e.test_closed_providers import claude
from tests.e2e.test_gateway_sdk import client, local, policy
from tests.fakes.openai_upstream import FakeOpenAI

PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")
DATA_URL = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgAAIAAVSiT10AAAAASUVORK5CYII="

#: Closed kinds whose requests never reach an upstream when they carry a URL (the adapter
#: refuses first), so any reachable base_url will do. A broad sample of litellm's providers;
#: tests/backends/test_url_inputs.py covers every provider name litellm knows.
REFUSING_KINDS = ("gemini", "vertex_ai", "bedrock", "mistral", "groq", "ollama_chat", "deepseek", "xai",
                  "together_ai", "openrouter", "fireworks_ai", "azure_ai", "cohere_chat", "huggingface",
                  "gigachat", "watsonx", "databricks", "perplexity", "cerebras", "sagemaker_chat")


class InternalHost:
    """A plain TCP server that counts connections and speaks just enough HTTP."""

    def __init__(self) -> None:
        self.connections = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> InternalHost:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    def url(self, path: str, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        head = await reader.read(4096)
        if head.startswith(b"GET /redirect"):
            writer.write(f"HTTP/1.1 302 Found\r\nLocation: {self.url('/img.png')}\r\nContent-Length: 0\r\n"
                         "Connection: close\r\n\r\n".encode())
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: %d\r\n"
                         b"Connection: close\r\n\r\n%s" % (len(PNG), PNG))
        await writer.drain()
        writer.close()


class FakeAzure(FakeOpenAI):
    """Azure OpenAI's deployment path (``{base}/openai/deployments/{name}/chat/completions``)
    on the OpenAI fake; the key comes in an ``api-key`` header."""

    def add_routes(self, router: web.UrlDispatcher) -> None:
        super().add_routes(router)
        router.add_post("/v1/openai/deployments/{deployment}/chat/completions", self._chat)


@pytest.fixture
async def internal(stack) -> InternalHost:
    return await stack.enter_async_context(InternalHost())


@pytest.fixture
async def fake_azure(stack) -> FakeAzure:
    return await stack.enter_async_context(FakeAzure(name="azure", model_name="gpt-4o"))


def image(url: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                         {"type": "image_url", "image_url": {"url": url}}]}]


def pdf(url: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "text", "text": "Summarise."},
                                         {"type": "file", "file": {"file_id": url}}]}]


def closed(kind: str, fake: FakeOpenAI, model: str = "some-model") -> str:
    return (f"{{kind: {kind}, base_url: '{fake.base_url}', model: {model}, api_key: k-test, "
            "timeouts: {connect_s: 1, first_token_s: 5, idle_s: 5, total_s: 10}}")


async def ask(url: str, alias: str, messages: list[dict[str, Any]], stream: bool) -> tuple[int, Any]:
    """(status, answer text or error body) through the official SDK."""
    try:
        if stream:
            chunks = await client(url).chat.completions.create(model=alias, messages=messages, stream=True)
            return 200, "".join([c.choices[0].delta.content or "" async for c in chunks if c.choices])
        result = await client(url).chat.completions.create(model=alias, messages=messages)
        return 200, result.choices[0].message.content
    except openai.APIStatusError as exc:
        return exc.status_code, exc.body


def assert_refused(status: int, body: Any, backend: str, param: str) -> None:
    assert status == 400, body
    assert body["type"] == "invalid_request_error" and body["code"] == "unsupported_url"
    assert body["param"] == param
    assert body["message"].startswith(f"{backend} (kind ") and "data: URL" in body["message"]
    assert "127.0.0.1" not in body["message"]  # the URL is not echoed


@pytest.fixture
async def every_kind(gateway, fake_openai, fake_anthropic, fake_azure) -> str:
    """A gateway with one alias per closed kind (the alias is the backend's name)."""
    fake_openai.api_key = "k-test"
    backends = [("gpt", closed("openai", fake_openai, "gpt-4o-mini")),
                ("claude", claude(fake_anthropic)),
                ("az", f"{{kind: azure, base_url: '{fake_azure.base_url}', model: my-deployment, api_key: az-k}}"),
                *((f"k-{kind}", closed(kind, fake_openai)) for kind in REFUSING_KINDS)]
    return await gateway(policy(*backends, aliases={name: [name] for name, _ in backends}))


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_no_closed_kind_makes_the_gateway_fetch_a_url(every_kind, internal, fake_openai, fake_anthropic,
                                                            fake_azure, stream):
    http, redirect, https = internal.url("/img.png"), internal.url("/redirect"), internal.url("/img.png", "https")
    # openai and azure: every image URL goes to the provider as it is
    for alias, fake, path in (("gpt", fake_openai, "/v1/chat/completions"),
                              ("az", fake_azure, "/v1/openai/deployments/my-deployment/chat/completions")):
        for url in (http, redirect, https):
            status, answer = await ask(every_kind, alias, image(url), stream)
            assert (status, answer) == (200, fake.reply_text)
            assert fake.calls(path)[-1].body["messages"][0]["content"][1]["image_url"]["url"] == url
    # anthropic: https goes as a `url` image source; http would be downloaded by litellm: refused
    status, answer = await ask(every_kind, "claude", image(https), stream)
    assert (status, answer) == (200, fake_anthropic.reply_text)
    sent = fake_anthropic.calls("/v1/messages")[-1].body["messages"][0]["content"]
    assert {"type": "image", "source": {"type": "url", "url": https}} in sent
    for url in (http, redirect):
        assert_refused(*await ask(every_kind, "claude", image(url), stream), "claude", "messages[0].content[1].image_url")
    # every other closed kind: no image URL at all
    for kind in REFUSING_KINDS:
        for url in (http, redirect, https):
            assert_refused(*await ask(every_kind, f"k-{kind}", image(url), stream), f"k-{kind}",
                           "messages[0].content[1].image_url")
    # a file URL (litellm downloads PDFs by URL, even for openai): refused everywhere
    for alias in ("gpt", "az", "claude", *(f"k-{kind}" for kind in REFUSING_KINDS)):
        assert_refused(*await ask(every_kind, alias, pdf(redirect), stream), alias,
                       "messages[0].content[1].file.file_id")
    assert internal.connections == 0
    assert len(fake_openai.received) == 3  # the openai kind's three image URLs; no refused kind reached it


async def test_refusal_fails_over_to_a_target_that_takes_the_url(gateway, internal, fake_openai,
                                                                 fake_anthropic):
    fake_openai.api_key = "k-test"
    url = await gateway(policy(("gem", closed("gemini", fake_openai)), ("claude", claude(fake_anthropic)),
                               ("gpt", closed("openai", fake_openai, "gpt-4o-mini")),
                               ("bed", closed("bedrock", fake_openai)),
                               aliases={"mixed": ["gem", "claude", "gpt"], "none": ["gem", "bed"]}))
    raw = await client(url).chat.completions.with_raw_response.create(model="mixed",
                                                                      messages=image(internal.url("/x.png")))
    assert raw.headers["x-switchyard-backend"] == "gpt"
    assert raw.headers["x-switchyard-tried"] == "gem,claude"
    assert fake_anthropic.received == []
    # no target can take it: the first refusal is the answer (400, not a 502 "all failed")
    assert_refused(*await ask(url, "none", image(internal.url("/x.png")), False), "gem",
                   "messages[0].content[1].image_url")
    assert internal.connections == 0


async def test_data_urls_and_self_hosted_kinds_pass_untouched(gateway, internal, fake_openai, fake_anthropic):
    url = await gateway(policy(("claude", claude(fake_anthropic)), ("gpu", local(fake_openai)),
                               aliases={"claude": ["claude"], "gpu": ["gpu"]}))
    status, answer = await ask(url, "claude", image(DATA_URL), False)
    assert (status, answer) == (200, fake_anthropic.reply_text)
    source = fake_anthropic.calls("/v1/messages")[0].body["messages"][0]["content"][1]["source"]
    assert source["type"] == "base64" and source["media_type"] == "image/png"
    # a self-hosted server gets the body as the client sent it: the gateway itself fetches nothing
    http = internal.url("/img.png")
    assert (await ask(url, "gpu", image(http), False))[0] == 200
    assert fake_openai.calls("/v1/chat/completions")[0].body["messages"] == image(http)
    assert internal.connections == 0


async def test_the_internal_host_counts_a_fetch(internal) -> None:
    """The witness works: a real fetch (redirect followed) is counted."""
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(internal.url("/redirect")) as response:
        assert response.status == 200 and await response.read() == PNG
    assert internal.connections == 2


async def test_requests_litellm_cannot_translate_are_400s_and_leave_the_circuit_closed(gateway, fake_anthropic):
    """Found by schemathesis (bench/fuzz.py): ``tool_choice: {}`` made litellm raise inside its
    translation; that was a 502 "connection error" counted by the circuit, so a handful of such
    requests opened the backend's circuit for everyone (503 ``circuit open``)."""
    url = await gateway(policy(("claude", claude(fake_anthropic))))
    for _ in range(8):  # more than circuit.failures (5)
        status, body = await ask_raw(url, {"model": "chat", "messages": image(DATA_URL), "tool_choice": {}})
        assert status == 400 and body["error"]["code"] == "untranslatable_request", body
    assert fake_anthropic.received == []
    status, answer = await ask(url, "chat", image(DATA_URL), False)
    assert (status, answer) == (200, fake_anthropic.reply_text)


async def ask_raw(url: str, body: dict[str, Any]) -> tuple[int, Any]:
    import aiohttp

    async with aiohttp.ClientSession() as http, http.post(url + "/v1/chat/completions", json=body) as r:
        return r.status, await r.json()
