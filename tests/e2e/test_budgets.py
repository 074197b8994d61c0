"""Budgets through the running gateway: reserve before dispatch, settle to the actual cost,
release on failure; exhausted → 429 budget_exceeded; in memory and in the real Redis."""

from __future__ import annotations

import asyncio
import secrets

import aiohttp
import openai
import pytest

from router.settings import Settings
from tests.e2e.test_gateway_sdk import MESSAGES
from tests.fakes.faults import Fault

ADMIN = "admin-" + "y" * 20
# 0.001 USD per token in and out: the fake answers 4 prompt words + 5 completion words = 0.009 USD
PRICE = "{input_per_mtok_usd: 1000, output_per_mtok_usd: 1000}"


def budget_policy(fake, team: str, daily: float, extra: str = "") -> str:
    return f"""
version: 1
backends:
  gpu: {{kind: vllm, base_url: '{fake.base_url}', model: m, price: {PRICE}}}
  cheap: {{kind: vllm, base_url: '{fake.base_url}', model: cheap}}
models:
  chat: {{targets: [gpu]}}
teams:
  {team}: {{keys: ["${{TEAM_KEY}}"], budget: {{daily_usd: {daily}}}}}
{extra}
"""


def client(url: str, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=10)


async def spend(url: str, team: str) -> dict:
    async with aiohttp.ClientSession() as http, http.get(
            url + f"/admin/spend?team={team}&window=day", headers={"Authorization": f"Bearer {ADMIN}"}) as r:
        assert r.status == 200
        return await r.json()


@pytest.fixture(autouse=True)
async def _deadline():
    async with asyncio.timeout(20):
        yield


@pytest.mark.parametrize("redis", [False, True], ids=["memory", "redis"])
async def test_budget_is_settled_to_actual_cost_then_exhausted(gateway, fake_openai, redis):
    team = "b" + secrets.token_hex(4)
    extra = {"redis_url": "redis://127.0.0.1:6379/0"} if redis else {}
    url = await gateway(budget_policy(fake_openai, team, 0.05), env={"TEAM_KEY": "sk-t"},
                        settings=Settings(access_log=False, admin_key=ADMIN, **extra))
    c = client(url, "sk-t")
    raw = await c.chat.completions.with_raw_response.create(model="chat", messages=MESSAGES, max_tokens=10)
    assert raw.headers["x-switchyard-cost-usd"] == "0.00900000"
    assert (await spend(url, team))["spent_usd"] == pytest.approx(0.009)  # settled to actual, not the estimate
    for _ in range(3):  # each reserves its estimate (15 tokens: 0.015) and settles to 0.009
        await c.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=10)
    with pytest.raises(openai.APIStatusError) as info:
        await c.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=10)
    assert info.value.status_code == 429 and info.value.body["type"] == "budget_exceeded"
    assert team in info.value.body["message"] and "per day" in info.value.body["message"]
    report = await spend(url, team)
    assert report["spent_usd"] == pytest.approx(0.036) and report["limit_usd"] == 0.05  # 0.036 + 0.015 > 0.05


async def test_concurrent_requests_never_overspend(gateway, fake_openai):
    team = "c" + secrets.token_hex(4)
    url = await gateway(budget_policy(fake_openai, team, 0.05), env={"TEAM_KEY": "sk-t"},
                        settings=Settings(access_log=False, admin_key=ADMIN, redis_url="redis://127.0.0.1:6379/0"))
    c = client(url, "sk-t")

    async def one() -> bool:
        try:
            await c.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=10)
            return True
        except openai.APIStatusError as exc:
            assert exc.body["type"] == "budget_exceeded"
            return False

    accepted = sum(await asyncio.gather(*(one() for _ in range(30))))
    spent = (await spend(url, team))["spent_usd"]
    assert spent == pytest.approx(accepted * 0.009)
    assert spent <= 0.05 + 0.015  # budget + the largest single reservation
    assert accepted >= 3


async def test_failed_attempts_are_not_billed(gateway, fake_openai):
    team = "f" + secrets.token_hex(4)
    url = await gateway(budget_policy(fake_openai, team, 1.0), env={"TEAM_KEY": "sk-t"},
                        settings=Settings(access_log=False, admin_key=ADMIN))
    fake_openai.faults.always(Fault(status=503))
    with pytest.raises(openai.APIStatusError):
        await client(url, "sk-t").chat.completions.create(model="chat", messages=MESSAGES, max_tokens=10)
    assert (await spend(url, team))["spent_usd"] == 0  # the reservation was released


async def test_streams_are_settled_from_their_usage(gateway, fake_openai):
    team = "s" + secrets.token_hex(4)
    url = await gateway(budget_policy(fake_openai, team, 1.0), env={"TEAM_KEY": "sk-t"},
                        settings=Settings(access_log=False, admin_key=ADMIN))
    stream = await client(url, "sk-t").chat.completions.create(
        model="chat", messages=MESSAGES, max_tokens=10, stream=True, stream_options={"include_usage": True})
    async for _ in stream:
        pass
    assert (await spend(url, team))["spent_usd"] == pytest.approx(0.009)


async def test_budget_remaining_moves_traffic_before_the_hard_stop(gateway, fake_openai):
    team = "r" + secrets.token_hex(4)
    rule = """rules:
  - {name: save-money, when: {budget_remaining: {lt: 0.8}}, route: {targets: [cheap]}}
"""
    url = await gateway(budget_policy(fake_openai, team, 0.04, extra=rule), env={"TEAM_KEY": "sk-t"},
                        settings=Settings(access_log=False, admin_key=ADMIN))
    c = client(url, "sk-t")
    first = await c.chat.completions.with_raw_response.create(model="chat", messages=MESSAGES, max_tokens=10)
    assert first.headers["x-switchyard-backend"] == "gpu"  # 0.009 of 0.04 spent: 77% left
    second = await c.chat.completions.with_raw_response.create(model="chat", messages=MESSAGES, max_tokens=10)
    assert second.headers["x-switchyard-backend"] == "cheap" and second.headers["x-switchyard-rule"] == "save-money"


async def test_store_down_fails_closed_by_default(gateway, fake_openai):
    from tests.conftest import free_port

    team = "d" + secrets.token_hex(4)
    dead = f"redis://127.0.0.1:{free_port()}/0"
    url = await gateway(budget_policy(fake_openai, team, 1.0), env={"TEAM_KEY": "sk-t"},
                        settings=Settings(access_log=False, redis_url=dead))
    with pytest.raises(openai.APIStatusError) as info:
        await client(url, "sk-t").chat.completions.create(model="chat", messages=MESSAGES)
    assert info.value.status_code == 503 and info.value.body["code"] == "budget_store_unavailable"
    url = await gateway(budget_policy(fake_openai, team, 1.0, extra="settings: {on_store_error: fail_open}"),
                        env={"TEAM_KEY": "sk-t"}, settings=Settings(access_log=False, redis_url=dead))
    await client(url, "sk-t").chat.completions.create(model="chat", messages=MESSAGES)  # served unmetered


async def test_a_key_has_its_own_budget(gateway, fake_openai):
    """A key created with budget_monthly_usd stops at its own budget; the team's other key
    goes on (and the policy's key_budget limits every key of a team)."""
    import aiohttp

    team = "k" + secrets.token_hex(4)
    policy = budget_policy(fake_openai, team, 10.0).replace(
        "budget: {daily_usd: 10.0}", "budget: {daily_usd: 10.0}, key_budget: {monthly_usd: 0.04}")
    url = await gateway(policy, env={"TEAM_KEY": "sk-t"}, settings=Settings(access_log=False, admin_key=ADMIN))
    async with aiohttp.ClientSession() as http, http.post(
            url + "/admin/keys", json={"team": team, "budget_monthly_usd": 0.02},
            headers={"Authorization": f"Bearer {ADMIN}"}) as r:
        created = await r.json()
    assert created["budget_monthly_usd"] == 0.02
    own = client(url, created["key"])
    await own.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=10)  # 0.015 reserved, 0.009 kept
    with pytest.raises(openai.APIStatusError) as info:
        await own.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=10)
    assert info.value.body["type"] == "budget_exceeded"
    assert f"key {created['id']}" in info.value.body["message"] and "per month" in info.value.body["message"]
    shared = client(url, "sk-t")  # the policy key: key_budget 0.04 per month
    for _ in range(3):
        await shared.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=10)
    with pytest.raises(openai.APIStatusError) as info:
        await shared.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=10)
    assert info.value.body["type"] == "budget_exceeded" and "key " in info.value.body["message"]
