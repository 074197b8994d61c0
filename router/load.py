"""``LoadMonitor``: what the gateway knows about each backend's load right now.

It owns the background scrape loops (one task per backend that exports metrics, started
with jitter so scrapes do not align), the gateway's own in-flight count and time-to-first-
token EWMA per backend, and turns all of it into ``policies.facts.BackendLoad`` for the
planner (``snapshot``) and a JSON-ready view for the admin API (``describe``).

Scraping itself is the backend's job (``async load() -> LoadSample | None``, e.g.
``backends.openai_compat.OpenAICompatBackend.load``); a scrape loop never dies of an
exception. Time comes from the injected ``clock`` only. May import ``backends`` and
``policies``; must not import the rest of ``router`` (the app wires it in).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from backends.errors import BackendError
from backends.metrics import LoadSample
from policies.facts import BackendLoad

__all__ = ["TTFT_ALPHA", "LoadMonitor", "LoadSource"]

log = logging.getLogger(__name__)

#: Weight of the newest time-to-first-token in its moving average.
TTFT_ALPHA = 0.2
#: Weight of the newest observation in the speed and request-size averages of the prediction.
SPEED_ALPHA = 0.1


def _ewma(previous: float | None, value: float, alpha: float) -> float:
    return value if previous is None else alpha * value + (1 - alpha) * previous


class LoadSource(Protocol):
    async def load(self) -> LoadSample | None:
        """One scrape: a sample, ``None`` when there are no metrics, or an exception."""
        ...


@dataclass(slots=True)
class _State:
    sample: LoadSample | None = None
    sampled_at: float | None = None
    has_metrics: bool | None = None  # None: not known yet
    scrape_ok: bool = True
    failures: int = 0  # all failed scrapes
    consecutive_failures: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    logged_error: str | None = None  # the message logged last, until a scrape succeeds
    in_flight: int = 0
    in_flight_at_sample: int = 0  # ``in_flight`` when the last sample was taken
    ttft_ewma_s: float | None = None
    prefill_tps: float | None = None
    decode_tps: float | None = None
    mean_input_tokens: float | None = None
    mean_output_tokens: float | None = None


class LoadMonitor:
    """Scrapes ``backends`` every ``interval_s``; a sample older than ``stale_after_s`` is not
    used. A scrape that takes longer than ``stale_after_s`` is abandoned as failed."""

    def __init__(self, backends: Mapping[str, LoadSource], *, interval_s: float,
                 stale_after_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if interval_s <= 0 or stale_after_s <= 0:
            raise ValueError("interval_s and stale_after_s must be positive")
        self._backends = dict(backends)
        self._interval = interval_s
        self._stale_after = stale_after_s
        self._clock = clock
        self._states: dict[str, _State] = {name: _State() for name in self._backends}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._running = False

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        """Scrape everything once, then keep scraping each backend that has metrics (or whose
        first scrape failed, so it is not yet known not to) in its own task."""
        if self._running:
            return
        self._running = True
        await self.scrape_once()
        if not self._running:  # stop() was called while the first scrape ran
            return
        for name in self._backends:
            if self._states[name].has_metrics is False or name in self._tasks:
                continue
            first_delay = self._interval * (0.5 + random.random())  # jitter: scrapes do not align
            self._tasks[name] = asyncio.create_task(self._loop(name, first_delay),
                                                    name=f"load-scrape:{name}")

    async def stop(self) -> None:
        """Cancel the scrape loops and wait for them; safe to call any number of times."""
        self._running = False
        tasks, self._tasks = list(self._tasks.values()), {}
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def scrape_once(self) -> None:
        """Scrape every backend now, concurrently; failures are recorded, never raised."""
        await asyncio.gather(*(self._scrape(name) for name in self._backends))

    async def _loop(self, name: str, delay: float) -> None:
        last: str | None = None
        while True:
            await asyncio.sleep(delay)
            delay = self._interval
            try:
                await self._scrape(name)
                last = None
            except Exception as exc:  # a bookkeeping bug: the loop must still go on
                message = _describe_error(exc)
                if message != last:
                    log.warning("load scrape loop for backend %s: %s", name, message, exc_info=True)
                    last = message

    async def _scrape(self, name: str) -> None:
        state = self._states[name]
        deadline = asyncio.timeout(self._stale_after)
        try:
            async with deadline:
                sample = await self._backends[name].load()
        except TimeoutError as exc:
            self._failed(name, state, f"no metrics within {self._stale_after:g} s" if deadline.expired()
                         else _describe_error(exc))
        except Exception as exc:
            self._failed(name, state, _describe_error(exc))
        else:
            self._succeeded(name, state, sample)

    def _succeeded(self, name: str, state: _State, sample: LoadSample | None) -> None:
        if state.logged_error is not None:
            log.info("load scrape of backend %s recovered", name)
        state.has_metrics = sample is not None
        state.sample = sample
        state.sampled_at = self._clock() if sample is not None else None
        state.in_flight_at_sample = state.in_flight
        state.scrape_ok = True
        state.consecutive_failures = 0
        state.logged_error = None

    def _failed(self, name: str, state: _State, message: str) -> None:
        state.scrape_ok = False
        state.failures += 1
        state.consecutive_failures += 1
        state.last_error = message
        state.last_error_at = self._clock()
        if message != state.logged_error:  # once per distinct error in a row
            log.warning("load scrape of backend %s failed: %s", name, message)
            state.logged_error = message

    # -- gateway-side signals ------------------------------------------------------------
    def _state(self, name: str) -> _State:
        state = self._states.get(name)
        if state is None:
            state = self._states[name] = _State(has_metrics=False)
        return state

    def enter(self, name: str) -> None:
        """A request to ``name`` started (count it until ``exit``)."""
        self._state(name).in_flight += 1

    def exit(self, name: str) -> None:
        state = self._state(name)
        state.in_flight = max(0, state.in_flight - 1)

    def record_ttft(self, name: str, seconds: float) -> None:
        """Fold one gateway-measured time to first token into ``name``'s EWMA."""
        if not math.isfinite(seconds) or seconds < 0:
            return
        state = self._state(name)
        state.ttft_ewma_s = _ewma(state.ttft_ewma_s, seconds, TTFT_ALPHA)

    def observe(self, name: str, input_tokens: int | None, output_tokens: int | None, ttft_s: float | None,
                duration_s: float, *, waited: bool) -> None:
        """One answered request, for the latency prediction (``policies.latency``): the sizes
        of what ``name`` serves; its prefill speed from a streamed request's time to first
        token when it was not predicted to wait for a slot; its decode speed from the rest of
        the stream."""
        state = self._state(name)
        if input_tokens:
            state.mean_input_tokens = _ewma(state.mean_input_tokens, input_tokens, SPEED_ALPHA)
        if output_tokens:
            state.mean_output_tokens = _ewma(state.mean_output_tokens, output_tokens, SPEED_ALPHA)
        if ttft_s is None or not (0 < ttft_s < duration_s) or not math.isfinite(duration_s):
            return
        if input_tokens and not waited:
            state.prefill_tps = _ewma(state.prefill_tps, input_tokens / ttft_s, SPEED_ALPHA)
        if output_tokens and output_tokens > 1:
            state.decode_tps = _ewma(state.decode_tps, (output_tokens - 1) / (duration_s - ttft_s), SPEED_ALPHA)

    # -- views ---------------------------------------------------------------------------
    def _fresh(self, state: _State, now: float) -> LoadSample | None:
        if state.sample is None or state.sampled_at is None:
            return None
        return state.sample if now - state.sampled_at < self._stale_after else None

    def snapshot(self) -> dict[str, BackendLoad]:
        """Every known backend's load for the planner; queue/running/kv are ``None`` without
        a sample younger than ``stale_after_s``."""
        now = self._clock()
        out: dict[str, BackendLoad] = {}
        for name, state in self._states.items():
            sample = self._fresh(state, now)
            busy = None
            if sample is not None and (sample.queue is not None or sample.running is not None):
                total = sample.total_busy if sample.total_busy is not None else \
                    (sample.queue or 0.0) + (sample.running or 0.0)
                busy = max(0.0, total + state.in_flight - state.in_flight_at_sample)  # what we sent or saw end since
            out[name] = BackendLoad(
                queue=sample.queue if sample else None,
                running=sample.running if sample else None,
                kv_cache=sample.kv_cache if sample else None,
                in_flight=state.in_flight,
                scrape_ok=state.scrape_ok,
                ttft_ewma_s=state.ttft_ewma_s,
                busy=busy,
                prefill_tps=state.prefill_tps,
                decode_tps=state.decode_tps,
                mean_input_tokens=state.mean_input_tokens,
                mean_output_tokens=state.mean_output_tokens,
                replicas=sample.servers if sample else 1,
            )
        return out

    def describe(self) -> dict[str, dict[str, object]]:
        """JSON-ready per-backend view for ``/admin/backends`` (last sample even when stale)."""
        now = self._clock()
        out: dict[str, dict[str, object]] = {}
        for name, state in self._states.items():
            sample = state.sample
            age = None if state.sampled_at is None else round(now - state.sampled_at, 3)
            out[name] = {
                "metrics": state.has_metrics,
                "queue": sample.queue if sample else None,
                "running": sample.running if sample else None,
                "kv_cache": sample.kv_cache if sample else None,
                "age_s": age,
                "stale": sample is not None and self._fresh(state, now) is None,
                "scrape_ok": state.scrape_ok,
                "failures": state.failures,
                "consecutive_failures": state.consecutive_failures,
                "last_error": state.last_error,
                "last_error_age_s": (None if state.last_error_at is None
                                     else round(now - state.last_error_at, 3)),
                "in_flight": state.in_flight,
                "ttft_ewma_s": state.ttft_ewma_s,
                "scraping": name in self._tasks and not self._tasks[name].done(),
            }
        return out


def _describe_error(exc: BaseException) -> str:
    text = exc.detail if isinstance(exc, BackendError) else str(exc)  # for the log and the admin: no credentials
    if isinstance(exc, BackendError) and text:
        return text  # already names the backend and what failed
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

