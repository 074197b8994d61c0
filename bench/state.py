"""Shared-state cost: microseconds the request path adds for virtual keys and rate limits.

    .venv/bin/python bench/state.py [--quick] [--redis-url redis://127.0.0.1:6379/0]

Measures, in one process with asyncio (the gateway's event loop: plain asyncio), the calls
the gateway makes per request before planning:
- ``KeyRing.authenticate(headers)`` with (a) a key from the policy's ``teams.<t>.keys``
  (sha256 + constant-time compare, no I/O) and (b) a key created in the store (policy keys
  miss, then one ``get_key`` lookup);
- ``RateLimiter.check(principal, tokens)`` for a team with ``limits`` rpm+tpm and
  ``key_limits`` rpm+tpm: 4 sliding windows in one atomic ``Store.hit`` call;
- both in sequence for a store key, as such a request does them (the worst case: two
  store round trips; with a policy key the cost is auth + limit, one round trip);
with ``MemoryStore`` and with ``RedisStore`` on a real Redis, at concurrency 1 (sequential
awaits) and 32 (``asyncio.gather`` of 32 at a time; µs per request = wall / n).
Each cell is the median of 5 batches of N requests (N=2000, ``--quick`` 200), after a
warm-up; memory and Redis batches alternate (ABBA) so drift hits both alike.
Target: auth + rate limit with Redis ≤ 500 µs added at concurrency 1.
Not in the number: budget read/reserve/settle (up to three more round trips, teams with a
budget only) and the cache lookup (one more, when the cache is on).
The Redis keys this run creates carry a unique prefix and are deleted at the end (SCAN + DEL),
also on errors, Ctrl-C and SIGTERM (the run stops at the next batch boundary).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import secrets
import signal
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import redis
import redis.asyncio as aioredis
from multidict import CIMultiDict, CIMultiDictProxy

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from policies import Policy, load_policy_text  # noqa: E402
from router.state.keys import KeyRing, Principal  # noqa: E402
from router.state.limits import RateLimiter  # noqa: E402
from router.state.memory_store import MemoryStore  # noqa: E402
from router.state.redis_store import RedisStore  # noqa: E402
from router.state.store import Store  # noqa: E402

TARGET_US = 500.0
BATCHES = 5
CONCURRENCY = 32
TOKENS = 300  # a request's input estimate + max_tokens
DEADLINE_S = 30.0  # the whole run stops at the next batch after this; cleanup runs regardless
HUGE = 10**12  # limits nothing reaches: every request is allowed (and counted)
POLICY_KEY = "sk-bench-policy-" + "k" * 24

POLICY = f"""
version: 1
backends:
  gpu: {{kind: openai_compatible, base_url: 'http://127.0.0.1:9/v1', model: m}}
models:
  chat: {{targets: [gpu]}}
teams:
  search:
    keys: ["${{SEARCH_KEY}}"]
    limits: {{rpm: {HUGE}, tpm: {HUGE}}}
    key_limits: {{rpm: {HUGE}, tpm: {HUGE}}}
  batch: {{keys: []}}
"""

Op = Callable[[], Awaitable[object]]


def headers_for(key: str) -> CIMultiDictProxy[str]:
    """What aiohttp hands the middleware (``request.headers``)."""
    return CIMultiDictProxy(CIMultiDict({"Host": "127.0.0.1:8080", "Content-Type": "application/json",
                                         "Authorization": f"Bearer {key}", "User-Agent": "OpenAI/Python 1.0"}))


class Target:
    """One store with its KeyRing and RateLimiter, and the operations measured on it."""

    def __init__(self, name: str, store: Store, policy: Policy) -> None:
        self.name, self.store = name, store
        self.keys, self.limits = KeyRing(policy, store), RateLimiter(policy, store)
        self.policy_headers = headers_for(POLICY_KEY)
        self.store_headers: CIMultiDictProxy[str] | None = None
        self.who: Principal | None = None

    async def setup(self) -> None:
        key, _ = await self.keys.create("search", name="bench")
        self.store_headers = headers_for(key)
        self.who = await self.keys.authenticate(self.policy_headers)
        stored = await self.keys.authenticate(self.store_headers)
        if (self.who.team, stored.team) != ("search", "search") or stored.key_id == self.who.key_id:
            raise RuntimeError(f"{self.name}: unexpected principals {self.who} / {stored}")

    def ops(self) -> dict[str, Op]:
        keys, limits, who = self.keys, self.limits, self.who
        policy_h, store_h = self.policy_headers, self.store_headers
        assert who is not None and store_h is not None

        async def noop() -> None:
            return None

        async def limit(principal: Principal = who) -> None:
            decision = await limits.check(principal, TOKENS)
            if decision is None or not decision.allowed or decision.degraded:
                raise RuntimeError(f"{self.name}: rate limit check did not pass cleanly: {decision}")

        async def auth_policy() -> None:
            await keys.authenticate(policy_h)

        async def auth_store() -> None:
            await keys.authenticate(store_h)

        async def both_store() -> None:
            await limit(await keys.authenticate(store_h))

        return {"harness (empty coroutine)": noop,
                "auth: policy key": auth_policy,
                "auth: store key (lookup)": auth_store,
                "rate limit: 4 windows": limit,
                "auth store key + limit": both_store}


async def run_batch(op: Op, n: int, concurrency: int) -> float:
    """µs per request for n requests (wall / n)."""
    start = time.perf_counter_ns()
    if concurrency == 1:
        for _ in range(n):
            await op()
    else:
        done = 0
        while done < n:
            size = min(concurrency, n - done)
            await asyncio.gather(*(op() for _ in range(size)))
            done += size
    return (time.perf_counter_ns() - start) / n / 1000


class Stop(Exception):
    """The run must end early (deadline or signal); raised between batches."""


class Guard:
    """Deadline and signals, checked between batches. Cooperative on purpose: a task
    cancellation can be lost inside redis-py (``asyncio.wait_for`` on Python 3.11 swallows a
    cancel that lands as the inner send completes), so neither ``asyncio.timeout`` nor
    ``task.cancel`` would reliably stop a loop of Redis calls."""

    def __init__(self, deadline_s: float) -> None:
        self.deadline_s = deadline_s
        self.ends_at = time.monotonic() + deadline_s
        self.signal: int | None = None

    def check(self) -> None:
        if self.signal is not None:
            raise Stop(f"interrupted by {signal.Signals(self.signal).name}")
        if time.monotonic() > self.ends_at:
            raise Stop(f"the measurement took more than {self.deadline_s:.0f} s")


async def measure(ops: list[Op], n: int, warmup: int, concurrency: int, guard: Guard) -> list[list[float]]:
    """Per target, the µs of each of the BATCHES batches; targets alternate ABBA."""
    for op in ops:
        guard.check()
        await run_batch(op, warmup, concurrency)
    batches: list[list[float]] = [[] for _ in ops]
    for i in range(BATCHES):
        order = range(len(ops)) if i % 2 == 0 else reversed(range(len(ops)))
        for j in order:
            guard.check()
            batches[j].append(await run_batch(ops[j], n, concurrency))
    return batches


def cell(values: list[float]) -> str:
    return f"{statistics.median(values):8.1f} ({min(values):6.1f}-{max(values):6.1f})"


async def server_info(url: str) -> dict:
    client = aioredis.from_url(url, socket_timeout=2, socket_connect_timeout=2, decode_responses=True)
    try:
        return await client.info("server")
    finally:
        await client.aclose()


async def cleanup(url: str, prefix: str) -> tuple[int, int]:
    """Delete every key under ``prefix:``; returns (deleted, left over)."""
    client = aioredis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        deleted = 0
        batch: list[bytes] = []
        async for name in client.scan_iter(match=f"{prefix}:*", count=1000):
            batch.append(name)
            if len(batch) >= 500:
                deleted += await client.delete(*batch)
                batch = []
        if batch:
            deleted += await client.delete(*batch)
        left = [name async for name in client.scan_iter(match=f"{prefix}:*", count=1000)]
        return deleted, len(left)
    finally:
        await client.aclose()


async def bench(args: argparse.Namespace, prefix: str, guard: Guard) -> int:
    n = 200 if args.quick else 2000
    warmup = max(n // 10, CONCURRENCY * 2)
    policy = load_policy_text(POLICY, {"SEARCH_KEY": POLICY_KEY}, file="bench-state.yaml").policy
    memory = Target("memory", MemoryStore(), policy)
    redis_store = RedisStore(args.redis_url, prefix=prefix)
    rtarget = Target("redis", redis_store, policy)
    try:
        await redis_store.ping()
        info = await server_info(args.redis_url)
        await memory.setup()
        await rtarget.setup()
        cpus = os.cpu_count()
        print(f"bench/state.py  python {platform.python_version()}  redis-py {redis.__version__}  "
              f"redis-server {info.get('redis_version', '?')} at {args.redis_url}  "
              f"cpus {cpus}  load1 {os.getloadavg()[0]:.2f}")
        print(f"N={n} requests per batch, median of {BATCHES} batches (min-max), warm-up {warmup}; "
              f"prefix {prefix}; tokens/request {TOKENS}; limits huge (nothing denied)")
        print("µs per request (wall / n); memory and redis batches alternate ABBA\n")
        head = f"{'case':<28} {'conc':>4}  {'memory µs (min-max)':>25}  {'redis µs (min-max)':>25}  {'redis-mem':>9}"
        print(head)
        print("-" * len(head))
        mem_ops, red_ops = memory.ops(), rtarget.ops()
        results: dict[tuple[str, int], tuple[float, float]] = {}
        for conc in (1, CONCURRENCY):
            for name in mem_ops:
                m, r = await measure([mem_ops[name], red_ops[name]], n, warmup, conc, guard)
                mm, rm = statistics.median(m), statistics.median(r)
                results[(name, conc)] = (mm, rm)
                print(f"{name:<28} {conc:>4}  {cell(m):>25}  {cell(r):>25}  {rm - mm:+9.1f}", flush=True)
            print()
        worst = results[("auth store key + limit", 1)][1]
        policy_path = sum(results[(k, 1)][1] for k in ("auth: policy key", "rate limit: 4 windows"))
        parts = sum(results[(k, 1)][1] for k in ("auth: store key (lookup)", "rate limit: 4 windows"))
        print(f"redis, concurrency 1: store key + limit {worst:.1f} µs measured (2 round trips; sum of the "
              f"parts {parts:.1f} µs); policy key + limit {policy_path:.1f} µs (sum of the parts, 1 round trip)")
        print(f"redis, concurrency {CONCURRENCY}: store key + limit "
              f"{results[('auth store key + limit', CONCURRENCY)][1]:.1f} µs per request (wall / n)")
        print("not included: budget read/reserve/settle (teams with a budget) and the cache lookup (cache on)")
        verdict = "PASS" if worst <= TARGET_US else "FAIL"
        print(f"target: auth + rate limit with Redis <= {TARGET_US:.0f} µs added at concurrency 1 -> {verdict}"
              f"  (worst case, store key: {worst:.1f} µs)")
        return 0
    finally:
        await redis_store.close()


async def main_async(args: argparse.Namespace) -> int:
    prefix = f"switchyard-bench-{os.getpid()}-{secrets.token_hex(4)}"
    guard = Guard(DEADLINE_S)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, setattr, guard, "signal", signum)
    started = time.perf_counter()
    status = 1
    try:
        status = await bench(args, prefix, guard)
    except Stop as exc:
        print(f"\naborted: {exc}", file=sys.stderr, flush=True)
        status = 128 + guard.signal if guard.signal is not None else 1
    except Exception as exc:  # report, clean up, exit 1
        print(f"\naborted: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
    finally:
        try:
            deleted, left = await asyncio.wait_for(cleanup(args.redis_url, prefix), 10)
            note = "" if left == 0 else f"  WARNING: {left} left over"
            print(f"cleanup: deleted {deleted} redis keys under {prefix}:*{note}  "
                  f"(total {time.perf_counter() - started:.1f} s)", flush=True)
        except Exception as exc:
            print(f"cleanup failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            status = 1
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="N=200 per batch instead of 2000 (smoke run)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    return asyncio.run(main_async(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
