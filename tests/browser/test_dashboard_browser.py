"""The built-in dashboard in a real headless Chromium, against the real gateway: traffic from
two teams (official ``openai`` SDK) shows up in every chart, the KPI tiles and the tables;
without a key the page asks for one; an open gateway needs none. No console errors anywhere.
A screenshot is left in ``$SWITCHYARD_ARTIFACTS`` (default ``test-artifacts/``)."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from router.settings import Settings
from tests.browser.cdp import CHROMIUM, Chromium, ConsoleMessage
from tests.fakes.openai_upstream import FakeOpenAI

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                reason=f"{CHROMIUM} is missing (install it: bash tests/tools/ensure-debian-tools.sh)")

ADMIN = "admin-" + "d" * 24
KEYS = {"SEARCH_KEY": "sk-search-dash", "BATCH_KEY": "sk-batch-dash"}
CHARTS = ("spend_by_team", "spend_by_model", "spend_by_provider", "savings", "self_hosted_share",
          "cache_hit_rate", "events", "latency", "ttft")
REPO = Path(__file__).resolve().parents[2]


def artifacts() -> Path:
    return Path(os.environ.get("SWITCHYARD_ARTIFACTS") or REPO / "test-artifacts")


def dashboard_policy(gpu: FakeOpenAI, cloud: FakeOpenAI, gpu2: FakeOpenAI) -> str:
    """A self-hosted model on a pool of two replicas and a closed one, two teams with keys, one
    rule, the cache on."""
    return f"""
version: 1
backends:
  gpu: {{kind: vllm, replicas: ['{gpu.base_url}', '{gpu2.base_url}'], model: served-model,
         price: {{gpu_hour_usd: 2.0, tokens_per_s: 50}}}}
  cloud: {{kind: openai, base_url: '{cloud.base_url}', model: gpt-4o-mini, api_key: sk-cloud}}
models:
  chat: {{targets: [gpu]}}
  smart: {{targets: [cloud]}}
rules:
  - {{name: batch-stays-home, when: {{team: batch}}, route: {{targets: [gpu]}}}}
teams:
  search: {{keys: ["${{SEARCH_KEY}}"], budget: {{daily_usd: 5}}}}
  batch: {{keys: ["${{BATCH_KEY}}"]}}
cache: {{mode: exact, ttl_s: 300, scope: team}}
"""


def client(url: str, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=10)


def fresh(topic: str) -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": f"{topic} {secrets.token_hex(6)}"}]  # never cached before


async def send_traffic(url: str) -> int:
    """20 requests: search on both models, batch pinned home by its rule, one stream, one cache hit."""
    search, batch = client(url, KEYS["SEARCH_KEY"]), client(url, KEYS["BATCH_KEY"])
    sent = 0
    repeat = fresh("repeat me")
    for i in range(7):
        await search.chat.completions.create(model="chat", messages=repeat if i == 0 else fresh("search"),
                                             max_tokens=16)
        sent += 1
    for _ in range(5):
        await search.chat.completions.create(model="smart", messages=fresh("search smart"), max_tokens=16)
        sent += 1
    for alias in ("smart",) * 5 + ("chat",):
        raw = await batch.chat.completions.with_raw_response.create(model=alias, messages=fresh("batch"),
                                                                    max_tokens=16)
        assert raw.headers["x-switchyard-backend"] == "gpu"  # the rule kept it home
        sent += 1
    stream = await search.chat.completions.create(model="chat", messages=fresh("stream"), max_tokens=16,
                                                  stream=True, stream_options={"include_usage": True})
    async for _ in stream:
        pass
    sent += 1
    hit = await search.chat.completions.with_raw_response.create(model="chat", messages=repeat, max_tokens=16)
    assert hit.headers["x-switchyard-cache"] == "hit"
    sent += 1
    assert sent == 20
    return sent


def unexpected(messages: list[ConsoleMessage], allow: tuple[int, ...] = ()) -> list[str]:
    """Page problems, minus the browser's own network log line for an expected refusal of
    /dashboard/data ("Failed to load resource: the server responded with a status of 401")."""
    def expected(m: ConsoleMessage) -> bool:
        return (m.kind == "log" and m.source == "network" and "/dashboard/data" in m.url
                and any(f"status of {status} " in m.text for status in allow))
    return [str(m) for m in messages if not expected(m)]


async def chart_points(browser: Chromium) -> dict[str, int]:
    raw = await browser.evaluate(
        "JSON.stringify(Object.fromEntries([...document.querySelectorAll('svg[data-chart]')]"
        ".map(e => [e.dataset.chart, Number(e.dataset.points)])))")
    points: dict[str, int] = json.loads(raw)
    return points


@pytest.fixture(autouse=True)
async def _deadline() -> AsyncIterator[None]:
    async with asyncio.timeout(90):
        yield


@pytest.fixture
async def browser() -> AsyncIterator[Chromium]:
    async with Chromium() as b:
        yield b


@pytest.fixture
async def upstreams(stack: AsyncExitStack) -> tuple[FakeOpenAI, FakeOpenAI, FakeOpenAI]:
    gpu = await stack.enter_async_context(FakeOpenAI(name="gpu", model_name="gemma-fake"))
    cloud = await stack.enter_async_context(FakeOpenAI(name="cloud", model_name="gpt-4o-mini", api_key="sk-cloud"))
    gpu2 = await stack.enter_async_context(FakeOpenAI(name="gpu2", model_name="gemma-fake"))
    return gpu, cloud, gpu2


async def test_dashboard_draws_the_traffic(gateway, upstreams, browser: Chromium) -> None:
    url = await gateway(dashboard_policy(*upstreams), env=KEYS, settings=Settings(access_log=False, admin_key=ADMIN))
    sent = await send_traffic(url)

    await browser.navigate(f"{url}/dashboard#key={ADMIN}")
    await browser.wait_for("Number(document.querySelector('[data-chart=\"spend_by_team\"]')?.dataset.points) > 0", 25)
    # stats may reach the store a moment after the answers: the page refreshes every 10 s
    await browser.wait_for(f"document.querySelector('[data-kpi=\"requests\"]').dataset.value === '{sent}'", 25)

    # the key left the address bar for this tab's sessionStorage
    assert await browser.evaluate("location.hash") == ""
    assert await browser.evaluate("sessionStorage.getItem('switchyard.dashboard.key')") == ADMIN
    assert await browser.evaluate("document.getElementById('key-overlay').hidden") is True

    points = await chart_points(browser)
    assert set(CHARTS) <= set(points), points
    for chart in ("spend_by_team", "spend_by_model", "spend_by_provider", "self_hosted_share", "cache_hit_rate",
                  "latency", "ttft"):
        assert points[chart] >= 1, (chart, points)

    tile = await browser.evaluate(
        "(() => { const t = document.querySelector('[data-kpi=\"requests\"]');"
        " return {value: t.dataset.value, text: t.querySelector('.kpi-value').textContent}; })()")
    assert tile == {"value": str(sent), "text": str(sent)}

    teams = await browser.evaluate("[...document.querySelectorAll('#teams-table tbody tr')].map(r => r.dataset.team)")
    assert {"search", "batch"} <= set(teams)
    budget = await browser.evaluate(
        "document.querySelector('#teams-table tr[data-team=\"search\"] td:last-child').textContent")
    assert budget.startswith("$")  # search has a daily budget; batch has none
    rules = await browser.evaluate("document.getElementById('rules-table').textContent")
    assert "batch-stays-home" in rules
    legends = await browser.evaluate("document.querySelector('#card-spend_by_team .legend').textContent")
    assert "search" in legends and "batch" in legends

    # GPU economics: the pool's $2/h at 50 tokens/s, its utilisation and break-even against gpt-4o-mini
    gpu_row = await browser.evaluate(
        "(() => { const r = document.querySelector('#economics-table tr[data-gpu=\"gpu\"]');"
        " return r ? [...r.children].map(c => c.textContent) : null; })()")
    assert gpu_row is not None and gpu_row[1] == "$2.00", gpu_row
    break_even = json.loads(await browser.evaluate(
        "document.querySelector('#economics-table tr[data-gpu=\"gpu\"] td:last-child').dataset.breakEven"))
    assert set(break_even) == {"cloud"} and break_even["cloud"] > 1  # $2/h at 50 tokens/s never beats gpt-4o-mini
    assert "never" in gpu_row[-1]

    # the backends as they are now: the pool and its two replicas, the closed provider
    backends = await browser.evaluate(
        "[...document.querySelectorAll('#backends-table tbody tr')].map(r => r.dataset.backend || r.dataset.replica)")
    addresses = [u.base_url.split("://")[1].split("/")[0] for u in (upstreams[0], upstreams[2])]
    assert backends == ["gpu", *addresses, "cloud"], backends
    states = await browser.evaluate(
        "[...document.querySelectorAll('#backends-table tbody tr.replica td:last-child')].map(c => c.textContent)")
    assert states == ["ok", "ok"]
    assert "pool of 2" in await browser.evaluate("document.getElementById('backends-table').textContent")

    assert unexpected(browser.errors) == []
    shot = await browser.screenshot(artifacts() / "dashboard.png")
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


async def test_without_a_key_the_page_asks_for_one(gateway, upstreams, browser: Chromium) -> None:
    url = await gateway(dashboard_policy(*upstreams), env=KEYS, settings=Settings(access_log=False, admin_key=ADMIN))
    await browser.navigate(f"{url}/dashboard")
    await browser.wait_for("!document.getElementById('key-overlay').hidden")
    assert await browser.evaluate("document.querySelector('#key-input').type") == "password"
    assert await browser.evaluate("document.querySelector('svg[data-chart]')") is None
    assert unexpected(browser.errors, allow=(401,)) == []

    # a team key is refused: the form stays, with a message
    await browser.evaluate(f"document.getElementById('key-input').value = {json.dumps(KEYS['SEARCH_KEY'])};"
                           "document.getElementById('key-form').requestSubmit()")
    await browser.wait_for("document.getElementById('key-error').textContent.length > 0")
    assert await browser.evaluate("document.getElementById('key-overlay').hidden") is False

    # the admin key typed into the form opens the dashboard
    await browser.evaluate(f"document.getElementById('key-input').value = {json.dumps(ADMIN)};"
                           "document.getElementById('key-form').requestSubmit()")
    await browser.wait_for("document.querySelectorAll('svg[data-chart]').length === 9")
    assert await browser.evaluate("document.getElementById('key-overlay').hidden") is True
    assert unexpected(browser.errors, allow=(401, 403)) == []  # the team key may be a 403


async def test_an_open_gateway_needs_no_key_and_shows_the_empty_state(gateway, upstreams,
                                                                      browser: Chromium) -> None:
    gpu, _, _ = upstreams
    url = await gateway(f"""
version: 1
backends:
  gpu: {{kind: vllm, base_url: '{gpu.base_url}', model: served-model}}
models:
  chat: {{targets: [gpu]}}
""")
    await browser.navigate(f"{url}/dashboard")
    await browser.wait_for("document.querySelectorAll('svg[data-chart]').length === 9")
    assert await browser.evaluate("document.getElementById('key-overlay').hidden") is True
    points = await chart_points(browser)
    assert all(points[c] == 0 for c in CHARTS if c != "events"), points  # no traffic: nothing drawn
    assert "No traffic yet" in await browser.evaluate("document.getElementById('banner').textContent")
    assert await browser.evaluate("document.querySelector('[data-kpi=\"requests\"]').dataset.value") == "0"
    assert unexpected(browser.errors) == []
