"""The observability endpoints on bad input and bad days: every failure is an OpenAI-shaped
error with the right status — a bad window, a wrong key, telemetry off, Redis down (the
dashboard says so; generation with policy keys and no budgets keeps working)."""

from __future__ import annotations

import aiohttp
import openai
import pytest

from router.settings import Settings
from tests.fakes.openai_upstream import FakeOpenAI

ADMIN, READER, TEAM_KEY = "admin-" + "o" * 24, "dash-" + "o" * 24, "sk-obs-team-0000000000"


def policy(fake: FakeOpenAI) -> str:
    return f"""
version: 1
backends:
  gpu: {{kind: vllm, base_url: '{fake.base_url}', model: m}}
models:
  chat: {{targets: [gpu]}}
teams:
  search: {{keys: ["{TEAM_KEY}"]}}
"""


async def get(url: str, key: str | None = None) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as r:
        return r.status, await r.json(content_type=None)


@pytest.mark.parametrize(("query", "param"), [("minutes=abc", "minutes"), ("minutes=0", "minutes"),
                                              ("minutes=999999", "minutes")])
async def test_a_bad_window_is_a_400(gateway, query: str, param: str) -> None:
    async with FakeOpenAI() as fake:
        url = await gateway(policy(fake), settings=Settings(access_log=False, admin_key=ADMIN))
        status, body = await get(f"{url}/dashboard/data?{query}", ADMIN)
    assert status == 400 and body["error"]["param"] == param and body["error"]["type"] == "invalid_request_error"


async def test_keys_for_the_dashboard_data(gateway) -> None:
    async with FakeOpenAI() as fake:
        url = await gateway(policy(fake), settings=Settings(access_log=False, admin_key=ADMIN, dashboard_key=READER))
        for key, want in ((None, 401), (TEAM_KEY, 401), ("wrong", 401), (READER, 200), (ADMIN, 200)):
            status, body = await get(f"{url}/dashboard/data?minutes=5", key)
            assert status == want, key
            if want == 401:
                assert body["error"]["code"] == "invalid_dashboard_key"
        # the read-only key opens nothing else
        status, _ = await get(f"{url}/admin/keys", READER)
        assert status == 401


async def test_metrics_when_telemetry_is_off(gateway) -> None:
    async with FakeOpenAI() as fake:
        url = await gateway(policy(fake), settings=Settings(access_log=False, telemetry=False, dashboard_key=READER))
        status, body = await get(f"{url}/metrics", READER)
    assert status == 404 and body["error"]["code"] == "telemetry_off"


async def test_redis_down_the_dashboard_says_so_and_requests_still_work(gateway) -> None:
    async with FakeOpenAI() as fake:
        settings = Settings(access_log=False, redis_url="redis://127.0.0.1:9/0",  # nothing listens there
                            dashboard_key=READER)
        url = await gateway(policy(fake), settings=settings)
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key=TEAM_KEY, max_retries=0)
        answer = await client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}])
        assert answer.choices[0].message.content  # a policy key, no budget: served without Redis
        status, body = await get(f"{url}/dashboard/data?minutes=5", READER)
        assert status == 503 and body["error"]["code"] == "stats_store_unavailable"
        assert "127.0.0.1" not in body["error"]["message"]  # the store's address stays in the log
        async with aiohttp.ClientSession() as session, \
                session.get(url + "/metrics", headers={"Authorization": f"Bearer {READER}"}) as r:
            text = await r.text()
        assert r.status == 200
        assert 'switchyard_store_degraded{switchyard_component="store"} 1.0' in text
        assert 'switchyard_store_degraded{switchyard_component="rate_limits"} 0.0' in text  # no limits configured
