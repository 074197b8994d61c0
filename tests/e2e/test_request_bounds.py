"""Issue 11, items 2 and 6 (depth): what a request asks for is what it is estimated, reserved
and rate-limited for; integers out of range and bodies nested too deeply are a 400 naming
the problem, never a 500 — in memory and with the real Redis.

- ``n`` (and ``best_of``, and a completions batch) multiply the output estimate: the cost
  estimate, the budget reservation and the TPM count;
- ``settings.max_n`` caps ``n`` / ``best_of`` (400 over it);
- every integer the gateway reads or forwards is range-checked in the body parser
  (``max_tokens`` of 2**64 - 1 gave a 500 with Redis);
- a body nested deeper than the sensitivity scanner reads is a 400 (255-1024 levels gave a
  500: parsed, then not serialisable; 100,000 levels too deep even to parse).
"""

from __future__ import annotations

import json
import secrets

import aiohttp
import orjson
import pytest

from router.body import INT32_MAX, MAX_DEPTH
from router.settings import Settings
from tests.e2e.test_budgets import ADMIN, budget_policy, spend
from tests.e2e.test_gateway_sdk import MESSAGES

KEY = "sk-request-bounds-000000000"
REDIS = "redis://127.0.0.1:6379/0"
PATHS = {"chat": "/v1/chat/completions", "completions": "/v1/completions", "embeddings": "/v1/embeddings"}
BASE = {"chat": {"model": "chat", "messages": MESSAGES},
        "completions": {"model": "chat", "prompt": "Say hello."},
        "embeddings": {"model": "chat", "input": "Say hello."}}


@pytest.fixture(params=[False, True], ids=["memory", "redis"])
def redis(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


async def post(url: str, path: str, data: bytes | dict[str, object], key: str | None = KEY
               ) -> tuple[int, dict[str, str], dict]:
    payload = data if isinstance(data, bytes) else json.dumps(data).encode()  # any integer, even past 64 bits
    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {key}"} if key else {})
    async with aiohttp.ClientSession() as http, http.post(url + path, data=payload, headers=headers) as r:
        return r.status, dict(r.headers), await r.json(content_type=None)


async def start(gateway, fake, redis: bool, daily: float = 5.0, extra: str = "") -> tuple[str, str]:
    """A gateway for a team of its own (a budget, a key); returns (url, team)."""
    team = "rb" + secrets.token_hex(4)
    url = await gateway(budget_policy(fake, team, daily, extra=extra), env={"TEAM_KEY": KEY},
                        settings=Settings(access_log=False, admin_key=ADMIN, redis_url=REDIS if redis else None))
    return url, team


def bad_request(status: int, body: dict, param: str | None) -> str:
    assert status == 400, body
    error = body["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param, error
    return str(error["message"])


# -- integers out of range: 400 naming the field -----------------------------------------------------
@pytest.mark.parametrize(("endpoint", "field", "value"), [
    ("chat", "max_tokens", 2**64 - 1),  # gave a 500 with Redis
    ("chat", "max_tokens", 2**64),  # past 64 bits: parsed as a float
    ("chat", "max_tokens", INT32_MAX + 1),
    ("chat", "max_tokens", -1),
    ("chat", "max_completion_tokens", 2**63),
    ("chat", "n", 0),
    ("chat", "n", 2**64 - 1),
    ("chat", "best_of", 2**40),
    ("chat", "seed", 2**63),
    ("chat", "seed", -(2**63) - 1),
    ("chat", "top_logprobs", 2**40),
    ("completions", "max_tokens", 2**64 - 1),
    ("completions", "logprobs", 2**40),
    ("completions", "best_of", 0),
    ("embeddings", "dimensions", 0),
    ("embeddings", "dimensions", 2**64 - 1),
])
async def test_integers_out_of_range_are_a_400_naming_the_field(gateway, fake_openai, redis: bool,
                                                                endpoint: str, field: str, value: int) -> None:
    url, _ = await start(gateway, fake_openai, redis)
    status, _, body = await post(url, PATHS[endpoint], BASE[endpoint] | {field: value})
    assert f"'{field}'" in bad_request(status, body, field)
    assert fake_openai.received == []


async def test_integers_at_the_edges_of_their_range_pass(gateway, fake_openai, redis: bool) -> None:
    """The largest values the parser takes never overflow an estimate or a store counter: the
    budget refuses the reservation (a 429, not a 500); a caller without limits is served."""
    url, team = await start(gateway, fake_openai, redis)
    edges = {"max_tokens": INT32_MAX, "n": 8, "seed": 2**63 - 1}
    status, _, body = await post(url, PATHS["chat"], BASE["chat"] | edges)
    assert status == 429 and body["error"]["type"] == "budget_exceeded", body
    assert (await spend(url, team))["spent_usd"] == 0
    unmetered = budget_policy(fake_openai, team, 5.0).replace(", budget: {daily_usd: 5.0}", "")
    url = await gateway(unmetered, env={"TEAM_KEY": KEY},
                        settings=Settings(access_log=False, redis_url=REDIS if redis else None))
    status, _, body = await post(url, PATHS["chat"], BASE["chat"] | edges | {"seed": -(2**63)})
    assert status == 200, body
    assert fake_openai.received[-1].body["seed"] == -(2**63)  # forwarded exactly


async def test_the_largest_request_cannot_overflow_the_stores_counters(gateway, fake_openai, redis: bool) -> None:
    """10,000 prompts × 8 answers × 2**31 - 1 tokens at 0.001 USD: 1.7e11 USD, past a 64-bit
    nano-USD counter. The reservation and the TPM count are capped far above any limit
    (``pipeline.MOST_USD``, ``MOST_TOKENS``): refused as over the budget / the limit."""
    url, team = await start(gateway, fake_openai, redis)
    batch = {"model": "chat", "prompt": ["Say hello."] * 10_000, "max_tokens": INT32_MAX, "n": 8}
    status, _, body = await post(url, PATHS["completions"], batch)
    assert status == 429 and body["error"]["type"] == "budget_exceeded", body
    limited = budget_policy(fake_openai, team, 5.0).replace("budget: {daily_usd: 5.0}", "limits: {tpm: 1000000}")
    url = await gateway(limited, env={"TEAM_KEY": KEY},
                        settings=Settings(access_log=False, redis_url=REDIS if redis else None))
    status, _, body = await post(url, PATHS["completions"], batch)
    assert status == 429 and body["error"]["code"] == "rate_limit_exceeded", body
    assert fake_openai.received == []


# -- n, best_of and batches: what is asked is what is estimated, reserved and counted -------------------
@pytest.mark.parametrize("field", ["n", "best_of"])
async def test_n_scales_the_reservation(gateway, fake_openai, redis: bool, field: str) -> None:
    """0.001 USD a token, budget 0.05: 5 input tokens + 10 per answer. One answer reserves 0.015;
    eight reserve 0.085 — over the budget, refused before any upstream is called."""
    url, team = await start(gateway, fake_openai, redis, daily=0.05)
    body = BASE["chat"] | {"max_tokens": 10}
    status, _, answer = await post(url, PATHS["chat"], body | {field: 8})
    assert status == 429 and answer["error"]["type"] == "budget_exceeded", answer
    assert fake_openai.received == []
    status, headers, answer = await post(url, PATHS["chat"], body | {field: 4})  # 0.045 reserved: fits
    assert status == 200, answer
    settled = (4 + 5 * 4) * 0.001 if field == "n" else (4 + 5) * 0.001  # the fake answers n choices
    assert (await spend(url, team))["spent_usd"] == pytest.approx(settled)


async def test_n_scales_the_tpm_count(gateway, fake_openai, redis: bool) -> None:
    team = "rt" + secrets.token_hex(4)
    policy = budget_policy(fake_openai, team, 5.0).replace("budget: {daily_usd: 5.0}", "limits: {tpm: 100}")
    url = await gateway(policy, env={"TEAM_KEY": KEY},
                        settings=Settings(access_log=False, redis_url=REDIS if redis else None))
    body = BASE["chat"] | {"max_tokens": 20}
    status, _, answer = await post(url, PATHS["chat"], body | {"n": 8})  # 5 + 8 × 20 = 165 tokens > 100
    assert status == 429 and answer["error"]["code"] == "rate_limit_exceeded", answer
    status, _, answer = await post(url, PATHS["chat"], body | {"n": 2})  # 45 tokens
    assert status == 200, answer


async def test_a_completions_batch_scales_the_reservation(gateway, fake_openai, redis: bool) -> None:
    url, _ = await start(gateway, fake_openai, redis, daily=0.05)
    prompts = ["Say hello."] * 8  # 8 answers of up to 10 tokens: 0.08 USD and more
    status, _, answer = await post(url, PATHS["completions"], {"model": "chat", "prompt": prompts, "max_tokens": 10})
    assert status == 429 and answer["error"]["type"] == "budget_exceeded", answer


async def test_explain_shows_the_estimate_for_every_answer_asked_for(gateway, fake_openai) -> None:
    url, _ = await start(gateway, fake_openai, False)
    results = []
    for n in (1, 3):
        status, _, result = await post(url, "/v1/route/explain", BASE["chat"] | {"max_tokens": 10, "n": n})
        assert status == 200, result
        results.append(result)
    one, three = (r["candidates"][0]["estimated_cost_usd"] for r in results)
    assert results[1]["facts"]["choices"] == 3
    assert three - one == pytest.approx(2 * 10 * 0.001)  # two more answers of 10 tokens


@pytest.mark.parametrize("field", ["n", "best_of"])
async def test_settings_max_n_caps_n(gateway, fake_openai, field: str) -> None:
    url, _ = await start(gateway, fake_openai, False, extra="settings: {max_n: 2}")
    status, _, body = await post(url, PATHS["chat"], BASE["chat"] | {field: 3})
    assert "settings.max_n" in bad_request(status, body, field) and "at most 2" in body["error"]["message"]
    status, _, body = await post(url, PATHS["chat"], BASE["chat"] | {field: 2})
    assert status == 200, body


async def test_max_n_defaults_to_8(gateway, fake_openai) -> None:
    url, _ = await start(gateway, fake_openai, False)
    status, _, body = await post(url, PATHS["chat"], BASE["chat"] | {"n": 9})
    bad_request(status, body, "n")
    status, _, body = await post(url, PATHS["chat"], BASE["chat"] | {"n": 8})
    assert status == 200 and len(body["choices"]) == 8


# -- depth -----------------------------------------------------------------------------------------------
def nested_body(depth: int, endpoint: str = "chat") -> bytes:
    """A body whose ``x_extra`` holds arrays ``depth`` levels inside the top-level object
    (built as text: the deepest of them cannot even be serialised by orjson)."""
    head = orjson.dumps(BASE[endpoint])[:-1]
    return head + b',"x_extra":' + b"[" * (depth - 1) + b'["leaf"]' + b"]" * (depth - 1) + b"}"


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 255, 1024, 1025, 100_000])
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/route/explain", "/v1/completions", "/v1/embeddings"])
async def test_a_body_nested_too_deeply_is_a_400(gateway, fake_openai, redis: bool, depth: int, path: str) -> None:
    url, _ = await start(gateway, fake_openai, redis)
    endpoint = {"/v1/completions": "completions", "/v1/embeddings": "embeddings"}.get(path, "chat")
    status, _, body = await post(url, path, nested_body(depth, endpoint))
    message = bad_request(status, body, None)
    assert "nested too deeply" in message and str(MAX_DEPTH) in message
    assert fake_openai.received == []
    status, _, body = await post(url, PATHS["chat"], BASE["chat"])
    assert status == 200, body  # and it goes on serving


async def test_a_body_nested_as_deep_as_the_scanner_reads_is_served(gateway, fake_openai, redis: bool) -> None:
    url, _ = await start(gateway, fake_openai, redis)
    status, _, body = await post(url, PATHS["chat"], nested_body(MAX_DEPTH))
    assert status == 200, body
    sent = fake_openai.received[-1].body["x_extra"]
    for _ in range(MAX_DEPTH - 1):
        sent = sent[0]
    assert sent == ["leaf"]  # forwarded whole
