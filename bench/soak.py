"""Soak: the gateway's memory stays flat under long mixed traffic (issue 11, item 10).

    .venv/bin/python bench/soak.py [--minutes 20] [--rate 50] [--json PATH]

Starts ``bench/mock_upstream.py`` (answers after 20 ms; opt-in errors, 64 KB answers and
slow streams) and one gateway worker (``switchyard serve``, in-memory store, the response
cache on with ``max_memory_mb: 64`` so that the cap is reached within minutes), then offers
``--rate`` requests per second, open loop, for ``--minutes`` (bounded: rate x minutes x 60
requests in all). The mix, drawn from a seeded RNG (the same sequence every run):

| share | request |
|---|---|
| 28 % | chat with a random prompt (a cache miss, then an entry) |
| 20 % | chat with one of 200 prompts (mostly cache hits) |
| 10 % | chat with a random prompt and a 64 KB answer (large cache entries) |
| 12 % | stream, random prompt, with usage (a cached stream) |
| 6 % | stream of 40 events 50 ms apart that the client leaves after 0.1-0.6 s |
| 6 % | an upstream error (500 -> 502 after retries) |
| 6 % | a random body of 1-200 KB (scanned off the loop above 64 KB) |
| 4 % | another alias (its own rule and backend list) |
| 4 % | an unknown model (404) |
| 4 % | an unknown key (401) |

Three teams with keys, rate limits and budgets (high enough never to refuse) exercise
admission and settlement on every request. Every ``--sample-s`` (default 30 s) the
gateway's RSS (``VmRSS``) is read from ``/proc``; at the end a table of RSS over time and
the growth over the second half: (mean RSS of the last 3 samples - mean of the 3 samples
around the half) / the latter. Target: <= 5 %.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from overhead import (  # bench/ is sys.path[0] when run as a script
    BENCH_DIR,
    HOST,
    BenchAbort,
    Proc,
    bench_main,
    free_port,
    gateway_argv,
    processes,
    spawn,
    wait_ready,
)

KEYS = {"search": "sk-soak-search-0001", "billing": "sk-soak-billing-0002", "support": "sk-soak-support-0003"}
WORDS = ("the quarterly report lists order shipped to the Berlin office and the team asked for version "
         "of the client with a discount before Friday please summarise").split()
TARGET_GROWTH = 0.05


def write_policy(directory: Path, mock_port: int) -> Path:
    backend = (f'{{kind: openai_compatible, base_url: "http://{HOST}:{mock_port}/v1", model: mock-model, '
               "price: {input_per_mtok_usd: 0.5, output_per_mtok_usd: 1.5}, "
               "retry: {attempts: 2}, timeouts: {total_s: 30, first_token_s: 10, idle_s: 10}}")
    teams = "\n".join(f'  {team}: {{keys: ["{key}"], limits: {{rpm: 100000, tpm: 100000000}}, '
                      "budget: {daily_usd: 100000}}" for team, key in KEYS.items())
    path = directory / "soak-policy.yaml"
    path.write_text(f"""version: 1
backends:
  mock: {backend}
  mock2: {backend}
models:
  chat: {{targets: [mock, mock2]}}
  chat-alt: {{targets: [mock2, mock]}}
rules:
  - {{name: alt, when: {{model: chat-alt}}, route: {{strategy: cheapest}}}}
teams:
{teams}
cache: {{mode: exact, ttl_s: 3600, max_entry_kb: 128, max_memory_mb: 64}}
settings: {{watch: false}}
""")
    return path


@dataclass
class Tally:
    sent: int = 0
    statuses: dict[str, int] = field(default_factory=dict)

    def count(self, what: str) -> None:
        self.statuses[what] = self.statuses.get(what, 0) + 1


class Traffic:
    """The mixed requests, drawn from one seeded RNG."""

    def __init__(self, base: str, seed: int) -> None:
        self.url = base + "/v1/chat/completions"
        self.rng = random.Random(seed)
        self.pool = [self._prompt(8, 40) for _ in range(200)]
        self.tally = Tally()

    def _prompt(self, lo: int, hi: int) -> str:
        return " ".join(self.rng.choice(WORDS) for _ in range(self.rng.randint(lo, hi))) + f" #{self.rng.random()}"

    def next(self) -> tuple[str, dict[str, Any], str]:
        """(kind, body, key) of the next request."""
        r, rng = self.rng.random(), self.rng
        key = KEYS[rng.choice(list(KEYS))]
        body: dict[str, Any] = {"model": "chat", "messages": [{"role": "user", "content": self._prompt(5, 30)}],
                                "max_tokens": 64}
        kinds = ((0.28, "miss"), (0.48, "hit"), (0.58, "big"), (0.70, "stream"), (0.76, "cancel"),
                 (0.82, "error"), (0.88, "body"), (0.92, "alias"), (0.96, "no-model"), (1.0, "no-key"))
        kind = next(k for limit, k in kinds if r < limit)
        if kind == "hit":
            body["messages"] = [{"role": "user", "content": rng.choice(self.pool)}]
        elif kind == "big":
            body["user"] = "mock:big"
        elif kind == "stream":
            body |= {"stream": True, "stream_options": {"include_usage": True}}
        elif kind == "cancel":
            body |= {"stream": True, "user": "mock:slow"}
        elif kind == "error":
            body["user"] = "mock:error"
        elif kind == "body":
            body["messages"] = [{"role": "user", "content": self._prompt(200, 30_000)}]
        elif kind == "alias":
            body["model"] = "chat-alt"
        elif kind == "no-model":
            body["model"] = f"nope-{rng.randint(0, 10**9)}"
        elif kind == "no-key":
            key = f"sk-unknown-{rng.randint(0, 10**12)}"
        return kind, body, key

    async def send(self, http: aiohttp.ClientSession, kind: str, body: dict[str, Any], key: str,
                   leave_after_s: float) -> None:
        self.tally.sent += 1
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        try:
            async with http.post(self.url, data=orjson.dumps(body), headers=headers,
                                 timeout=aiohttp.ClientTimeout(total=60)) as r:
                if kind == "cancel" and r.status == 200:
                    await asyncio.sleep(leave_after_s)  # read a little of the stream, then leave
                    r.close()
                    self.tally.count("left mid-stream")
                    return
                raw = await r.read()
                self.tally.count(str(r.status) if r.status == 200 else f"{r.status} {_code(raw)}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.tally.count(type(exc).__name__)


def _code(raw: bytes) -> str:
    """The ``error.code`` of an OpenAI-shaped error body (``?`` when it has none)."""
    try:
        return str(orjson.loads(raw)["error"]["code"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return "?"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise BenchAbort(f"no VmRSS in /proc/{pid}/status")


async def soak(base: str, gateway: Proc, minutes: float, rate: float, sample_s: float,
               procs: dict[str, Proc]) -> dict[str, Any]:
    traffic, loop = Traffic(base, seed=11), asyncio.get_running_loop()
    samples: list[dict[str, Any]] = []
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        await wait_ready(http, base + "/healthz", procs["gateway"])
        tasks: set[asyncio.Task[None]] = set()
        skipped = 0
        start = at = next_sample = loop.time()
        end = start + minutes * 60
        while at < end:
            if at >= next_sample:
                samples.append({"minute": round((at - start) / 60, 2), "rss_mb": round(rss_mb(gateway.popen.pid), 1),
                                "sent": traffic.tally.sent, "in_flight": len(tasks), "skipped": skipped})
                print(f"  {samples[-1]}", file=sys.stderr, flush=True)
                next_sample += sample_s
                if gateway.popen.poll() is not None:
                    raise BenchAbort("the gateway exited")
            at += traffic.rng.expovariate(rate)
            if at < loop.time() - 1.0:  # more than a second behind (a starved client): skip, never burst
                skipped += 1
                continue
            await asyncio.sleep(max(0.0, at - loop.time()))  # always yields, even when behind
            kind, body, key = traffic.next()
            task = asyncio.create_task(traffic.send(http, kind, body, key, traffic.rng.uniform(0.1, 0.6)))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
        samples.append({"minute": round((loop.time() - start) / 60, 2), "rss_mb": round(rss_mb(gateway.popen.pid), 1),
                        "sent": traffic.tally.sent, "in_flight": 0, "skipped": skipped})
    return {"samples": samples, "statuses": dict(sorted(traffic.tally.statuses.items())), "sent": traffic.tally.sent,
            "skipped": skipped}


def growth(samples: list[dict[str, Any]]) -> tuple[float, float, float]:
    """(RSS around the half, RSS at the end, growth): means of 3 samples each."""
    rss = [s["rss_mb"] for s in samples]
    half = len(rss) // 2
    mid = sum(rss[max(0, half - 1):half + 2]) / len(rss[max(0, half - 1):half + 2])
    last = sum(rss[-3:]) / len(rss[-3:])
    return mid, last, (last - mid) / mid


def run(minutes: float, rate: float, sample_s: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="switchyard-soak-") as tmp, processes() as procs:
        mock_port, gw_port = free_port(), free_port()
        procs["mock"] = spawn("mock", [sys.executable, str(BENCH_DIR / "mock_upstream.py"), "--host", HOST,
                                       "--port", str(mock_port), "--delay-ms", "20",
                                       "--max-seconds", str(minutes * 60 + 120)], None, Path(tmp) / "mock.log")
        procs["gateway"] = spawn("gateway", gateway_argv(write_policy(Path(tmp), mock_port), gw_port), None,
                                 Path(tmp) / "gateway.log", env={"SWITCHYARD_LOG_LEVEL": "WARNING"})
        results = asyncio.run(soak(f"http://{HOST}:{gw_port}", procs["gateway"], minutes, rate, sample_s, procs))
        results["config"] = {"minutes": minutes, "rate_per_s": rate, "sample_s": sample_s,
                             "cache_max_memory_mb": 64, "cpus": os.cpu_count(),
                             "loadavg_after": Path("/proc/loadavg").read_text().split()[:3]}
        return results


def report(results: dict[str, Any]) -> str:
    lines = [f"{results['sent']} requests at {results['config']['rate_per_s']:g}/s over "
             f"{results['config']['minutes']:g} min ({results['skipped']} arrivals skipped: the client fell behind); "
             f"answers: {results['statuses']}", "",
             "| minute | RSS MB | requests sent |", "|---:|---:|---:|"]
    lines += [f"| {s['minute']:g} | {s['rss_mb']:.1f} | {s['sent']} |" for s in results["samples"]]
    mid, last, grew = growth(results["samples"])
    lines += ["", f"target: RSS growth over the second half <= {TARGET_GROWTH:.0%} -> "
                  f"{'PASS' if grew <= TARGET_GROWTH else 'FAIL'} ({mid:.1f} MB at the half, {last:.1f} MB at the "
                  f"end: {grew:+.1%})"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=20.0, help="how long to offer traffic (default 20)")
    parser.add_argument("--rate", type=float, default=50.0, help="requests per second, open loop (default 50)")
    parser.add_argument("--sample-s", type=float, default=30.0, help="seconds between RSS samples (default 30)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the numbers as JSON here")
    args = parser.parse_args(argv)
    return bench_main(lambda: run(args.minutes, args.rate, args.sample_s), report, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
