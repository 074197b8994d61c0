"""Shared-state cost: microseconds the request path adds for virtual keys, rate limits,
budgets and the response cache — Redis on loopback vs the in-memory store.

    .venv/bin/python bench/state.py [--quick] [--redis-url redis://127.0.0.1:6379/0] [--loop asyncio]

Measures, in one process on the gateway's event loop (uvloop; ``--loop asyncio``: the
standard library's), the calls the gateway makes per request (the same objects the handlers
use):
- ``KeyRing.authenticate(headers)`` with (a) a key from the policy's ``teams.<t>.keys``
  (sha256 + constant-time compare, no I/O) and (b) a key created in the store (a lookup the
  first time, then this process's key cache, kept fresh by Redis pub/sub);
- ``Gatekeeper.admit``: the team's and key's rpm+tpm windows, the cache lookup and the
  budget reservation (team day+month, key month) — one Lua script, one round trip;
- after the answer: ``Gatekeeper.finish``: the settlement and the cache entry, one script;
- the full path of a request that misses the cache (store key: auth + admit + settle/put)
  and of one that hits it (auth + admit: the hit reserves and settles nothing);
- for scale, a bare round trip: ``PING`` on a plain asyncio connection to the same Redis (no
  client library; the memory column is an empty coroutine) — the floor under every Redis
  call of this machine: a miss makes two, a hit one;
at concurrency 1 (sequential awaits) and 32 (``asyncio.gather`` of 32 at a time; µs per
request = wall / n). Each cell is the median of 5 batches of N requests (N=2000, ``--quick``
200), after a warm-up; memory and Redis batches alternate (ABBA) so drift hits both alike.
The summary also gives this process's CPU per request (``time.process_time``) for the full
path of a miss: on a busy machine wall time drifts far more than CPU.
Target (issue 16; issue 5 had 500 µs): the full path with Redis ≤ 300 µs added at
concurrency 1 over the in-memory store's.
Not in the number: ``budget_remaining`` (one more round trip, only when a rule reads it).
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
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

import redis
import redis.asyncio as aioredis
from multidict import CIMultiDict, CIMultiDictProxy

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from policies import Policy, load_policy_text  # noqa: E402
from router.runtime import KIND_TABLE  # noqa: E402
from router.state.admission import Admitted, Gatekeeper  # noqa: E402
from router.state.budgets import Budgets  # noqa: E402
from router.state.cache import CachedAnswer, ResponseCache  # noqa: E402
from router.state.keys import KeyRing, Principal, create_key  # noqa: E402
from router.state.limits import RateLimiter  # noqa: E402
from router.state.memory_store import MemoryStore  # noqa: E402
from router.state.redis_store import RedisStore  # noqa: E402
from router.state.store import Store  # noqa: E402

TARGET_US = 300.0
BATCHES = 5
CONCURRENCY = 32
TOKENS = 300  # a request's input estimate + max_tokens
DEADLINE_S = 60.0  # the whole run stops at the next batch after this; cleanup runs regardless
HUGE = 10**12  # limits nothing reaches: every request is allowed (and counted)
POLICY_KEY = "sk-bench-policy-" + "k" * 24

POLICY = f"""
version: 1
backends:
  gpu: {{kind: openai_compatible, base_url: 'http://127.0.0.1:9/v1', model: m}}
models:
  chat: {{targets: [gpu]}}
cache: {{mode: exact, ttl_s: 120, scope: team}}
teams:
  search:
    keys: ["${{SEARCH_KEY}}"]
    limits: {{rpm: {HUGE}, tpm: {HUGE}}}
    key_limits: {{rpm: {HUGE}, tpm: {HUGE}}}
    budget: {{daily_usd: {HUGE}, monthly_usd: {HUGE}}}
    key_budget: {{monthly_usd: {HUGE}}}
  batch: {{keys: []}}
"""
MAX_USD = 0.004  # the request's reservation
ACTUAL_USD = 0.0013  # what it cost
ALLOWED = frozenset({"gpu"})
ANSWER = CachedAnswer("gpu", b'{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,'
                             b'"message":{"role":"assistant","content":"Paris."},"finish_reason":"stop"}],'
                             b'"usage":{"prompt_tokens":21,"completion_tokens":3,"total_tokens":24}}')

Op = Callable[[], Awaitable[object]]
PING = b"*1\r\n$4\r\nPING\r\n"


def headers_for(key: str) -> CIMultiDictProxy[str]:
    """What aiohttp hands the middleware (``request.headers``)."""
    return CIMultiDictProxy(CIMultiDict({"Host": "127.0.0.1:8080", "Content-Type": "application/json",
                                         "Authorization": f"Bearer {key}", "User-Agent": "OpenAI/Python 1.0"}))


class Pings(asyncio.Protocol):
    """Pipelined PINGs: each reply line (``+PONG``, or an error line without AUTH: a round trip
    all the same) resolves the oldest waiting future."""

    def __init__(self) -> None:
        self.waiting: deque[asyncio.Future[None]] = deque()

    def expect(self) -> asyncio.Future[None]:
        future = asyncio.get_running_loop().create_future()
        self.waiting.append(future)
        return future

    def data_received(self, data: bytes) -> None:
        for _ in range(data.count(b"\r\n")):
            self.waiting.popleft().set_result(None)


class Target:
    """One store with the gateway's objects on it, and the operations measured."""

    def __init__(self, name: str, store: Store, policy: Policy) -> None:
        self.name, self.store = name, store
        self.keys, limits = KeyRing(policy, store), RateLimiter(policy, store)
        self.budgets, self.cache = Budgets(policy, store), ResponseCache(policy.cache, store)
        self.gate = Gatekeeper(store, limits, self.budgets, self.cache)
        self.policy_headers = headers_for(POLICY_KEY)
        self.store_headers: CIMultiDictProxy[str] | None = None
        self.who: Principal | None = None
        self.n = 0
        self.ping: Op | None = None  # a bare round trip to the Redis server (``open_ping``)
        self._ping_transport: asyncio.BaseTransport | None = None

    async def open_ping(self, url: str) -> None:
        """A plain asyncio connection to ``url``'s server (TCP only: ``redis://host:port``),
        for the bare round-trip row; without one the row measures the empty coroutine."""
        parts = urlsplit(url)
        if parts.scheme != "redis":
            return
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_connection(Pings, parts.hostname or "127.0.0.1", parts.port or 6379)
        self._ping_transport = transport

        def ping() -> asyncio.Future[None]:
            transport.write(PING)
            return protocol.expect()

        self.ping = ping

    def close_ping(self) -> None:
        if self._ping_transport is not None:
            self._ping_transport.close()

    async def setup(self) -> None:
        key, _ = await create_key(self.store, "search", name="bench")
        self.store_headers = headers_for(key)
        self.who = await self.keys.authenticate(self.policy_headers)
        stored = await self.keys.authenticate(self.store_headers)
        if (self.who.team, stored.team) != ("search", "search") or stored.key_id == self.who.key_id:
            raise RuntimeError(f"{self.name}: unexpected principals {self.who} / {stored}")
        await self.refresh()

    async def refresh(self) -> None:
        """(Re)store the entry the cache-hit case reads (the memory store keeps 10 000 entries:
        the miss cases' entries push it out)."""
        await self.cache.put(self.hit_key, ANSWER)

    @property
    def hit_key(self) -> str:
        return self.cache.key("chat", "chat", {"model": "chat", "messages": [{"role": "user", "content": "hi"}]},
                              "search")

    def miss_key(self) -> str:
        self.n += 1
        return self.cache.key("chat", "chat", {"model": "chat", "n": self.n,
                                               "messages": [{"role": "user", "content": "hi"}]}, "search")

    def ops(self) -> dict[str, Op]:
        keys, gate, budgets = self.keys, self.gate, self.budgets
        policy_h, store_h, hit_key = self.policy_headers, self.store_headers, self.hit_key
        assert store_h is not None

        async def noop() -> None:
            return None

        async def auth_policy() -> None:
            await keys.authenticate(policy_h)

        async def auth_store() -> None:
            await keys.authenticate(store_h)

        async def admit(who: Principal, key: str) -> Admitted:
            admitted = await gate.admit(who, TOKENS, MAX_USD, key, ALLOWED, coalesce=True)
            if admitted.hit is None and admitted.reservation is None:
                raise RuntimeError(f"{self.name}: nothing reserved: {admitted}")
            return admitted

        async def admit_miss() -> None:
            assert self.who is not None
            await budgets.release((await admit(self.who, self.miss_key())).reservation)

        async def settle_put() -> None:
            assert self.who is not None
            reservation = budgets.outcome(self.who, budgets.windows(self.who, MAX_USD), True, [])
            await gate.finish(reservation, ACTUAL_USD, self.miss_key(), ANSWER)

        async def full_miss() -> None:
            who = await keys.authenticate(store_h)
            key = self.miss_key()
            admitted = await admit(who, key)
            await gate.finish(admitted.reservation, ACTUAL_USD, key, ANSWER)

        async def full_hit() -> None:
            who = await keys.authenticate(store_h)
            if (await admit(who, hit_key)).hit is None:
                raise RuntimeError(f"{self.name}: the cached answer was not served")

        return {"harness (empty coroutine)": noop,
                "round trip (bare PING)": self.ping or noop,
                "auth: policy key": auth_policy,
                "auth: store key": auth_store,
                "admit (miss) + release": admit_miss,
                "settle + cache put": settle_put,
                "full path: miss": full_miss,
                "full path: cache hit": full_hit}


async def run_batch(op: Op, n: int, concurrency: int) -> tuple[float, float]:
    """(wall µs, this process's CPU µs) per request for n requests (/ n)."""
    start, cpu = time.perf_counter_ns(), time.process_time_ns()
    if concurrency == 1:
        for _ in range(n):
            await op()
    else:
        done = 0
        while done < n:
            size = min(concurrency, n - done)
            await asyncio.gather(*(op() for _ in range(size)))
            done += size
    return (time.perf_counter_ns() - start) / n / 1000, (time.process_time_ns() - cpu) / n / 1000


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


async def measure(ops: list[Op], n: int, warmup: int, concurrency: int,
                  guard: Guard) -> tuple[list[list[float]], list[list[float]]]:
    """Per target, the wall µs and the CPU µs of each of the BATCHES batches; targets alternate ABBA."""
    for op in ops:
        guard.check()
        await run_batch(op, warmup, concurrency)
    walls: list[list[float]] = [[] for _ in ops]
    cpus: list[list[float]] = [[] for _ in ops]
    for i in range(BATCHES):
        order = range(len(ops)) if i % 2 == 0 else reversed(range(len(ops)))
        for j in order:
            guard.check()
            wall, cpu = await run_batch(ops[j], n, concurrency)
            walls[j].append(wall)
            cpus[j].append(cpu)
    return walls, cpus


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
    policy = load_policy_text(POLICY, {"SEARCH_KEY": POLICY_KEY}, kinds=KIND_TABLE, file="bench-state.yaml").policy
    memory = Target("memory", MemoryStore(), policy)
    redis_store = RedisStore(args.redis_url, prefix=prefix)
    rtarget = Target("redis", redis_store, policy)
    try:
        await redis_store.ping()
        info = await server_info(args.redis_url)
        await memory.setup()
        await rtarget.setup()
        await rtarget.open_ping(args.redis_url)
        cpus = os.cpu_count()
        print(f"bench/state.py  python {platform.python_version()}  loop {args.loop}  redis-py {redis.__version__}  "
              f"redis-server {info.get('redis_version', '?')} at {args.redis_url}  "
              f"cpus {cpus}  load1 {os.getloadavg()[0]:.2f}")
        print(f"N={n} requests per batch, median of {BATCHES} batches (min-max), warm-up {warmup}; "
              f"prefix {prefix}; tokens/request {TOKENS}; limits and budgets huge (nothing denied)")
        print("µs per request (wall / n); memory and redis batches alternate ABBA\n")
        head = f"{'case':<30} {'conc':>4}  {'memory µs (min-max)':>25}  {'redis µs (min-max)':>25}  {'redis-mem':>9}"
        print(head)
        print("-" * len(head))
        mem_ops, red_ops = memory.ops(), rtarget.ops()
        results: dict[tuple[str, int], tuple[float, float]] = {}
        cpu: dict[tuple[str, int], tuple[float, float]] = {}
        for conc in (1, CONCURRENCY):
            for name in mem_ops:
                await memory.refresh()
                await rtarget.refresh()
                (m, r), (mc, rc) = await measure([mem_ops[name], red_ops[name]], n, warmup, conc, guard)
                mm, rm = statistics.median(m), statistics.median(r)
                results[(name, conc)] = (mm, rm)
                cpu[(name, conc)] = (statistics.median(mc), statistics.median(rc))
                print(f"{name:<30} {conc:>4}  {cell(m):>25}  {cell(r):>25}  {rm - mm:+9.1f}", flush=True)
            print()
        miss, hit = results[("full path: miss", 1)], results[("full path: cache hit", 1)]
        added = miss[1] - miss[0]
        print(f"concurrency 1, full path of a cache miss (store key: auth + admit [4 windows, cache read, "
              f"3 budget counters] + settle/put): redis {miss[1]:.1f} µs, memory {miss[0]:.1f} µs -> "
              f"{added:.1f} µs added by Redis; a cache hit: redis {hit[1]:.1f} µs, memory {hit[0]:.1f} µs")
        miss_cpu, trip = cpu[("full path: miss", 1)], results[("round trip (bare PING)", 1)][1]
        print(f"  this process's CPU per request (full path of a miss, concurrency 1): redis {miss_cpu[1]:.1f} µs, "
              f"memory {miss_cpu[0]:.1f} µs -> {miss_cpu[1] - miss_cpu[0]:.1f} µs added; a bare round trip to "
              f"this Redis takes {trip:.1f} µs (a miss makes two)")
        conc = results[("full path: miss", CONCURRENCY)]
        print(f"concurrency {CONCURRENCY}: full path of a miss {conc[1]:.1f} µs (redis) / {conc[0]:.1f} µs "
              f"(memory) per request (wall / n)")
        print("not included: budget_remaining (one more round trip, only when a rule reads it)")
        verdict = "PASS" if added <= TARGET_US else "FAIL"
        print(f"target: auth + rate limit + budget reserve/settle + cache lookup with Redis <= {TARGET_US:.0f} µs "
              f"added over memory at concurrency 1 -> {verdict}  ({added:.1f} µs)")
        return 0
    finally:
        rtarget.close_ping()
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
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop",
                        help="event loop to measure on (default: uvloop, the gateway's)")
    args = parser.parse_args(argv)
    if args.loop == "uvloop":
        import uvloop

        return uvloop.run(main_async(args))
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
