"""Replica pools on real servers: three llama.cpp replicas of the shipped model behind one
pool, a multi-turn workload replayed through the gateway under each placement.

    .venv/bin/python bench/pools.py [--quick] [--conversations N] [--turns T] [--json PATH]

Starts three ``llama-server`` replicas (Gemma 3 270M, 2 slots, 1 thread each: the machine has
2 cores) with ``deploy/local-model/llamacpp.sh``, and for each placement — ``round_robin``,
``least_loaded``, ``affinity``, and ``affinity`` behind three gateway processes that the
client takes turns with (sharing placements over Redis, ``SWITCHYARD_BENCH_REDIS_URL``,
default ``redis://127.0.0.1:6379/14``) — restarts the replicas (empty caches), starts the gateway(s) and
replays the same workload: N conversations × T turns with a long shared system prompt and
growing histories, turns interleaved (turn 1 of every conversation, then turn 2, …), three
requests in flight, streamed, 8 answer tokens.

Per placement it reports, from llama.cpp's own timings (``prompt_n`` recomputed,
``cache_n`` reused): prompt tokens recomputed and reused; time to first token mean, p50,
p99; total time; and the share of follow-up turns served by the replica that served the
conversation's previous turn (``x-switchyard-replica``). Targets (affinity): ≥ 80 % of
prompt tokens reused, mean TTFT ≥ 2× lower than round robin, p99 no worse than least
loaded, ≥ 90 % of follow-ups on the previous turn's replica with three gateways.

Every process is stopped by PID; traffic stays on 127.0.0.1; each placement is bounded in
time (``PHASE_LIMIT_S``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson
from overhead import (  # bench/ is sys.path[0] when run as a script
    HOST,
    BenchAbort,
    Json,
    bench_main,
    free_port,
    gateway_argv,
    percentile,
    processes,
    spawn,
)

ROOT = Path(__file__).resolve().parent.parent
LLAMA = ROOT / "deploy" / "local-model" / "llamacpp.sh"
PHASE_LIMIT_S = 900.0
REPLICAS = 3
SYSTEM = ("You are the support assistant of Northwind Outfitters, a retailer of outdoor gear. Answer in one "
          "short sentence, politely, without making promises about delivery dates or refunds. ") * 16
PLACEMENTS = [("round_robin", 1), ("least_loaded", 1), ("affinity", 1), ("affinity", 3)]


@dataclass
class Turn:
    conversation: int
    turn: int
    ttft_s: float
    total_s: float
    replica: str | None
    prompt_n: int
    cache_n: int


@dataclass
class Conversation:
    n: int
    messages: list[dict[str, str]] = field(default_factory=list)
    replicas: list[str | None] = field(default_factory=list)


def _env(slots: int) -> dict[str, str]:
    return {**os.environ, "LLAMA_SLOTS": str(slots), "LLAMA_CTX": str(2048 * slots), "LLAMA_THREADS": "1"}


SLOTS = 2
ANSWER_TOKENS = 8
#: several gateway processes share placements over Redis (as a scaled-out deployment does)
REDIS_URL = os.environ.get("SWITCHYARD_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")  # a database of its own


def start_replicas(tmp: Path) -> list[tuple[int, Path]]:
    started = []
    try:
        for i in range(REPLICAS):
            port, pidfile = free_port(), tmp / f"llama-{i}.pid"
            subprocess.run(["bash", str(LLAMA), "start", str(port), str(pidfile)], check=True, env=_env(SLOTS),
                           stdout=subprocess.DEVNULL, timeout=1800)
            started.append((port, pidfile))
    except BaseException:
        stop_replicas(started)
        raise
    return started


def stop_replicas(replicas: list[tuple[int, Path]]) -> None:
    for _, pidfile in replicas:
        subprocess.run(["bash", str(LLAMA), "stop", str(pidfile)], check=False, timeout=30)


def write_policy(tmp: Path, ports: list[int], strategy: str) -> Path:
    urls = ", ".join(f"'http://{HOST}:{p}/v1'" for p in ports)
    policy = tmp / f"pool-{strategy}.yaml"
    policy.write_text(
        "version: 1\nbackends:\n"
        f"  gemma: {{kind: llamacpp, model: gemma-3-270m, replicas: [{urls}],\n"
        f"          placement: {{strategy: {strategy}, block_chars: 512, saturated_at: 6}},\n"
        "          timeouts: {connect_s: 2, first_token_s: 120, idle_s: 60, total_s: 300}}\n"
        "models:\n  chat: {targets: [gemma]}\n")
    return policy


async def _turn(http: aiohttp.ClientSession, url: str, conv: Conversation, turn: int) -> Turn:
    body = {"model": "chat", "messages": conv.messages, "max_tokens": ANSWER_TOKENS, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    started = time.perf_counter()
    first: float | None = None
    text, timings = [], {}
    async with http.post(url + "/v1/chat/completions", json=body) as resp:
        if resp.status != 200:
            raise BenchAbort(f"turn {turn} of conversation {conv.n}: HTTP {resp.status}: {(await resp.text())[:500]}")
        replica = resp.headers.get("x-switchyard-replica")
        buffer = b""
        async for chunk in resp.content.iter_any():
            buffer += chunk
            while b"\n\n" in buffer:
                event, buffer = buffer.split(b"\n\n", 1)
                if not event.startswith(b"data: {"):
                    continue
                data = orjson.loads(event[6:])
                for choice in data.get("choices") or ():
                    content = (choice.get("delta") or {}).get("content")
                    if content:
                        first = first or time.perf_counter()
                        text.append(content)
                timings = data.get("timings") or timings
                usage = data.get("usage")
                if usage and not timings:  # no timings: llama.cpp's usage says what was cached
                    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
                    timings = {"prompt_n": usage["prompt_tokens"] - cached, "cache_n": cached}
    total = time.perf_counter() - started
    conv.messages += [{"role": "assistant", "content": "".join(text) or "(no answer)"},
                      {"role": "user", "content": f"Thanks. And about order {conv.n}-{turn}: can I change the "
                                                  "colour of the jacket I ordered?"}]
    return Turn(conv.n, turn, (first or time.perf_counter()) - started, total, replica,
                int(timings.get("prompt_n", 0)), int(timings.get("cache_n", 0)))


async def replay(urls: list[str], conversations: int, turns: int, in_flight: int = 3) -> list[Turn]:
    convs = [Conversation(n, [{"role": "system", "content": SYSTEM},
                              {"role": "user", "content": f"Hello, I am customer {n}. Where is my order "
                                                          f"#{1000 + n}? I ordered a tent and two sleeping bags."}])
             for n in range(conversations)]
    results: list[Turn] = []
    gate = asyncio.Semaphore(in_flight)
    sent = 0
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        for turn in range(turns):
            async def one(conv: Conversation, url: str, turn: int = turn) -> None:
                async with gate:
                    result = await _turn(http, url, conv, turn)
                    conv.replicas.append(result.replica)
                    results.append(result)

            jobs = []
            for conv in convs:
                jobs.append(one(conv, urls[sent % len(urls)]))  # several gateways: the client takes turns
                sent += 1
            await asyncio.gather(*jobs)
    return results


def summary(results: list[Turn], wall_s: float, convs: int) -> Json:
    ttft = sorted(r.ttft_s for r in results)
    recomputed, reused = sum(r.prompt_n for r in results), sum(r.cache_n for r in results)
    by_conv: dict[int, list[Turn]] = {}
    for r in sorted(results, key=lambda r: (r.conversation, r.turn)):
        by_conv.setdefault(r.conversation, []).append(r)
    follow = [t.replica == prev.replica for turns in by_conv.values()
              for prev, t in zip(turns, turns[1:], strict=False)]
    return {"requests": len(results), "conversations": convs, "prompt_tokens_recomputed": recomputed,
            "prompt_tokens_reused": reused, "reused_pct": 100 * reused / max(1, recomputed + reused),
            "ttft_mean_s": statistics.fmean(ttft), "ttft_p50_s": percentile(ttft, 50),
            "ttft_p99_s": percentile(ttft, 99), "total_s": wall_s,
            "follow_ups_on_previous_replica_pct": 100 * sum(follow) / max(1, len(follow)),
            "replicas_used": sorted({r.replica or "-" for r in results}),
            "slowest": [{"conversation": r.conversation, "turn": r.turn, "replica": r.replica,
                         "ttft_s": round(r.ttft_s, 3), "prompt_n": r.prompt_n, "cache_n": r.cache_n}
                        for r in sorted(results, key=lambda r: -r.ttft_s)[:6]]}


async def _ready(urls: list[str]) -> None:
    async with aiohttp.ClientSession() as http:
        deadline = time.monotonic() + 60
        for url in urls:
            while True:
                try:
                    async with http.get(url + "/healthz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline:
                    raise BenchAbort(f"the gateway at {url} did not start")
                await asyncio.sleep(0.1)


def run(conversations: int, turns: int) -> Json:
    out: Json = {"conversations": conversations, "turns": turns, "replicas": REPLICAS, "slots": SLOTS,
                 "answer_tokens": ANSWER_TOKENS,
                 "placements": {}}
    with tempfile.TemporaryDirectory(prefix="switchyard-pools-") as tmp_name:
        tmp = Path(tmp_name)
        for strategy, gateways in PLACEMENTS:
            label = strategy if gateways == 1 else f"{strategy}, {gateways} gateways"
            print(f"  … {label}", file=sys.stderr, flush=True)
            replicas = start_replicas(tmp)
            try:
                with processes() as procs:
                    policy = write_policy(tmp, [p for p, _ in replicas], strategy)
                    urls = []
                    for g in range(gateways):
                        port = free_port()
                        procs[f"gateway-{g}"] = spawn(f"gateway-{g}", gateway_argv(policy, port), None,
                                                      tmp / f"gateway-{strategy}-{g}.log",
                                                      {"SWITCHYARD_REDIS_URL": REDIS_URL} if gateways > 1 else None)
                        urls.append(f"http://{HOST}:{port}")
                    asyncio.run(_ready(urls))
                    started = time.perf_counter()
                    results = asyncio.run(asyncio.wait_for(replay(urls, conversations, turns), PHASE_LIMIT_S))
                    out["placements"][label] = summary(results, time.perf_counter() - started, conversations)
            finally:
                stop_replicas(replicas)
    placements = out["placements"]
    rr, ll, aff = placements["round_robin"], placements["least_loaded"], placements["affinity"]
    out["targets"] = {
        "reused_pct_ge_80": aff["reused_pct"] >= 80,
        "ttft_mean_2x_lower_than_round_robin": aff["ttft_mean_s"] * 2 <= rr["ttft_mean_s"],
        "ttft_p99_no_worse_than_least_loaded": aff["ttft_p99_s"] <= ll["ttft_p99_s"],
        "follow_ups_same_replica_ge_90_with_3_gateways":
            placements["affinity, 3 gateways"]["follow_ups_on_previous_replica_pct"] >= 90,
    }
    return out


def report(result: Json) -> str:
    lines = [f"replica pools: {result['replicas']} llama.cpp replicas (Gemma 3 270M, {result['slots']} slots, "
             "1 thread each), "
             f"{result['conversations']} conversations x {result['turns']} turns, interleaved, 3 in flight",
             f"  {'placement':<26}{'recomputed':>11}{'reused':>9}{'reused %':>9}{'TTFT mean':>10}{'p50':>7}"
             f"{'p99':>7}{'total s':>9}{'same replica %':>16}"]
    for label, s in result["placements"].items():
        lines.append(f"  {label:<26}{s['prompt_tokens_recomputed']:>11}{s['prompt_tokens_reused']:>9}"
                     f"{s['reused_pct']:>9.1f}{s['ttft_mean_s']:>10.2f}{s['ttft_p50_s']:>7.2f}{s['ttft_p99_s']:>7.2f}"
                     f"{s['total_s']:>9.1f}{s['follow_ups_on_previous_replica_pct']:>16.1f}")
    lines += [f"  target {name}: {'PASS' if ok else 'FAIL'}" for name, ok in result["targets"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 conversations x 3 turns (a smoke run)")
    parser.add_argument("--conversations", type=int, default=7)  # not a multiple of the replicas
    parser.add_argument("--turns", type=int, default=6)
    parser.add_argument("--slots", type=int, default=2, help="parallel slots per replica (default 2)")
    parser.add_argument("--answer-tokens", type=int, default=8, help="max_tokens of each answer (default 8)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the numbers as JSON here")
    args = parser.parse_args(argv)
    global SLOTS, ANSWER_TOKENS  # noqa: PLW0603 - settings for the whole run
    SLOTS, ANSWER_TOKENS = args.slots, args.answer_tokens
    convs, turns = (4, 3) if args.quick else (args.conversations, args.turns)
    return bench_main(lambda: run(convs, turns), report, args.json)


if __name__ == "__main__":
    sys.exit(main())
