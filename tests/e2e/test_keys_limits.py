"""Virtual keys and rate limits through the running gateway (official openai SDK), with the
in-memory store and with the real Redis on 127.0.0.1:6379 shared by two gateways."""

from __future__ import annotations

import asyncio
import secrets

import aiohttp
import openai
import pytest

from policies.sensitivity import Scanner
from router.settings import Settings
from tests.e2e.test_gateway_sdk import MESSAGES, local

REDIS = "redis://127.0.0.1:6379/0"
ADMIN = "admin-" + "x" * 20
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN}"}


def keyed_policy(fake, *, limits: str = "{}", key_limits: str = "{}", extra_rules: str = "") -> str:
    return f"""
version: 1
backends:
  gpu: {local(fake)}
models:
  chat: {{targets: [gpu]}}
teams:
  search: {{keys: ["${{SEARCH_KEY}}"], limits: {limits}, key_limits: {key_limits}}}
  batch: {{keys: []}}
{extra_rules}
"""


def client(url: str, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=10)


def settings(**kw) -> Settings:
    return Settings(access_log=False, **kw)


async def admin(url: str, method: str, path: str, json: dict | None = None, key: str | None = ADMIN):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with aiohttp.ClientSession() as http, http.request(method, url + path, json=json, headers=headers) as r:
        return r.status, await r.json()


@pytest.fixture(autouse=True)
async def _deadline():
    async with asyncio.timeout(20):
        yield


async def test_keys_are_required_once_configured(gateway, fake_openai):
    url = await gateway(keyed_policy(fake_openai), env={"SEARCH_KEY": "sk-search-1"})
    with pytest.raises(openai.AuthenticationError) as info:
        await client(url, "sk-wrong").chat.completions.create(model="chat", messages=MESSAGES)
    assert info.value.status_code == 401 and info.value.body["code"] == "invalid_api_key"
    async with aiohttp.ClientSession() as http, http.post(url + "/v1/chat/completions", json={}) as r:
        assert r.status == 401 and "missing API key" in (await r.json())["error"]["message"]
    result = await client(url, "sk-search-1").chat.completions.create(model="chat", messages=MESSAGES)
    assert result.choices[0].message.content == fake_openai.reply_text
    assert len(fake_openai.calls("/v1/chat/completions")) == 1  # refused requests never reached it


async def test_team_is_a_routing_fact(gateway, fake_openai):
    rule = "rules:\n  - {name: no-search, when: {team: search}, route: {deny: 'search uses the other gateway'}}"
    url = await gateway(keyed_policy(fake_openai, extra_rules=rule), env={"SEARCH_KEY": "sk-search-1"})
    with pytest.raises(openai.PermissionDeniedError) as info:
        await client(url, "sk-search-1").chat.completions.create(model="chat", messages=MESSAGES)
    assert "no-search" in info.value.body["message"]


async def test_team_rpm_limit_with_headers_and_retry_after(gateway, fake_openai):
    url = await gateway(keyed_policy(fake_openai, limits="{rpm: 3}"), env={"SEARCH_KEY": "sk-search-1"})
    c = client(url, "sk-search-1")
    for left in (2, 1, 0):
        raw = await c.chat.completions.with_raw_response.create(model="chat", messages=MESSAGES)
        assert raw.headers["x-ratelimit-limit-requests"] == "3"
        assert raw.headers["x-ratelimit-remaining-requests"] == str(left)
    with pytest.raises(openai.RateLimitError) as info:
        await c.chat.completions.create(model="chat", messages=MESSAGES)
    err = info.value
    assert err.body["type"] == "rate_limit_error" and "team 'search'" in err.body["message"]
    assert int(err.response.headers["retry-after"]) >= 1
    assert len(fake_openai.calls("/v1/chat/completions")) == 3


async def test_token_limit_counts_max_tokens(gateway, fake_openai):
    url = await gateway(keyed_policy(fake_openai, key_limits="{tpm: 100}"), env={"SEARCH_KEY": "sk-search-1"})
    with pytest.raises(openai.RateLimitError) as info:
        await client(url, "sk-search-1").chat.completions.create(model="chat", messages=MESSAGES, max_tokens=500)
    assert "tokens per minute" in info.value.body["message"] and "key " in info.value.body["message"]
    raw = await client(url, "sk-search-1").chat.completions.with_raw_response.create(
        model="chat", messages=MESSAGES, max_tokens=20)
    assert int(raw.headers["x-ratelimit-remaining-tokens"]) < 100


async def test_admin_api_needs_the_admin_key(gateway, fake_openai):
    url = await gateway(keyed_policy(fake_openai), env={"SEARCH_KEY": "sk-search-1"})
    status, body = await admin(url, "POST", "/admin/keys", {"team": "search"})
    assert status == 401 and body["error"]["code"] == "admin_key_not_set"
    url = await gateway(keyed_policy(fake_openai), env={"SEARCH_KEY": "sk-search-1"}, settings=settings(admin_key=ADMIN))
    status, body = await admin(url, "POST", "/admin/keys", {"team": "search"}, key="nope")
    assert status == 401 and body["error"]["code"] == "invalid_admin_key"
    status, body = await admin(url, "GET", "/admin/backends", key=None)
    assert status == 401


@pytest.mark.parametrize("redis", [False, True], ids=["memory", "redis"])
async def test_created_key_works_and_revocation_is_immediate(gateway, fake_openai, redis):
    kw = {"redis_url": REDIS} if redis else {}
    url = await gateway(keyed_policy(fake_openai), env={"SEARCH_KEY": "sk-search-1"},
                        settings=settings(admin_key=ADMIN, **kw))
    status, created = await admin(url, "POST", "/admin/keys", {"team": "batch", "name": "nightly"})
    assert status == 201 and created["key"].startswith("sk-sy-") and created["team"] == "batch"
    await client(url, created["key"]).chat.completions.create(model="chat", messages=MESSAGES)
    status, listing = await admin(url, "GET", "/admin/keys?team=batch")
    assert any(k["id"] == created["id"] and not k["revoked"] for k in listing["keys"])
    assert all(created["key"] not in str(k) for k in listing["keys"])  # never shown again
    status, _ = await admin(url, "DELETE", f"/admin/keys/{created['id']}")
    assert status == 200
    with pytest.raises(openai.AuthenticationError) as info:
        await client(url, created["key"]).chat.completions.create(model="chat", messages=MESSAGES)
    assert info.value.body["code"] == "key_revoked"


async def test_expired_key_is_refused(gateway, fake_openai):
    url = await gateway(keyed_policy(fake_openai), env={"SEARCH_KEY": "sk-search-1"}, settings=settings(admin_key=ADMIN))
    _, created = await admin(url, "POST", "/admin/keys", {"team": "batch", "expires_in_s": 0.001})
    await asyncio.sleep(0.01)  # the expiry is the behaviour under test
    with pytest.raises(openai.AuthenticationError) as info:
        await client(url, created["key"]).chat.completions.create(model="chat", messages=MESSAGES)
    assert info.value.body["code"] == "key_expired"


async def test_two_gateways_share_limits_and_revocations_through_redis(gateway, fake_openai):
    team_key = "sk-" + secrets.token_hex(8)  # a fresh team key: fresh windows in the shared Redis
    policy = keyed_policy(fake_openai, limits="{rpm: 5}").replace("search:", f"s{team_key[-6:]}:")
    env = {"SEARCH_KEY": team_key}
    a = await gateway(policy, env=env, settings=settings(admin_key=ADMIN, redis_url=REDIS))
    b = await gateway(policy, env=env, settings=settings(admin_key=ADMIN, redis_url=REDIS))
    ok = limited = 0
    for i in range(8):
        try:
            await client(a if i % 2 else b, team_key).chat.completions.create(model="chat", messages=MESSAGES)
            ok += 1
        except openai.RateLimitError:
            limited += 1
    assert (ok, limited) == (5, 3)  # one limit for both replicas
    _, created = await admin(a, "POST", "/admin/keys", {"team": "batch"})
    await client(b, created["key"]).chat.completions.create(model="chat", messages=MESSAGES)  # made on a, used on b
    await admin(a, "DELETE", f"/admin/keys/{created['id']}")
    with pytest.raises(openai.AuthenticationError):
        await client(b, created["key"]).chat.completions.create(model="chat", messages=MESSAGES)


async def test_redis_down_degrades_without_hanging(gateway, fake_openai):
    from tests.conftest import free_port

    dead = f"redis://127.0.0.1:{free_port()}/0"
    url = await gateway(keyed_policy(fake_openai, limits="{rpm: 100}"), env={"SEARCH_KEY": "sk-search-1"},
                        settings=settings(redis_url=dead, admin_key=ADMIN))
    raw = await client(url, "sk-search-1").chat.completions.with_raw_response.create(model="chat", messages=MESSAGES)
    assert raw.headers["x-ratelimit-remaining-requests"] == "99"  # counted per process meanwhile
    with pytest.raises(openai.APIStatusError) as info:  # a store key cannot be checked: 503, not a hang
        await client(url, "sk-sy-unknown").chat.completions.create(model="chat", messages=MESSAGES)
    assert info.value.status_code == 503 and info.value.body["code"] == "key_store_unavailable"
    assert "127.0.0.1" not in info.value.body["message"]  # the store's address is not the client's business
    async with aiohttp.ClientSession() as http, http.get(url + "/readyz", headers=ADMIN_AUTH) as r:
        store = (await r.json())["store"]  # details: for the admin key
    assert store["kind"] == "redis" and store["ok"] is False and store["rate_limits"] == "per-process"


async def test_explain_is_under_the_same_key_and_rate_limits(gateway, fake_openai):
    """Issue 10: explain scans the body like a real request, so it counts against the caller's
    limits; without a key it is refused."""
    url = await gateway(keyed_policy(fake_openai, limits="{rpm: 2}"), env={"SEARCH_KEY": "sk-search-1"})
    body = {"model": "chat", "messages": MESSAGES}
    async with aiohttp.ClientSession() as http:
        async with http.post(url + "/v1/route/explain", json=body) as r:
            assert r.status == 401
        auth = {"Authorization": "Bearer sk-search-1"}
        async with http.post(url + "/v1/route/explain", json=body, headers=auth) as r:
            assert r.status == 200 and r.headers["x-ratelimit-remaining-requests"] == "1"
        await client(url, "sk-search-1").chat.completions.create(model="chat", messages=MESSAGES)
        async with http.post(url + "/v1/route/explain", json=body, headers=auth) as r:
            assert r.status == 429 and (await r.json())["error"]["type"] == "rate_limit_error"


async def test_a_large_body_over_the_limit_is_refused_before_it_is_scanned(gateway, fake_openai, monkeypatch):
    """Issue 10: a body big enough to be scanned off the loop is rate-limited first, on an
    estimate from its size — a caller over its limit cannot make the gateway scan megabytes."""
    url = await gateway(keyed_policy(fake_openai, limits="{rpm: 1}"), env={"SEARCH_KEY": "sk-search-1"})
    scans = []
    original = Scanner.scan
    monkeypatch.setattr(Scanner, "scan", lambda self, *a, **kw: scans.append(1) or original(self, *a, **kw))
    big = [{"role": "user", "content": "lorem ipsum " * 20_000}]  # 240 KB: over the off-loop size
    c = client(url, "sk-search-1")
    await c.chat.completions.create(model="chat", messages=big)
    assert len(scans) == 1
    with pytest.raises(openai.RateLimitError):
        await c.chat.completions.create(model="chat", messages=big)
    assert len(scans) == 1  # refused before its scan
