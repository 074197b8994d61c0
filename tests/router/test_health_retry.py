"""Circuit breaker state machine and retry decisions: pure unit tests with a fake clock."""

from __future__ import annotations

import asyncio

import pytest

from backends.errors import (
    ContentPolicyViolation,
    UpstreamAuthError,
    UpstreamConnectError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamServerError,
    UpstreamTimeout,
)
from policies import CircuitSpec, RetrySpec
from router.health import Circuit, CircuitState
from router.retry import retry_same_backend, should_retry


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def circuit(failures=3, window_s=10.0, cooldown_s=5.0) -> tuple[Circuit, Clock]:
    clock = Clock()
    return Circuit(CircuitSpec(failures=failures, window_s=window_s, cooldown_s=cooldown_s), clock), clock


def test_opens_after_failures_within_the_window():
    c, clock = circuit()
    for _ in range(2):
        c.failure(UpstreamServerError("x"))
    assert c.allow() and c.state is CircuitState.CLOSED
    c.failure(UpstreamServerError("x"))
    assert c.state is CircuitState.OPEN and not c.allow() and c.skipped == 1


def test_failures_outside_the_window_do_not_add_up():
    c, clock = circuit()
    c.failure(UpstreamTimeout("x"))
    c.failure(UpstreamTimeout("x"))
    clock.now += 11
    c.failure(UpstreamTimeout("x"))
    assert c.state is CircuitState.CLOSED


def test_half_open_lets_exactly_one_probe_through():
    c, clock = circuit(failures=1)
    c.failure(UpstreamConnectError("x"))
    clock.now += 4.9
    assert not c.allow()
    clock.now += 0.2
    assert c.allow() and c.state is CircuitState.HALF_OPEN
    assert not c.allow()  # the probe is in flight
    c.success()
    assert c.state is CircuitState.CLOSED and c.allow()


def test_failed_probe_reopens_for_a_full_cooldown():
    c, clock = circuit(failures=1)
    c.failure(UpstreamConnectError("x"))
    clock.now += 5
    assert c.allow()
    c.failure(UpstreamConnectError("x"))
    assert c.state is CircuitState.OPEN and c.opened == 2
    clock.now += 4
    assert not c.allow()


def test_released_probe_frees_the_slot():
    c, clock = circuit(failures=1)
    c.failure(UpstreamConnectError("x"))
    clock.now += 5
    assert c.allow()
    c.release()
    assert c.allow()


@pytest.mark.parametrize("exc", [UpstreamRateLimited("x"), UpstreamRejected("x"), ContentPolicyViolation("x")])
def test_rate_limits_and_rejections_do_not_open_the_circuit(exc):
    c, _ = circuit(failures=1)
    c.failure(exc)
    assert c.state is CircuitState.CLOSED and c.errors[exc.error_type] == 1


def test_a_rejected_probe_proves_the_backend_alive():
    c, clock = circuit(failures=1)
    c.failure(UpstreamServerError("x"))
    clock.now += 5
    assert c.allow()
    c.failure(UpstreamRejected("bad request"))
    assert c.state is CircuitState.CLOSED


SPEC = RetrySpec(attempts=3, backoff_base_s=0.0, backoff_max_s=0.0, max_retry_after_s=2)


@pytest.mark.parametrize(("exc", "retry"), [
    (UpstreamServerError("x"), True),
    (UpstreamConnectError("x"), True),
    (UpstreamRateLimited("x"), True),
    (UpstreamRateLimited("x", retry_after=1.5), True),
    (UpstreamRateLimited("x", retry_after=30), False),  # over the cap: fail over instead
    (UpstreamTimeout("x"), False),  # a silent backend is not retried on itself
    (UpstreamAuthError("x"), False),
    (UpstreamRejected("x"), False),
    (ValueError("x"), False),
])
def test_should_retry(exc, retry):
    assert should_retry(exc, SPEC) is retry


async def test_retry_stops_at_attempts_and_reraises_the_last_error():
    c, _ = circuit(failures=100)
    calls = 0

    async def call() -> str:
        nonlocal calls
        calls += 1
        raise UpstreamServerError(f"try {calls}")

    with pytest.raises(UpstreamServerError, match="try 3"):
        await retry_same_backend(call, SPEC, c)
    assert calls == 3


async def test_retry_stops_when_the_circuit_opens():
    c, _ = circuit(failures=2)
    calls = 0

    async def call() -> str:
        nonlocal calls
        calls += 1
        exc = UpstreamServerError("down")
        c.failure(exc)
        raise exc

    with pytest.raises(UpstreamServerError):
        await retry_same_backend(call, RetrySpec(attempts=5, backoff_base_s=0, backoff_max_s=0), c)
    assert calls == 2


async def test_retry_waits_retry_after():
    c, _ = circuit()
    loop = asyncio.get_running_loop()
    times: list[float] = []

    async def call() -> str:
        times.append(loop.time())
        if len(times) == 1:
            raise UpstreamRateLimited("slow down", retry_after=0.2)
        return "ok"

    assert await retry_same_backend(call, SPEC, c) == "ok"
    assert times[1] - times[0] >= 0.19
