"""Overload: a gateway worker offered 3x its capacity sheds the excess at once instead of
queueing it (``settings.max_in_flight``, issue 11 item 8).

    .venv/bin/python bench/overload.py [--quick] [--json PATH]

The upstream is ``bench/mock_upstream.py`` as a small GPU server: 16 parallel slots,
100 ms per answer (``--slots 16 --delay-ms 100``), so past 16 requests at once requests
queue at the upstream, as they do at a real model server. One gateway worker
(``switchyard serve --workers 1``) routes to it with ``max_in_flight: 16``.

1. **capacity**: 16 closed-loop clients for a few seconds; admitted requests per second is
   the worker's capacity C (about 160 req/s: 16 slots / 0.1 s).
2. **unloaded**: open-loop Poisson arrivals at 0.5 C; latency p50/p99 of the answers.
3. **3x, bounded**: open-loop Poisson arrivals at 3 C: admitted (200) latency p50/p99, the
   number shed (503 ``overloaded``, with ``Retry-After``) and how fast a refusal comes,
   and timeouts (no answer within ``TIMEOUT_S``).
4. **3x, unbounded** (for contrast): the same offered load through a second gateway with
   ``max_in_flight`` out of reach: every request is admitted and queues at the upstream.

Verdict: ``loaded admitted p99 <= 2 x unloaded p99 and no timeouts -> PASS``. Arrivals are
seeded (the same schedule every run); every started process is stopped by PID on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from overhead import (  # bench/ is sys.path[0] when run as a script
    BENCH_DIR,
    HOST,
    Proc,
    bench_main,
    free_port,
    gateway_argv,
    percentile,
    processes,
    spawn,
    wait_ready,
)

SLOTS = 16
DELAY_MS = 100
TIMEOUT_S = 10.0
BODY = orjson.dumps({"model": "bench", "messages": [{"role": "user", "content": "Say hello in five words."}],
                     "max_tokens": 16})


@dataclass(frozen=True)
class Config:
    capacity_s: float
    unloaded_s: float
    loaded_s: float
    unbounded_s: float


FULL = Config(capacity_s=5, unloaded_s=20, loaded_s=30, unbounded_s=10)
QUICK = Config(capacity_s=2, unloaded_s=5, loaded_s=5, unbounded_s=3)


@dataclass
class Phase:
    name: str
    offered_per_s: float = 0.0
    sent: int = 0
    admitted: list[float] = field(default_factory=list)  # latencies of 200s, s
    shed: list[float] = field(default_factory=list)  # latencies of 503 overloaded, s
    retry_after_ok: bool = True
    timeouts: int = 0
    other: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        ok, shed = sorted(self.admitted), sorted(self.shed)
        ms = (lambda v, q: round(percentile(v, q) * 1000, 1) if v else None)  # noqa: E731
        return {"phase": self.name, "offered_req_per_s": round(self.offered_per_s, 1), "sent": self.sent,
                "admitted": len(ok), "admitted_p50_ms": ms(ok, 50), "admitted_p99_ms": ms(ok, 99),
                "shed": len(shed), "shed_p99_ms": ms(shed, 99), "retry_after_on_every_503": self.retry_after_ok,
                "timeouts": self.timeouts, "other": self.other}


def write_policy(directory: Path, mock_port: int, max_in_flight: int) -> Path:
    path = directory / f"overload-{max_in_flight}.yaml"
    path.write_text(f"""version: 1
backends:
  mock: {{kind: openai_compatible, base_url: "http://{HOST}:{mock_port}/v1", model: mock-model,
         timeouts: {{total_s: 60, first_token_s: 60}}, retry: {{attempts: 1}}}}
models:
  bench: {{targets: [mock]}}
settings: {{max_in_flight: {max_in_flight}, watch: false}}
""")
    return path


async def one(http: aiohttp.ClientSession, url: str, phase: Phase) -> None:
    started = time.perf_counter()
    try:
        async with http.post(url, data=BODY, headers={"Content-Type": "application/json"},
                             timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)) as r:
            body = await r.read()
            took = time.perf_counter() - started
            if r.status == 200:
                phase.admitted.append(took)
            elif r.status == 503 and b'"overloaded"' in body:
                phase.shed.append(took)
                phase.retry_after_ok &= r.headers.get("Retry-After") == "1"
            else:
                phase.other[str(r.status)] = phase.other.get(str(r.status), 0) + 1
    except TimeoutError:
        phase.timeouts += 1
    except aiohttp.ClientError as exc:
        phase.other[type(exc).__name__] = phase.other.get(type(exc).__name__, 0) + 1


async def open_loop(http: aiohttp.ClientSession, url: str, phase: Phase, rate: float, seconds: float,
                    seed: int) -> Phase:
    """Poisson arrivals at ``rate`` per second for ``seconds``, each request on its own:
    the offered load does not slow down when answers do."""
    rng, loop = random.Random(seed), asyncio.get_running_loop()
    phase.offered_per_s = rate
    tasks: list[asyncio.Task[None]] = []
    start = at = loop.time()
    while at - start < seconds:
        at += rng.expovariate(rate)
        await asyncio.sleep(max(0.0, at - loop.time()))  # always yields: started requests get to run
        tasks.append(asyncio.create_task(one(http, url, phase)))
    phase.sent = len(tasks)
    await asyncio.gather(*tasks)
    return phase


async def capacity(http: aiohttp.ClientSession, url: str, seconds: float) -> float:
    """Admitted requests per second with ``SLOTS`` closed-loop clients (every place busy)."""
    phase, stop_at = Phase("capacity"), time.perf_counter() + seconds

    async def client() -> None:
        while time.perf_counter() < stop_at:
            await one(http, url, phase)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(SLOTS)))
    return len(phase.admitted) / (time.perf_counter() - started)


async def measure(cfg: Config, bounded: str, unbounded: str, procs: dict[str, Proc]) -> dict[str, Any]:
    connector = aiohttp.TCPConnector(limit=0)  # the client never queues: the load is what is offered
    async with aiohttp.ClientSession(connector=connector) as http:
        for url, name in ((bounded, "gateway"), (unbounded, "gateway-unbounded")):
            await wait_ready(http, url.replace("/v1/chat/completions", "/healthz"), procs[name])
        await capacity(http, bounded, 1.0)  # warm-up: connections, first-request costs
        cap = await capacity(http, bounded, cfg.capacity_s)
        unloaded = await open_loop(http, bounded, Phase("unloaded (0.5x)"), 0.5 * cap, cfg.unloaded_s, seed=1)
        loaded = await open_loop(http, bounded, Phase("3x, bounded"), 3 * cap, cfg.loaded_s, seed=2)
        worst = await open_loop(http, unbounded, Phase("3x, unbounded"), 3 * cap, cfg.unbounded_s, seed=3)
    return {"capacity_req_per_s": round(cap, 1), "phases": [p.summary() for p in (unloaded, loaded, worst)]}


def run(cfg: Config) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="switchyard-overload-") as tmp, processes() as procs:
        mock_port, gw_port, open_port = free_port(), free_port(), free_port()
        procs["mock"] = spawn("mock", [sys.executable, str(BENCH_DIR / "mock_upstream.py"), "--host", HOST,
                                       "--port", str(mock_port), "--slots", str(SLOTS), "--delay-ms",
                                       str(DELAY_MS)], None, Path(tmp) / "mock.log")
        procs["gateway"] = spawn("gateway", gateway_argv(write_policy(Path(tmp), mock_port, SLOTS), gw_port),
                                 None, Path(tmp) / "gateway.log")
        procs["gateway-unbounded"] = spawn(
            "gateway-unbounded", gateway_argv(write_policy(Path(tmp), mock_port, 1_000_000), open_port), None,
            Path(tmp) / "gateway-unbounded.log")
        url = "http://{}:{}/v1/chat/completions"
        return asyncio.run(measure(cfg, url.format(HOST, gw_port), url.format(HOST, open_port), procs))


def report(results: dict[str, Any]) -> str:
    lines = [f"upstream: {SLOTS} slots x {DELAY_MS} ms; gateway max_in_flight: {SLOTS}; "
             f"capacity C = {results['capacity_req_per_s']} req/s; client timeout {TIMEOUT_S:g} s", "",
             f"  {'phase':<16}{'offered/s':>10}{'sent':>7}{'admitted':>9}{'p50 ms':>8}{'p99 ms':>8}"
             f"{'shed':>7}{'shed p99':>9}{'timeouts':>9}  other"]
    for p in results["phases"]:
        lines.append(f"  {p['phase']:<16}{p['offered_req_per_s']:>10}{p['sent']:>7}{p['admitted']:>9}"
                     f"{p['admitted_p50_ms'] or '-':>8}{p['admitted_p99_ms'] or '-':>8}{p['shed']:>7}"
                     f"{p['shed_p99_ms'] or '-':>9}{p['timeouts']:>9}  {p['other'] or ''}")
    unloaded, loaded = results["phases"][0], results["phases"][1]
    ok = (loaded["admitted_p99_ms"] is not None and unloaded["admitted_p99_ms"] is not None
          and loaded["admitted_p99_ms"] <= 2 * unloaded["admitted_p99_ms"] and loaded["timeouts"] == 0
          and loaded["retry_after_on_every_503"])
    lines += ["", f"target: 3x offered, admitted p99 <= 2 x unloaded p99 ({unloaded['admitted_p99_ms']} ms) and no "
                  f"timeouts -> {'PASS' if ok else 'FAIL'} (admitted p99 = {loaded['admitted_p99_ms']} ms, "
                  f"timeouts = {loaded['timeouts']})"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short phases (a smoke run, about 20 s)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the numbers as JSON here")
    args = parser.parse_args(argv)
    return bench_main(lambda: run(QUICK if args.quick else FULL), report, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
