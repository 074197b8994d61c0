"""Bad input gets a clear OpenAI-shaped error with the right status, and the gateway
keeps serving afterwards."""

from __future__ import annotations

import aiohttp
import pytest

from router.settings import Settings
from tests.e2e.test_gateway_sdk import MESSAGES, local, policy
from tests.fakes.faults import Fault

SHAPE = {"message", "type", "param", "code"}
ADMIN = "admin-" + "b" * 24


async def _post(url: str, path: str, data: bytes | str, headers: dict[str, str] | None = None):
    async with aiohttp.ClientSession() as http:
        async with http.post(url + path, data=data, headers=headers or {"Content-Type": "application/json"}) as r:
            return r.status, r.headers, await r.json(content_type=None)


def _assert_error(status: int, body: dict, want_status: int) -> dict:
    assert status == want_status, body
    assert set(body) == {"error"} and set(body["error"]) == SHAPE, body
    assert body["error"]["message"]
    return body["error"]


@pytest.mark.parametrize(("data", "param", "fragment"), [
    (b"{not json", None, "not valid JSON"),
    (b"", None, "empty"),
    (b"[1, 2]", None, "JSON object"),
    (b'{"model": "chat"}', "messages", "missing required parameter 'messages'"),
    (b'{"model": "chat", "messages": []}', "messages", "non-empty array"),
    (b'{"model": "chat", "messages": "hi"}', "messages", "non-empty array"),
    (b'{"model": "chat", "messages": [{"content": "no role"}]}', "messages", "role"),
    (b'{"model": 42, "messages": [{"role": "user", "content": "x"}]}', "model", "string"),
    (b'{"model": "chat", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}', "stream", "boolean"),
    (b'{"model": "chat", "messages": [{"role": "user", "content": "x"}], "max_tokens": "10"}', "max_tokens",
     "integer"),
    (b'{"model": "chat", "messages": [{"role": "user", "content": "x"}], "n": true}', "n", "integer"),
    (b'{"model": "chat", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}',
     "temperature", "number"),
], ids=["malformed", "empty", "array", "no-messages", "empty-messages", "messages-string", "no-role",
        "model-int", "stream-str", "max-tokens-str", "n-bool", "temperature-str"])
async def test_400_for_malformed_or_mistyped_bodies(gateway, fake_openai, data, param, fragment):
    url = await gateway(policy(("gpu", local(fake_openai))))
    status, headers, body = await _post(url, "/v1/chat/completions", data)
    err = _assert_error(status, body, 400)
    assert fragment in err["message"]
    assert err["param"] == param
    assert err["type"] == "invalid_request_error"
    assert headers["x-request-id"]
    assert fake_openai.received == []


async def test_404_unknown_model_lists_aliases(gateway, fake_openai):
    url = await gateway(policy(("gpu", local(fake_openai)), aliases={"chat": ["gpu"], "fast": ["gpu"]}))
    status, _, body = await _post(url, "/v1/chat/completions",
                                  b'{"model": "gpt-7", "messages": [{"role": "user", "content": "x"}]}')
    err = _assert_error(status, body, 404)
    assert err["code"] == "model_not_found" and err["param"] == "model"
    assert "'gpt-7'" in err["message"] and "chat, fast" in err["message"]


async def test_413_body_over_limit(gateway, fake_openai):
    url = await gateway(policy(("gpu", local(fake_openai)), extra="settings: {max_body_mb: 0.01}\n"))
    big = b'{"model": "chat", "messages": [{"role": "user", "content": "' + b"x" * 20_000 + b'"}]}'
    status, _, body = await _post(url, "/v1/chat/completions", big)
    err = _assert_error(status, body, 413)
    assert err["code"] == "request_too_large"


async def test_unknown_route_404_and_wrong_method_405(gateway, fake_openai):
    url = await gateway(policy(("gpu", local(fake_openai))))
    async with aiohttp.ClientSession() as http:
        async with http.get(url + "/v1/nope") as r:
            _assert_error(r.status, await r.json(), 404)
        async with http.get(url + "/v1/chat/completions") as r:
            _assert_error(r.status, await r.json(), 405)


async def test_embeddings_cannot_stream(gateway, fake_openai):
    url = await gateway(policy(("gpu", local(fake_openai))))
    status, _, body = await _post(url, "/v1/embeddings", b'{"model": "chat", "input": "x", "stream": true}')
    assert _assert_error(status, body, 400)["param"] == "stream"


async def test_upstream_context_length_error_is_a_clean_400(gateway, fake_openai):
    fake_openai.faults.always(Fault(status=400, error_type="context_length_exceeded",
                                    message="This model's maximum context length is 8 tokens"))
    url = await gateway(policy(("gpu", local(fake_openai))))
    status, headers, body = await _post(url, "/v1/chat/completions",
                                        b'{"model": "chat", "messages": [{"role": "user", "content": "x"}]}')
    err = _assert_error(status, body, 400)
    assert err["code"] == "context_length_exceeded" and "maximum context length" in err["message"]


async def test_gateway_keeps_serving_after_bad_input(gateway, fake_openai):
    url = await gateway(policy(("gpu", local(fake_openai))))
    for junk in (b"\xff\xfe", b"{" * 10_000, b'{"model": null}', b"null"):
        status, _, _ = await _post(url, "/v1/chat/completions", junk)
        assert status == 400
    status, _, body = await _post(url, "/v1/chat/completions",
                                  b'{"model": "chat", "messages": ' + str(MESSAGES).replace("'", '"').encode() + b"}")
    assert status == 200 and body["choices"][0]["message"]["content"] == fake_openai.reply_text


async def test_healthz_and_readyz(gateway, fake_openai):
    url = await gateway(policy(("gpu", local(fake_openai)), ("dead", "{kind: vllm, base_url: 'http://127.0.0.1:9/v1', "
                                                                      "model: m, timeouts: {connect_s: 0.5}}"),
                               aliases={"chat": ["gpu"], "broken": ["dead"]}),
                        settings=Settings(access_log=False, admin_key=ADMIN))
    async with aiohttp.ClientSession() as http:
        async with http.get(url + "/healthz") as r:
            assert r.status == 200 and (await r.json())["status"] == "ok"
        async with http.get(url + "/readyz") as r:  # anyone: ready or not, nothing more
            assert r.status == 200 and await r.json() == {"status": "ready"}
        async with http.get(url + "/readyz", headers={"Authorization": "Bearer wrong"}) as r:
            assert r.status == 200 and await r.json() == {"status": "ready"}
        async with http.get(url + "/readyz", headers={"Authorization": f"Bearer {ADMIN}"}) as r:
            body = await r.json()
            assert r.status == 200, body
            assert body["models"]["chat"]["ready"] is True
            assert body["models"]["broken"]["ready"] is False
            assert body["backends"]["dead"]["ok"] is False


async def test_readyz_503_when_nothing_reachable(gateway):
    url = await gateway(policy(("dead", "{kind: vllm, base_url: 'http://127.0.0.1:9/v1', model: m}")))
    async with aiohttp.ClientSession() as http:
        async with http.get(url + "/readyz") as r:
            assert r.status == 503 and await r.json() == {"status": "not ready"}





async def test_client_errors_say_a_retry_will_not_help(gateway, fake_openai):
    """``x-should-retry: false`` on 4xx a retry cannot fix (the SDKs and Claude Code honour it),
    never on 429 or 5xx."""
    url = await gateway(policy(("gpu", local(fake_openai))))
    async with aiohttp.ClientSession() as http:
        async with http.post(url + "/v1/messages", json={"model": "nope", "max_tokens": 5,
                                                         "messages": [{"role": "user", "content": "x"}]}) as r:
            assert r.status == 404 and r.headers["x-should-retry"] == "false"
            assert (await r.json())["error"]["type"] == "not_found_error"
        async with http.post(url + "/v1/chat/completions", data=b"{") as r:
            assert r.status == 400 and r.headers["x-should-retry"] == "false"
