"""Instructions the gateway executes per request, per surface: a deterministic CPU measure.

    .venv/bin/python bench/instructions.py [--requests N] [--json PATH]

Wall-clock CPU per request moves ±15-25 % between identical runs on a shared 2-core VM;
an instruction count does not. This starts the mock upstream and the gateway under
``valgrind --tool=callgrind`` (instrumentation off until the warm-up is done), then sends,
one phase at a time at concurrency 8, N requests (default 400) of each kind — chat,
an Anthropic Message and an OpenAI Response (``store: false``) of the same conversation,
non-streamed and streamed — and reads the gateway's instruction counter between phases
(``callgrind_control --dump``). Instructions per request = the phase's count / N.

Prints a table with each surface's ratio to chat (target: within 1.2x). Every process
it starts is stopped by PID; traffic stays on 127.0.0.1. Needs valgrind (Debian's
``valgrind`` package); about 3 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from overhead import (  # bench/ is sys.path[0] when run as a script
    HOST,
    BenchAbort,
    Json,
    Proc,
    bench_main,
    free_port,
    gateway_argv,
    processes,
    spawn,
    surface_targets,
    write_policy,
)

BENCH_DIR = Path(__file__).resolve().parent
TARGET_RATIO = 1.2
PHASES = [(name, stream) for stream in (False, True) for name in ("chat", "messages", "responses")]


def _dump_total(pid: int, out_dir: Path, label: str) -> int:
    """Dump the gateway's counters now; the instructions since the last dump."""
    subprocess.run(["callgrind_control", "--dump=" + label, str(pid)], check=True, capture_output=True, timeout=120)
    dumps = sorted(out_dir.glob(f"callgrind.out.{pid}.*"), key=lambda p: p.stat().st_mtime)
    if not dumps:
        raise BenchAbort("callgrind wrote no dump")
    text = dumps[-1].read_text(errors="replace")
    found = re.search(r"^summary:\s+(\d+)", text, re.M) or re.search(r"^totals:\s+(\d+)", text, re.M)
    if found is None:
        raise BenchAbort(f"no instruction total in {dumps[-1].name}")
    return int(found.group(1))


async def _send(session: aiohttp.ClientSession, url: str, body: bytes, n: int, concurrency: int = 8) -> None:
    tickets = iter(range(n))

    async def worker() -> None:
        for _ in tickets:
            async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
                got = await resp.read()
            if resp.status != 200 or b"Hello" not in got:
                raise BenchAbort(f"{url} answered {resp.status}: {got[:500]!r}")

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def _measure(port: int, pid: int, out_dir: Path, n: int, proc: Proc) -> Json:
    targets = {t.name: t for t in surface_targets(port, pid)}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
        deadline = time.monotonic() + 300
        while True:  # valgrind makes start-up slow
            if proc.popen.poll() is not None:
                raise BenchAbort("the gateway exited during start-up")
            try:
                async with session.get(f"http://{HOST}:{port}/healthz") as r:
                    if r.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise BenchAbort("the gateway did not start within 300 s under valgrind")
            await asyncio.sleep(0.5)
        for name, stream in PHASES:  # warm-up: every path once, imports and caches filled
            t = targets[name]
            await _send(session, t.url, t.stream_body if stream else t.body, 20)
        await asyncio.to_thread(subprocess.run, ["callgrind_control", "--instr=on", str(pid)], check=True,
                                capture_output=True, timeout=60)
        await asyncio.to_thread(_dump_total, pid, out_dir, "start")
        per_request: Json = {}
        for name, stream in PHASES:
            t = targets[name]
            await _send(session, t.url, t.stream_body if stream else t.body, n)
            per_request[f"{name}{' stream' if stream else ''}"] = await asyncio.to_thread(_dump_total, pid, out_dir,
                                                                                          name) / n
    return per_request


def run(n: int, keep: Path | None = None) -> Json:
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise BenchAbort("valgrind is not installed (apt-get install valgrind)")
    with tempfile.TemporaryDirectory(prefix="switchyard-instr-") as tmp, processes() as procs:
        out_dir = Path(tmp)
        mock_port, gw_port = free_port(), free_port()
        procs["mock"] = spawn("mock", [sys.executable, str(BENCH_DIR / "mock_upstream.py"), "--host", HOST,
                                       "--port", str(mock_port)], None, out_dir / "mock.log")
        argv = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                f"--callgrind-out-file={out_dir}/callgrind.out.%p",
                *gateway_argv(write_policy(out_dir, mock_port), gw_port)]
        # a fixed hash seed: string hashes (dict probes, set order) no longer differ run to run
        procs["gateway"] = spawn("gateway", argv, None, out_dir / "gateway.log", env={"PYTHONHASHSEED": "0"})
        per_request = asyncio.run(_measure(gw_port, procs["gateway"].popen.pid, out_dir, n, procs["gateway"]))
        if keep is not None:  # the per-phase dumps, for callgrind_annotate
            keep.mkdir(parents=True, exist_ok=True)
            for dump in out_dir.glob("callgrind.out.*"):
                shutil.copy(dump, keep / dump.name)
    ratios = {}
    for key, value in per_request.items():
        base = per_request["chat stream" if key.endswith("stream") else "chat"]
        ratios[key] = value / base
    return {"requests_per_phase": n, "instructions_per_request": per_request, "ratio_to_chat": ratios}


def report(result: Json) -> str:
    lines = [f"gateway instructions per request (callgrind), {result['requests_per_phase']} requests per phase",
             f"  {'':<22}{'instructions':>14}{'÷ chat':>9}"]
    for key, value in result["instructions_per_request"].items():
        lines.append(f"  {key:<22}{value:>14,.0f}{result['ratio_to_chat'][key]:>9.3f}")
    worst = max(result["ratio_to_chat"].values())
    lines.append(f"target: each surface within {TARGET_RATIO:.1f}x chat -> "
                 f"{'PASS' if worst <= TARGET_RATIO else 'FAIL'} (worst {worst:.3f}x)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=400, help="requests per phase (default 400)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the numbers as JSON here")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="keep the per-phase callgrind dumps here")
    args = parser.parse_args(argv)
    return bench_main(lambda: run(args.requests, args.keep), report, args.json)


if __name__ == "__main__":
    sys.exit(main())
