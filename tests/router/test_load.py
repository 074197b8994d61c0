"""``router.load.LoadMonitor``: freshness and staleness of samples (injected clock), the
gateway's in-flight count and TTFT EWMA, scrape failures and recovery, loops that survive
exceptions, start/stop hygiene, and one end-to-end scrape of the fake llama.cpp upstream.

The fake backends are plain objects with an async ``load()``; tests wait on the number of
scrapes a fake has seen (an event, not a sleep), with an ``asyncio.timeout`` as the bound.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import AsyncIterator

import aiohttp
import pytest

from backends.base import BackendConfig, TimeLimits
from backends.errors import UpstreamConnectError
from backends.metrics import LoadSample
from backends.openai_compat import OpenAICompatBackend
from policies.facts import BackendLoad
from router.load import LoadMonitor
from tests.fakes.openai_upstream import FakeOpenAI


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Scripted:
    """``load()`` gives the scripted outcomes in order (the last repeats); an exception
    instance is raised."""

    def __init__(self, *outcomes: LoadSample | BaseException | None) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    async def load(self) -> LoadSample | None:
        self.calls += 1
        for count, future in self._waiters:
            if self.calls >= count and not future.done():
                future.set_result(None)
        outcome = self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def wait_calls(self, count: int) -> None:
        if self.calls < count:
            future = asyncio.get_running_loop().create_future()
            self._waiters.append((count, future))
            await future


class Hanging:
    async def load(self) -> LoadSample | None:
        await asyncio.Event().wait()
        return None


SAMPLE = LoadSample(queue=3.0, running=2.0, kv_cache=0.5)


def monitor(backends: dict, *, interval_s: float = 60.0, stale_after_s: float = 10.0,
            clock: Clock | None = None) -> tuple[LoadMonitor, Clock]:
    clock = clock or Clock()
    return LoadMonitor(backends, interval_s=interval_s, stale_after_s=stale_after_s, clock=clock), clock


def scrape_tasks() -> set[asyncio.Task]:
    return {t for t in asyncio.all_tasks() if t.get_name().startswith("load-scrape:")}


# -- freshness -------------------------------------------------------------------------------

async def test_fresh_sample_is_used_until_it_is_stale() -> None:
    m, clock = monitor({"gpu": Scripted(SAMPLE)}, stale_after_s=10.0)
    assert m.snapshot() == {"gpu": BackendLoad()}  # nothing scraped yet
    await m.scrape_once()
    assert m.snapshot()["gpu"] == BackendLoad(queue=3.0, running=2.0, kv_cache=0.5, scrape_ok=True, busy=5.0)
    clock.now += 9.99
    assert m.snapshot()["gpu"].queue == 3.0
    clock.now += 0.01  # exactly stale_after_s old: no longer younger than it
    load = m.snapshot()["gpu"]
    assert (load.queue, load.running, load.kv_cache, load.scrape_ok) == (None, None, None, True)
    described = m.describe()["gpu"]
    assert described["queue"] == 3.0 and described["stale"] is True and described["age_s"] == 10.0


async def test_a_new_sample_replaces_the_old_one() -> None:
    backend = Scripted(SAMPLE, LoadSample(queue=0.0, running=1.0, kv_cache=None))
    m, clock = monitor({"gpu": backend})
    await m.scrape_once()
    clock.now += 5
    await m.scrape_once()
    assert m.snapshot()["gpu"] == BackendLoad(queue=0.0, running=1.0, kv_cache=None, busy=1.0)
    assert m.describe()["gpu"]["age_s"] == 0.0


async def test_backend_without_metrics() -> None:
    m, _ = monitor({"compat": Scripted(None)})
    await m.scrape_once()
    assert m.snapshot()["compat"] == BackendLoad(scrape_ok=True)
    assert m.describe()["compat"]["metrics"] is False


# -- gateway-side signals --------------------------------------------------------------------

async def test_in_flight_counting_never_goes_below_zero() -> None:
    m, _ = monitor({"gpu": Scripted(SAMPLE)})
    m.enter("gpu")
    m.enter("gpu")
    assert m.snapshot()["gpu"].in_flight == 2
    m.exit("gpu")
    m.exit("gpu")
    m.exit("gpu")
    assert m.snapshot()["gpu"].in_flight == 0
    m.enter("gpu")
    assert m.snapshot()["gpu"].in_flight == 1
    m.enter("closed-provider")  # a backend without load source is still counted
    m.exit("never-entered")
    snap = m.snapshot()
    assert snap["closed-provider"] == BackendLoad(in_flight=1)
    assert snap["never-entered"].in_flight == 0


async def test_ttft_ewma() -> None:
    m, _ = monitor({"gpu": Scripted(SAMPLE)})
    assert m.snapshot()["gpu"].ttft_ewma_s is None
    m.record_ttft("gpu", 1.0)
    assert m.snapshot()["gpu"].ttft_ewma_s == 1.0  # the first measurement is the average
    m.record_ttft("gpu", 2.0)
    assert m.snapshot()["gpu"].ttft_ewma_s == pytest.approx(1.2)  # 0.2 * 2 + 0.8 * 1
    m.record_ttft("gpu", 0.0)
    assert m.snapshot()["gpu"].ttft_ewma_s == pytest.approx(0.96)
    for junk in (math.nan, math.inf, -1.0):
        m.record_ttft("gpu", junk)
    assert m.snapshot()["gpu"].ttft_ewma_s == pytest.approx(0.96)
    for _ in range(60):
        m.record_ttft("gpu", 5.0)
    assert m.snapshot()["gpu"].ttft_ewma_s == pytest.approx(5.0, abs=1e-4)


async def test_busy_is_the_last_sample_corrected_by_what_the_gateway_sent_since() -> None:
    m, clock = monitor({"gpu": Scripted(SAMPLE)}, stale_after_s=10.0)
    m.enter("gpu")  # in flight before the scrape: the sample counts it already
    await m.scrape_once()
    assert m.snapshot()["gpu"].busy == 5.0
    m.enter("gpu")
    m.enter("gpu")  # sent since: the server has them, its last sample does not
    assert m.snapshot()["gpu"].busy == 7.0
    for _ in range(3):
        m.exit("gpu")  # ended since
    assert m.snapshot()["gpu"].busy == 4.0
    clock.now += 10  # stale: only the gateway's own count is known
    assert m.snapshot()["gpu"].busy is None and m.snapshot()["gpu"].in_flight == 0


async def test_observed_speeds_and_request_sizes() -> None:
    m, _ = monitor({"gpu": Scripted(SAMPLE)})
    m.observe("gpu", 1000, 51, ttft_s=0.5, duration_s=2.5, waited=False)
    load = m.snapshot()["gpu"]
    assert (load.prefill_tps, load.decode_tps) == (2000.0, 25.0)  # 1,000 / 0.5 s; 50 / 2 s
    assert (load.mean_input_tokens, load.mean_output_tokens) == (1000, 51)
    m.observe("gpu", 1000, 51, ttft_s=5.0, duration_s=7.0, waited=True)  # it queued: its TTFT is no prefill speed
    assert m.snapshot()["gpu"].prefill_tps == 2000.0 and m.snapshot()["gpu"].decode_tps == 25.0
    m.observe("gpu", 3000, 11, ttft_s=None, duration_s=1.0, waited=False)  # not streamed: sizes only
    load = m.snapshot()["gpu"]
    assert load.mean_input_tokens == pytest.approx(1200) and load.prefill_tps == 2000.0
    for junk in ((1000, 10, 3.0, 2.0), (1000, 10, 0.0, 2.0), (1000, 10, 1.0, math.nan)):
        m.observe("gpu", junk[0], junk[1], ttft_s=junk[2], duration_s=junk[3], waited=False)
    assert m.snapshot()["gpu"].prefill_tps == 2000.0


# -- failures --------------------------------------------------------------------------------

async def test_scrape_failure_then_recovery(caplog: pytest.LogCaptureFixture) -> None:
    down = UpstreamConnectError("gpu: cannot connect (ClientConnectorError: refused)", backend="gpu")
    backend = Scripted(SAMPLE, down, down, RuntimeError("boom"), down, SAMPLE)
    m, clock = monitor({"gpu": backend}, stale_after_s=10.0)
    caplog.set_level(logging.INFO, logger="router.load")
    await m.scrape_once()
    clock.now += 1
    await m.scrape_once()
    load = m.snapshot()["gpu"]
    assert load.scrape_ok is False
    assert load.queue == 3.0  # the last sample is still young enough to use
    info = m.describe()["gpu"]
    assert info["failures"] == 1 and info["consecutive_failures"] == 1
    assert info["last_error"] == str(down) and info["scrape_ok"] is False
    for _ in range(3):
        await m.scrape_once()
    info = m.describe()["gpu"]
    assert info["failures"] == 4 and info["last_error"] == str(down)
    assert m.describe()["gpu"]["consecutive_failures"] == 4
    clock.now += 2
    await m.scrape_once()
    load = m.snapshot()["gpu"]
    assert load.scrape_ok is True and load.queue == 3.0
    info = m.describe()["gpu"]
    assert info["failures"] == 4 and info["consecutive_failures"] == 0
    assert info["last_error"] == str(down) and info["last_error_age_s"] == 2.0  # kept for the admin

    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    # down, down (not repeated), boom, down again (a different message in between), then recovery
    assert [("boom" in r.getMessage(), "gpu" in r.getMessage()) for r in warnings] == [
        (False, True), (True, True), (False, True)]
    assert "RuntimeError: boom" in warnings[1].getMessage()
    assert any(r.levelno == logging.INFO and "recovered" in r.getMessage() for r in caplog.records)


async def test_a_hanging_scrape_is_abandoned_after_stale_after_s() -> None:
    m, _ = monitor({"stuck": Hanging(), "gpu": Scripted(SAMPLE)}, stale_after_s=0.05)
    async with asyncio.timeout(2):
        await m.scrape_once()
    assert m.snapshot()["stuck"].scrape_ok is False
    assert m.describe()["stuck"]["last_error"] == "no metrics within 0.05 s"
    assert m.snapshot()["gpu"].queue == 3.0  # the other backend was not held up


async def test_the_loop_survives_exceptions() -> None:
    backend = Scripted(RuntimeError("one"), ValueError("two"), KeyError("three"),
                       UpstreamConnectError("x", backend="gpu"), SAMPLE)
    m, _ = monitor({"gpu": backend}, interval_s=0.001, stale_after_s=10.0)
    await m.start()
    try:
        async with asyncio.timeout(5):
            await backend.wait_calls(7)
        (task,) = scrape_tasks()
        assert not task.done()
        assert m.snapshot()["gpu"] == BackendLoad(queue=3.0, running=2.0, kv_cache=0.5, scrape_ok=True, busy=5.0)
        assert m.describe()["gpu"]["failures"] == 4
    finally:
        await m.stop()


# -- lifecycle -------------------------------------------------------------------------------

async def test_start_and_stop_leave_no_tasks_behind() -> None:
    before = asyncio.all_tasks()
    with_metrics, failing, without = Scripted(SAMPLE), Scripted(RuntimeError("down")), Scripted(None)
    m, _ = monitor({"a": with_metrics, "b": failing, "c": without}, interval_s=0.001)
    await m.start()
    await m.start()  # idempotent: no second set of loops
    # the first scrape happened in start(); "c" has no metrics, "b" is not known not to
    assert with_metrics.calls >= 1 and without.calls == 1
    assert {t.get_name() for t in scrape_tasks()} == {"load-scrape:a", "load-scrape:b"}
    async with asyncio.timeout(5):
        await with_metrics.wait_calls(3)
        await failing.wait_calls(3)
    assert m.describe()["a"]["scraping"] is True and m.describe()["c"]["scraping"] is False
    await m.stop()
    assert asyncio.all_tasks() - before == set()
    calls = with_metrics.calls
    await m.stop()  # idempotent
    await asyncio.sleep(0)
    assert with_metrics.calls == calls and without.calls == 1
    assert m.describe()["a"]["scraping"] is False


async def test_stop_without_start_and_restart() -> None:
    backend = Scripted(SAMPLE)
    m, _ = monitor({"a": backend}, interval_s=60.0)
    await m.stop()
    await m.start()
    assert len(scrape_tasks()) == 1
    await m.stop()
    await m.start()
    assert len(scrape_tasks()) == 1 and backend.calls == 2
    await m.stop()
    assert scrape_tasks() == set()


async def test_stop_during_the_first_scrape_starts_no_loop() -> None:
    m, _ = monitor({"stuck": Hanging()}, interval_s=0.001, stale_after_s=0.05)
    starting = asyncio.create_task(m.start())
    await asyncio.sleep(0)  # start() is now waiting on the hanging first scrape
    await m.stop()
    async with asyncio.timeout(2):
        await starting
    assert scrape_tasks() == set()


async def test_describe_is_json_ready() -> None:
    m, clock = monitor({"gpu": Scripted(SAMPLE), "compat": Scripted(None)})
    await m.scrape_once()
    m.enter("gpu")
    m.record_ttft("gpu", 0.25)
    clock.now += 1.5
    view = json.loads(json.dumps(m.describe()))
    assert view["gpu"] == {
        "metrics": True, "queue": 3.0, "running": 2.0, "kv_cache": 0.5, "age_s": 1.5, "stale": False,
        "scrape_ok": True, "failures": 0, "consecutive_failures": 0, "last_error": None,
        "last_error_age_s": None, "in_flight": 1, "ttft_ewma_s": 0.25, "scraping": False,
    }
    assert view["compat"]["metrics"] is False and view["compat"]["age_s"] is None


# -- against the fake llama.cpp server ---------------------------------------------------------

@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def test_scrape_once_follows_the_fake_llamacpp(fake_openai: FakeOpenAI,
                                                    session: aiohttp.ClientSession) -> None:
    config = BackendConfig(name="local", kind="llamacpp", model="served", base_url=fake_openai.base_url,
                           limits=TimeLimits(connect_s=2.0))
    compat = OpenAICompatBackend(BackendConfig(name="compat", kind="openai_compatible", model="served",
                                               base_url=fake_openai.base_url), session)
    m, _ = monitor({"local": OpenAICompatBackend(config, session), "compat": compat})
    await m.scrape_once()
    assert m.snapshot()["local"] == BackendLoad(queue=0.0, running=0.0, kv_cache=None, busy=0.0)
    fake_openai.deferred = 4
    await m.scrape_once()
    m.enter("local")
    local = m.snapshot()["local"]
    assert local == BackendLoad(queue=4.0, running=0.0, kv_cache=None, in_flight=1, busy=5.0)
    assert local.pressure == 5.0
    fake_openai.deferred = 0
    await m.scrape_once()
    assert m.snapshot()["local"].queue == 0.0
    assert m.snapshot()["compat"] == BackendLoad()
    assert [p.path for p in fake_openai.probes] == ["/metrics"] * 3  # compat is never scraped
