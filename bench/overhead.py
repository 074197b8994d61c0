"""Switchyard gateway overhead: what one hop through the gateway adds over calling the
upstream directly.

    .venv/bin/python bench/overhead.py [--quick] [--json PATH] [--only SECTION[,SECTION]]
        [--stream-chunks N] [--rates R[,R]] [--open-seconds S] [--workers N]
        [--gateway-src DIR] [--gateway-env KEY=VALUE ...]

One run starts a fast fixed-answer mock upstream (``bench/mock_upstream.py``, streams of
``--stream-chunks`` chunk events, default 20) and the gateway (``switchyard serve``) routing
alias ``bench`` to it, pins the gateway to one CPU core and the mock + this load client to
another, and measures, always next to a direct call to the mock made by the same client
code with the same payload:

1. concurrency 1, non-stream: latency p50/p90/p99, direct vs gateway (interleaved),
   and the added latency at p50 and p99;
2. concurrency 1, stream: time to first body byte (TTFB) and total time;
3. saturation, concurrency 32, non-stream and stream: throughput and CPU ms per request
   of the gateway process, vs the mock's own CPU ms per request when called directly;
4. the gateway's peak RSS (VmHWM);
5. the agent surfaces: the gateway's CPU ms per request for the same conversation sent as
   chat completions, as an Anthropic Message (``/v1/messages``) and as an OpenAI Response
   (``/v1/responses``, ``store: false``), non-stream and stream, in rotating bursts; the
   target is each surface within 20 % of chat's CPU per request;
6. open loop: requests at fixed rates (``--rates``, default 20 and 200 req/s) over 16
   keep-alive connections, latency from each request's *scheduled* send time, direct and
   gateway in ABBA bursts (``bench/overhead_modes.py``);
7. with ``--workers N`` (N > 1): the gateway with N worker processes, not pinned, saturated
   next to the 1-worker pinned gateway: throughput ratio, CPU per request per worker, and
   how the workers share connections and requests (``bench/overhead_modes.py``).

Sections: ``latency`` (1, 2), ``saturation`` (3), ``surfaces`` (5), ``open`` (6), ``workers``
(7); ``--only`` picks some, [4] is always reported. ``--gateway-src DIR`` runs the gateway
from the code in DIR (a git worktree of another commit: ``PYTHONPATH=DIR``) and
``--gateway-env KEY=VALUE`` adds to its environment, for before/after numbers from this
same bench. The verdict lines check the targets of issue 16 (report only: exit 0).

Every process it starts is stopped by PID on exit (also on Ctrl-C / SIGTERM); all
traffic stays on 127.0.0.1; every phase is aborted after 120 s. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import orjson
from mock_upstream import CHAT_BODY, MIN_CHUNKS, SSE_BODY, sse_body  # bench/ is sys.path[0] when run as a script

HOST = "127.0.0.1"
BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
PHASE_LIMIT_S = 120.0
READY_LIMIT_S = 30.0
TARGET_ADDED_P50_MS = 0.5  # issue 16 (was 1.0); the other targets of issue 16 are in targets()
SURFACE_CPU_RATIO = 1.2  # a Message or a Response costs the gateway at most 20 % more CPU than chat
CLK_TCK = os.sysconf("SC_CLK_TCK")
MAX_STREAM_READS = 10_000
MIN_PRECISE_TICKS = 20  # below this, tick quantisation (±1 per reading) makes CPU/request rough
HEADERS = {"Content-Type": "application/json"}
MESSAGES = [{"role": "system", "content": "You are a terse assistant used by a benchmark."},
            {"role": "user", "content": "Say hello in five words."}]

T = TypeVar("T")
Json = dict[str, Any]
CorePlan = tuple[set[int], set[int]] | None  # (gateway cores, mock + client cores)


@dataclass(frozen=True)
class Config:
    latency_n: int       # measured requests per target at concurrency 1 (each mode)
    latency_warmup: int  # excluded requests per target before that
    sat_n: int           # measured requests per target at saturation
    sat_warmup: int
    sat_rounds: int = 4  # the saturation requests are sent in this many alternating bursts
    concurrency: int = 32


FULL = Config(latency_n=2000, latency_warmup=200, sat_n=5000, sat_warmup=500)
QUICK = Config(latency_n=300, latency_warmup=50, sat_n=1000, sat_warmup=200)
SECTIONS = ("latency", "saturation", "surfaces", "open", "workers")  # [4] peak RSS is always reported


@dataclass(frozen=True)
class Options:
    """What to run beyond ``Config``'s sizes: the command line."""

    sections: tuple[str, ...] = SECTIONS[:4]
    stream_chunks: int = 20                        # chunk events per streamed answer (the targets: 20)
    rates: tuple[float, ...] = (20.0, 200.0)       # [6] open loop, req/s
    open_seconds: float = 3.0                      # [6] per burst; 4 bursts per (rate, stream)
    workers: int = 1                               # [7] runs when > 1
    gateway_src: str | None = None                 # PYTHONPATH=DIR for the gateway (another commit's worktree)
    gateway_env: tuple[tuple[str, str], ...] = ()  # extra KEY=VALUE for the gateway's environment


class BenchAbort(Exception):
    """The benchmark cannot go on; the message says why."""


@dataclass(frozen=True)
class Target:
    """One place to send requests: the mock directly, or the gateway in front of it."""

    name: str
    base: str           # http://127.0.0.1:PORT
    url: str
    body: bytes         # non-stream request
    stream_body: bytes  # the same with "stream": true
    pid: int
    exact: bool = True  # the answer must be the mock's own bytes (chat through the gateway or direct)
    stream_want: bytes = SSE_BODY  # the mock's streamed body (its --chunks)


def surface_targets(port: int, pid: int, stream_want: bytes = SSE_BODY) -> list[Target]:
    """The bench conversation on each surface of the gateway (alias ``bench``)."""
    base = f"http://{HOST}:{port}"
    system, user = MESSAGES[0]["content"], MESSAGES[1]["content"]
    chat = make_target("chat", port, "bench", pid, stream_want)
    messages = {"model": "bench", "max_tokens": 32, "temperature": 0, "system": system,
                "messages": [{"role": "user", "content": user}]}
    responses = {"model": "bench", "max_output_tokens": 32, "temperature": 0, "instructions": system,
                 "input": user, "store": False}
    return [chat,
            Target("messages", base, base + "/v1/messages", orjson.dumps(messages),
                   orjson.dumps({**messages, "stream": True}), pid, exact=False),
            Target("responses", base, base + "/v1/responses", orjson.dumps(responses),
                   orjson.dumps({**responses, "stream": True}), pid, exact=False)]


def make_target(name: str, port: int, model: str, pid: int, stream_want: bytes = SSE_BODY) -> Target:
    payload = {"model": model, "messages": MESSAGES, "max_tokens": 32, "temperature": 0}
    base = f"http://{HOST}:{port}"
    return Target(name, base, base + "/v1/chat/completions", orjson.dumps(payload),
                  orjson.dumps({**payload, "stream": True}), pid, stream_want=stream_want)


# -- processes -------------------------------------------------------------------------

@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def cpu_plan() -> CorePlan:
    """(gateway cores, mock+client cores): one core each, or ``None`` with fewer than 2 CPUs."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    return {cpus[-1]}, {cpus[0]}


def spawn(name: str, argv: list[str], cores: set[int] | None, log: Path,
          env: dict[str, str] | None = None) -> Proc:
    """Start ``argv`` in its own session (``env``: extra variables); it inherits ``cores`` as
    its CPU affinity from birth (so every thread it ever starts is pinned too)."""
    mine = os.sched_getaffinity(0)
    with log.open("wb") as out:
        if cores:
            os.sched_setaffinity(0, cores)
        try:
            popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                     cwd=ROOT, start_new_session=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
        finally:
            os.sched_setaffinity(0, mine)
    return Proc(name, popen, log)


def stop(proc: Proc) -> None:
    """SIGTERM by PID, then SIGKILL if it is still there after 5 s."""
    if proc.popen.poll() is not None:
        return
    proc.popen.terminate()
    try:
        proc.popen.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.popen.kill()
        proc.popen.wait(timeout=5)


def log_tail(proc: Proc, lines: int = 30) -> str:
    try:
        text = proc.log.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    if not text:
        return ""
    return f"--- last lines of the {proc.name} log ({proc.log.name}) ---\n" + "\n".join(text)


def gateway_argv(policy: Path, port: int, workers: int = 1) -> list[str]:
    exe = Path(sys.executable).with_name("switchyard")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "router"]
    return [*cmd, "serve", "--policy", str(policy), "--host", HOST, "--port", str(port),
            "--workers", str(workers), "--no-access-log"]


def write_policy(directory: Path, mock_port: int) -> Path:
    policy = directory / "bench-policy.yaml"
    policy.write_text(
        "version: 1\n"
        "backends:\n"
        f'  mock: {{kind: openai_compatible, base_url: "http://{HOST}:{mock_port}/v1", model: mock-model}}\n'
        "models:\n"
        "  bench: {targets: [mock]}\n"
    )
    return policy


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process (all its threads), in clock ticks."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "; fields[0] is field 3
    return int(fields[11]) + int(fields[12])       # fields 14 (utime) and 15 (stime)


def cpu_ns(pid: int) -> int:
    """Run time of a process's live threads in ns (/proc/PID/task/*/schedstat); 0 if unavailable."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return total


def core_ticks(cores: set[int]) -> tuple[int, int]:
    """(busy, total) clock ticks since boot of these CPUs, every process counted (/proc/stat)."""
    busy = total = 0
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name[:3] == "cpu" and name[3:].isdigit() and int(name[3:]) in cores:
            ticks = [int(v) for v in values[:8]]  # user nice system idle iowait irq softirq steal
            total += sum(ticks)
            busy += sum(ticks) - ticks[3] - ticks[4]
    return busy, total


def peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise BenchAbort(f"no VmHWM in /proc/{pid}/status")


# -- client ----------------------------------------------------------------------------

def check(target: Target, status: int, got: bytes, want: bytes) -> None:
    """Abort with the answer's text unless it is exactly the mock's fixed answer (for a
    translating surface: a 200 that carries the mock's answer text)."""
    if status != 200 or (got != want if target.exact else b"Hello" not in got):
        text = got[:2000].decode("utf-8", "replace")
        raise BenchAbort(f"{target.name} answered HTTP {status}, not the mock's fixed answer:\n{text}")


async def timed_json(session: aiohttp.ClientSession, target: Target) -> int:
    """One non-stream request; its latency in ns."""
    start = time.perf_counter_ns()
    async with session.post(target.url, data=target.body, headers=HEADERS) as resp:
        body = await resp.read()
    elapsed = time.perf_counter_ns() - start
    check(target, resp.status, body, CHAT_BODY)
    return elapsed


async def timed_stream(session: aiohttp.ClientSession, target: Target) -> tuple[int, int]:
    """One stream request; (time to first body byte, total time) in ns."""
    start = time.perf_counter_ns()
    async with session.post(target.url, data=target.stream_body, headers=HEADERS) as resp:
        chunks = [await resp.content.readany()]
        first = time.perf_counter_ns()
        for _ in range(MAX_STREAM_READS):
            chunk = await resp.content.readany()
            if not chunk:
                break
            chunks.append(chunk)
    end = time.perf_counter_ns()
    check(target, resp.status, b"".join(chunks), target.stream_want)
    return first - start, end - start


async def interleaved(run: Callable[[Target], Awaitable[T]], a: Target, b: Target,
                      n: int, warmup: int) -> tuple[list[T], list[T]]:
    """Alternate a/b request by request (ABBA order), so drift hits both equally."""
    out_a: list[T] = []
    out_b: list[T] = []
    for i in range(warmup + n):
        if i % 2 == 0:
            ra, rb = await run(a), await run(b)
        else:
            rb, ra = await run(b), await run(a)
        if i >= warmup:
            out_a.append(ra)
            out_b.append(rb)
    return out_a, out_b


@dataclass(frozen=True)
class CpuSnap:
    """CPU counters at one instant, for the server under load and the core(s) it runs on."""

    t_ns: int
    server_ticks: int   # utime + stime (clock ticks)
    server_ns: int      # schedstat run time of its live threads (ns precision)
    client_ticks: int
    core: tuple[int, int]         # (busy, total) /proc/stat ticks of the server's cores, all processes
    client_core: tuple[int, int]  # the same for this client's cores


def snap(pid: int, cores: set[int]) -> CpuSnap:
    return CpuSnap(time.perf_counter_ns(), cpu_ticks(pid), cpu_ns(pid), cpu_ticks(os.getpid()),
                   core_ticks(cores), core_ticks(os.sched_getaffinity(0)))


def busy_pct(a: tuple[int, int], b: tuple[int, int]) -> float:
    return 100 * (b[0] - a[0]) / max(1, b[1] - a[1])


Round = tuple[CpuSnap, CpuSnap]  # counters before and after one measured burst


@dataclass(frozen=True)
class Saturation:
    requests: int
    wall_s: float
    req_per_s: float
    req_per_s_min_round: float
    req_per_s_max_round: float
    server_cpu_ticks: int
    server_cpu_ms_per_req: float           # from ticks: the headline number
    server_cpu_ms_per_req_schedstat: float  # ns-precision cross-check
    server_busy_pct: float                  # server CPU time / wall time
    core_busy_pct_all: float                # its core(s) busy, every process counted
    client_core_busy_pct_all: float         # the load client's core(s) busy, every process counted
    client_cpu_ms_per_req: float

    @classmethod
    def from_rounds(cls, rounds: list[Round], per_round: int) -> Saturation:
        def total(get: Callable[[CpuSnap], int]) -> int:
            return sum(get(after) - get(before) for before, after in rounds)

        def pct(busy: Callable[[CpuSnap], int], all_: Callable[[CpuSnap], int]) -> float:
            return 100 * total(busy) / max(1, total(all_))

        n = per_round * len(rounds)
        wall_s = total(lambda c: c.t_ns) / 1e9
        ticks = total(lambda c: c.server_ticks)
        cpu_ms = ticks * 1000 / CLK_TCK
        rates = [per_round * 1e9 / (after.t_ns - before.t_ns) for before, after in rounds]
        return cls(n, wall_s, n / wall_s, min(rates), max(rates), ticks, cpu_ms / n,
                   total(lambda c: c.server_ns) / 1e6 / n, 100 * cpu_ms / (wall_s * 1000),
                   pct(lambda c: c.core[0], lambda c: c.core[1]),
                   pct(lambda c: c.client_core[0], lambda c: c.client_core[1]),
                   total(lambda c: c.client_ticks) * 1000 / CLK_TCK / n)


async def blast(session: aiohttp.ClientSession, target: Target, total: int, concurrency: int,
                stream: bool = False) -> None:
    """``total`` requests (``stream``: streamed, each read to its end), ``concurrency`` in flight."""
    tickets: Iterator[int] = iter(range(total))
    body, want = (target.stream_body, target.stream_want) if stream else (target.body, CHAT_BODY)

    async def worker() -> None:
        for _ in tickets:
            async with session.post(target.url, data=body, headers=HEADERS) as resp:
                got = await resp.read()
            check(target, resp.status, got, want)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def measured_blast(session: aiohttp.ClientSession, target: Target, n: int, concurrency: int,
                         stream: bool = False) -> Round:
    cores = os.sched_getaffinity(target.pid)
    before = snap(target.pid, cores)
    await blast(session, target, n, concurrency, stream)
    return before, snap(target.pid, cores)


async def surfaces(session: aiohttp.ClientSession, targets: list[Target], cfg: Config) -> Json:
    """Gateway CPU ms per request of each surface, non-stream and stream: warm-up, then
    ``cfg.sat_rounds`` bursts per surface in rotating order (noise hits all alike)."""
    out: Json = {}
    for stream in (False, True):
        n = cfg.sat_n // (2 if stream else 1)
        for target in targets:
            await blast(session, target, cfg.sat_warmup // 2, cfg.concurrency, stream)
        per_round = n // cfg.sat_rounds
        rounds: dict[str, list[Round]] = {t.name: [] for t in targets}
        for i in range(cfg.sat_rounds):
            for target in targets[i % len(targets):] + targets[:i % len(targets)]:
                rounds[target.name].append(await measured_blast(session, target, per_round, cfg.concurrency,
                                                                stream))
        mode = "stream" if stream else "non_stream"
        out[mode] = {name: asdict(Saturation.from_rounds(r, per_round)) for name, r in rounds.items()}
        chat = out[mode]["chat"]["server_cpu_ms_per_req_schedstat"]
        out[mode]["ratio_to_chat"] = {name: s["server_cpu_ms_per_req_schedstat"] / chat if chat else None
                                      for name, s in out[mode].items() if name != "chat"}
    return out


async def saturate(session: aiohttp.ClientSession, direct: Target, gateway: Target,
                   cfg: Config, stream: bool = False) -> tuple[Saturation, Saturation]:
    """Warm both up, then ``cfg.sat_rounds`` bursts each, alternating in ABBA order so
    noise (other work on the machine) hits both alike; totals are summed over rounds.
    Streams: half as many requests (each is several times the work)."""
    share = 2 if stream else 1
    for target in (direct, gateway):
        await blast(session, target, cfg.sat_warmup // share, cfg.concurrency, stream)
    per_round = cfg.sat_n // share // cfg.sat_rounds
    rounds: dict[str, list[Round]] = {direct.name: [], gateway.name: []}
    for i in range(cfg.sat_rounds):
        for target in (direct, gateway) if i % 2 == 0 else (gateway, direct):
            rounds[target.name].append(await measured_blast(session, target, per_round, cfg.concurrency, stream))
    return (Saturation.from_rounds(rounds[direct.name], per_round),
            Saturation.from_rounds(rounds[gateway.name], per_round))


async def phase(name: str, work: Awaitable[T]) -> T:
    print(f"  … {name}", file=sys.stderr, flush=True)
    try:
        async with asyncio.timeout(PHASE_LIMIT_S) as limit:
            return await work
    except TimeoutError:
        if limit.expired():
            raise BenchAbort(f"phase {name!r} took more than {PHASE_LIMIT_S:g} s; aborting") from None
        raise BenchAbort(f"phase {name!r}: a request timed out") from None
    except aiohttp.ClientError as exc:
        raise BenchAbort(f"phase {name!r}: request failed: {exc.__class__.__name__}: {exc}") from None


async def wait_ready(session: aiohttp.ClientSession, url: str, proc: Proc) -> float:
    """Poll ``url`` until it answers 200; seconds waited. Aborts if ``proc`` exits."""
    start = time.monotonic()
    for _ in range(int(READY_LIMIT_S / 0.02)):
        if proc.popen.poll() is not None:
            raise BenchAbort(f"{proc.name} exited with code {proc.popen.returncode} before it was ready")
        try:
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=1)) as resp:
                await resp.read()
                if resp.status == 200:
                    return time.monotonic() - start
        except (aiohttp.ClientError, TimeoutError):
            pass
        if time.monotonic() - start > READY_LIMIT_S:
            break
        await asyncio.sleep(0.02)
    raise BenchAbort(f"{proc.name} not ready at {url} within {READY_LIMIT_S:g} s")


# -- statistics ------------------------------------------------------------------------

def percentile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    pos = (len(sorted_values) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def summary_ms(ns: list[int]) -> dict[str, float]:
    ms = sorted(v / 1e6 for v in ns)
    return {f"p{q}": percentile(ms, q) for q in (50, 90, 99)} | {"mean": sum(ms) / len(ms)}


def paired_median_ms(a: list[int], b: list[int]) -> float:
    """Median of per-pair differences b[i] - a[i] (robust to drift between pairs)."""
    diffs = sorted((y - x) / 1e6 for x, y in zip(a, b, strict=True))
    return percentile(diffs, 50)


def added(direct: dict[str, float], gateway: dict[str, float]) -> dict[str, float]:
    return {k: gateway[k] - direct[k] for k in ("p50", "p99")}


# -- the run ---------------------------------------------------------------------------

async def latency_phases(session: aiohttp.ClientSession, direct: Target, gateway: Target,
                         cfg: Config) -> Json:
    n, warm = cfg.latency_n, cfg.latency_warmup
    d_ns, g_ns = await phase("concurrency 1, non-stream",
                             interleaved(lambda t: timed_json(session, t), direct, gateway, n, warm))
    d_st, g_st = await phase("concurrency 1, stream",
                             interleaved(lambda t: timed_stream(session, t), direct, gateway, n, warm))
    d, g = summary_ms(d_ns), summary_ms(g_ns)
    d_ttfb, g_ttfb = summary_ms([x[0] for x in d_st]), summary_ms([x[0] for x in g_st])
    d_tot, g_tot = summary_ms([x[1] for x in d_st]), summary_ms([x[1] for x in g_st])
    return {
        "non_stream": {"direct": d, "gateway": g, "added": added(d, g),
                       "added_paired_median": paired_median_ms(d_ns, g_ns)},
        "stream": {"ttfb": {"direct": d_ttfb, "gateway": g_ttfb, "added": added(d_ttfb, g_ttfb)},
                   "total": {"direct": d_tot, "gateway": g_tot, "added": added(d_tot, g_tot)}},
    }


async def measure(direct: Target, gateway: Target, procs: dict[str, Proc], cfg: Config, opts: Options) -> Json:
    """Sections [1]-[3] and [5] (the ones ``opts.sections`` names) through one aiohttp session."""
    connector = aiohttp.TCPConnector(limit=4 * cfg.concurrency, keepalive_timeout=120)
    timeout = aiohttp.ClientTimeout(total=30)
    out: Json = {}
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        out["ready"] = {"mock_s": await wait_ready(session, direct.base + "/v1/models", procs["mock"]),
                        "gateway_s": await wait_ready(session, gateway.base + "/healthz", procs["gateway"])}
        if "latency" in opts.sections:
            out.update(await latency_phases(session, direct, gateway, cfg))
        if "saturation" in opts.sections:
            for key, stream in (("saturation", False), ("saturation_stream", True)):
                what = "stream" if stream else "non-stream"
                d, g = await phase(f"saturation, {what}, direct and gateway alternating",
                                   saturate(session, direct, gateway, cfg, stream))
                out[key] = saturation_summary(d, g, cfg)
        if "surfaces" in opts.sections:
            targets = surface_targets(int(gateway.base.rsplit(":", 1)[1]), gateway.pid, gateway.stream_want)
            out["surfaces"] = await phase("surfaces: chat, messages, responses", surfaces(session, targets, cfg))
    return out


async def measure_all(setup: Setup, direct: Target, gateway: Target, cfg: Config, opts: Options) -> Json:
    """Every section ``opts.sections`` names; [6] and [7] live in ``overhead_modes``."""
    import overhead_modes  # here, not at the top: it imports this module

    out = await measure(direct, gateway, setup.procs, cfg, opts)
    if "open" in opts.sections:
        out["open_loop"] = await overhead_modes.open_loop(direct, gateway, setup.procs["mock"].popen.pid,
                                                          opts.rates, opts.open_seconds)
    if "workers" in opts.sections:
        run = overhead_modes.WorkersRun(gateway, setup.procs["mock"].popen.pid, setup.policy, setup.tmp,
                                        setup.procs, gateway_env(opts), opts.workers, setup.plan, cfg)
        out["workers"] = await overhead_modes.workers_section(run)
    return out


def saturation_summary(direct: Saturation, gateway: Saturation, cfg: Config) -> Json:
    def ratio(g: float, d: float) -> float | None:
        return g / d if d > 0 else None

    return {"concurrency": cfg.concurrency, "direct": asdict(direct), "gateway": asdict(gateway),
            "cpu_ratio_gateway_over_mock": ratio(gateway.server_cpu_ms_per_req, direct.server_cpu_ms_per_req),
            "cpu_ratio_schedstat": ratio(gateway.server_cpu_ms_per_req_schedstat,
                                         direct.server_cpu_ms_per_req_schedstat),
            "gateway_capacity_req_per_s": 1000 / gateway.server_cpu_ms_per_req
            if gateway.server_cpu_ms_per_req > 0 else 0.0}


@dataclass(frozen=True)
class Setup:
    """What a run started: its temporary directory, the policy, the core plan, the processes."""

    tmp: Path
    policy: Path
    plan: CorePlan
    procs: dict[str, Proc]


def gateway_env(opts: Options) -> dict[str, str]:
    """The gateway's extra environment: ``--gateway-env`` pairs, and ``--gateway-src`` first on
    ``PYTHONPATH`` (before the editable install, so ``router`` etc. are imported from there)."""
    env = dict(opts.gateway_env)
    if opts.gateway_src:
        rest = env.get("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (opts.gateway_src, rest) if p)
    return env


def gateway_code(env: dict[str, str]) -> Json:
    """Where the gateway's ``router`` package is imported from with ``env`` (as the ``switchyard``
    script does: ``-P``, no current directory on the path), and that tree's git commit."""
    probe = subprocess.run([sys.executable, "-P", "-c", "import router; print(router.__file__)"],
                           env={**os.environ, **env}, cwd=ROOT, capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        raise BenchAbort(f"the gateway's code does not import with {env}:\n{probe.stderr[-2000:]}")
    tree = Path(probe.stdout.strip()).parent.parent
    return {"router": probe.stdout.strip(), **git_state(tree)}


def git_state(tree: Path) -> Json:
    """``{"commit": short hash, "modified": files changed against it}`` of a git work tree, or {}."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", "--no-optional-locks", "-C", str(tree), *args], capture_output=True,
                              text=True, timeout=30)
        return done.stdout if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD").strip()
    if not commit:
        return {}
    return {"commit": commit, "modified": len(git("status", "--porcelain", "--untracked-files=no").splitlines())}


def start_processes(tmp: Path, plan: CorePlan, procs: dict[str, Proc], opts: Options) -> tuple[int, int, Path]:
    """The mock (``--stream-chunks``) and the pinned 1-worker gateway; (mock port, gateway port, policy)."""
    gw_cores, client_cores = plan if plan else (None, None)
    if client_cores:
        os.sched_setaffinity(0, client_cores)  # this load client
    mock_port, gw_port = free_port(), free_port()
    procs["mock"] = spawn("mock", [sys.executable, str(BENCH_DIR / "mock_upstream.py"), "--host", HOST,
                                   "--port", str(mock_port), "--chunks", str(opts.stream_chunks)],
                          client_cores, tmp / "mock.log")
    policy = write_policy(tmp, mock_port)
    procs["gateway"] = spawn("gateway", gateway_argv(policy, gw_port), gw_cores, tmp / "gateway.log",
                             gateway_env(opts))
    return mock_port, gw_port, policy


def run(cfg: Config, opts: Options) -> Json:
    loadavg = float(Path("/proc/loadavg").read_text().split()[0])
    plan = cpu_plan()
    code = gateway_code(gateway_env(opts))
    with tempfile.TemporaryDirectory(prefix="switchyard-bench-") as tmp, processes() as procs:
        mock_port, gw_port, policy = start_processes(Path(tmp), plan, procs, opts)
        want = sse_body(opts.stream_chunks)
        direct = make_target("direct", mock_port, "mock-model", procs["mock"].popen.pid, want)
        gateway = make_target("gateway", gw_port, "bench", procs["gateway"].popen.pid, want)
        results = asyncio.run(measure_all(Setup(Path(tmp), policy, plan, procs), direct, gateway, cfg, opts))
        results["gateway_peak_rss_mb"] = peak_rss_kb(gateway.pid) / 1024
        results["machine"] = machine(plan, procs, loadavg)
        results["gateway_code"] = code
        return results


@contextmanager
def processes() -> Iterator[dict[str, Proc]]:
    """The processes a bench starts (name → ``Proc``): all stopped at the end, also on
    errors and Ctrl-C; a ``BenchAbort`` gains the tails of their logs."""
    procs: dict[str, Proc] = {}
    try:
        yield procs
    except BenchAbort as exc:
        tails = "\n".join(t for t in (log_tail(p) for p in procs.values()) if t)
        raise BenchAbort(f"{exc}\n{tails}") from None
    finally:
        stop_all(procs)


def stop_all(procs: dict[str, Proc]) -> None:
    """Stop every started process; a second Ctrl-C waits until that is done."""
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        for proc in reversed(procs.values()):
            stop(proc)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def machine(plan: CorePlan, procs: dict[str, Proc], loadavg: float) -> Json:
    return {
        "cpus": os.cpu_count(), "pinned": plan is not None,
        "gateway_cpus": sorted(os.sched_getaffinity(procs["gateway"].popen.pid)),
        "mock_and_client_cpus": sorted(os.sched_getaffinity(0)),
        "python": platform.python_version(), "aiohttp": aiohttp.__version__,
        "platform": platform.platform(), "clk_tck": CLK_TCK, "loadavg_before": loadavg,
    }


# -- report ----------------------------------------------------------------------------

def _row(label: str, values: list[float | None], width: int = 10) -> str:
    cells = "".join(f"{'' if v is None else f'{v:.3f}':>{width}}" for v in values)
    return f"  {label:<22}{cells}"


def report(results: Json, cfg: Config, opts: Options, quick: bool) -> str:
    import overhead_modes  # here, not at the top: it imports this module

    lines = _header(results, opts, quick)
    if "non_stream" in results:
        lines += _latency_lines(results, cfg)
    if "saturation" in results:
        lines += _saturation_lines(results["saturation"], results["saturation_stream"], cfg, opts)
    lines += ["", f"[4] gateway peak RSS (VmHWM): {results['gateway_peak_rss_mb']:.1f} MB", ""]
    if "surfaces" in results:
        lines += _surface_lines(results["surfaces"], cfg)
    if "open_loop" in results:
        lines += overhead_modes.open_lines(results["open_loop"]) + [""]
    if "workers" in results:
        lines += overhead_modes.workers_lines(results["workers"]) + [""]
    lines += verdict_lines(results["targets"])
    return "\n".join(lines)


def _header(results: Json, opts: Options, quick: bool) -> list[str]:
    m, code = results["machine"], results["gateway_code"]
    pin = (f"gateway on cpu {m['gateway_cpus']}, mock + client on cpu {m['mock_and_client_cpus']}"
           if m["pinned"] else "NOT pinned (fewer than 2 CPUs)")
    commit = (f" (commit {code['commit']}" + (f", {code['modified']} files modified)" if code["modified"] else ")")
              if "commit" in code else "")
    env = " ".join(f"{k}={v}" for k, v in opts.gateway_env) or "(none)"
    return [f"Switchyard gateway overhead ({'quick' if quick else 'full'} run; sections: {', '.join(opts.sections)})",
            f"  {m['cpus']} CPUs; {pin}; Python {m['python']}, aiohttp {m['aiohttp']}",
            f"  1-min load average before the run: {m['loadavg_before']:.2f}"
            " (anything else running skews the numbers)",
            f"  gateway code: {code['router']}{commit}"
            + (f" [--gateway-src {opts.gateway_src}]" if opts.gateway_src else ""),
            f"  gateway extra environment: {env}; streams: {opts.stream_chunks} chunk events + [DONE]",
            ""]


def _latency_lines(r: Json, cfg: Config) -> list[str]:
    ns, st = r["non_stream"], r["stream"]
    head = f"N={cfg.latency_n} per target, {cfg.latency_warmup} warm-up excluded, interleaved"
    lines = [f"[1] concurrency 1, non-stream ({head})",
             f"  {'latency (ms)':<22}{'p50':>10}{'p90':>10}{'p99':>10}{'mean':>10}"]
    for who in ("direct", "gateway"):
        s = ns[who]
        lines.append(_row(who, [s["p50"], s["p90"], s["p99"], s["mean"]]))
    lines.append(_row("added (gw - direct)", [ns["added"]["p50"], None, ns["added"]["p99"]]))
    lines.append(_row("added, paired median", [ns["added_paired_median"]]))
    lines += ["", f"[2] concurrency 1, stream ({head})",
              f"  {'(ms)':<22}{'TTFB p50':>10}{'TTFB p99':>10}{'total p50':>10}{'total p99':>10}"]
    for who in ("direct", "gateway", "added"):
        t, tot = st["ttfb"][who], st["total"][who]
        label = "added (gw - direct)" if who == "added" else who
        lines.append(_row(label, [t["p50"], t["p99"], tot["p50"], tot["p99"]]))
    return lines


def _saturation_lines(s: Json, st: Json, cfg: Config, opts: Options) -> list[str]:
    lines = ["", f"[3] saturation: concurrency {s['concurrency']}, {cfg.sat_n} requests per target "
                 f"({cfg.sat_n // 2} for {opts.stream_chunks}-chunk streams) in {cfg.sat_rounds} alternating "
                 f"bursts ({cfg.sat_warmup} warm-up excluded)",
             f"  {'':<22}{'req/s':>8}{'CPU ms/req':>12}{'ticks':>7}{'ms/req':>9}{'process':>9}"
             f"{'its core':>10}{'client core':>13}",
             f"  {'':<22}{'':>8}{'(ticks)':>12}{'':>7}{'(ns)':>9}{'% core':>9}{'% busy':>10}{'% busy':>13}"]
    rows = (("direct: mock process", s["direct"]), ("gateway process", s["gateway"]),
            ("stream: mock process", st["direct"]), ("stream: gateway", st["gateway"]))
    for label, x in rows:
        lines.append(f"  {label:<22}{x['req_per_s']:>8.0f}{x['server_cpu_ms_per_req']:>12.3f}"
                     f"{x['server_cpu_ticks']:>7d}{x['server_cpu_ms_per_req_schedstat']:>9.3f}"
                     f"{x['server_busy_pct']:>9.0f}{x['core_busy_pct_all']:>10.0f}"
                     f"{x['client_core_busy_pct_all']:>13.0f}")
    few = min(x["server_cpu_ticks"] for _, x in rows) < MIN_PRECISE_TICKS
    lines += [f"  CPU/request, gateway ÷ mock: non-stream {_ratio(s['cpu_ratio_gateway_over_mock'])} from ticks"
              f" (1 tick = {1000 / CLK_TCK:g} ms), {_ratio(s['cpu_ratio_schedstat'])} from ns; stream "
              f"{_ratio(st['cpu_ratio_schedstat'])} from ns"
              + (f"  [< {MIN_PRECISE_TICKS} ticks: trust the ns figure]" if few else ""),
              f"  gateway capacity on one full core ≈ {s['gateway_capacity_req_per_s']:.0f} req/s non-stream, "
              f"{st['gateway_capacity_req_per_s']:.0f} streams/s (= 1000 / CPU ms per request, ticks)",
              f"  req/s per burst, min-max: gateway {_span(s['gateway'])}, direct {_span(s['direct'])}; "
              f"stream gateway {_span(st['gateway'])}, direct {_span(st['direct'])}",
              f"  load client (aiohttp): {s['gateway']['client_cpu_ms_per_req']:.3f} CPU ms/req, "
              f"{st['gateway']['client_cpu_ms_per_req']:.3f} per stream"]
    return lines


def _surface_lines(s: Json, cfg: Config) -> list[str]:
    lines = [f"[5] surfaces: gateway CPU ms per request (ns), concurrency {cfg.concurrency}, rotating bursts",
             f"  {'':<22}{'non-stream':>12}{'÷ chat':>9}{'stream':>12}{'÷ chat':>9}"]
    for name in ("chat", "messages", "responses"):
        ns, st = s["non_stream"], s["stream"]
        r_ns, r_st = ns["ratio_to_chat"].get(name, 1.0), st["ratio_to_chat"].get(name, 1.0)
        lines.append(f"  {name:<22}{ns[name]['server_cpu_ms_per_req_schedstat']:>12.3f}{r_ns:>9.2f}"
                     f"{st[name]['server_cpu_ms_per_req_schedstat']:>12.3f}{r_st:>9.2f}")
    worst = max(r for mode in ("non_stream", "stream") for r in s[mode]["ratio_to_chat"].values())
    lines += [f"  target: each surface within {SURFACE_CPU_RATIO:.1f}x chat's CPU per request -> "
              f"{'PASS' if worst <= SURFACE_CPU_RATIO else 'FAIL'} (worst {worst:.2f}x)", ""]
    return lines


def _span(x: Json) -> str:
    return f"{x['req_per_s_min_round']:.0f}-{x['req_per_s_max_round']:.0f}"


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}x"


@dataclass(frozen=True)
class Goal:
    """One target of issue 16 and what this run measured for it."""

    what: str
    value: float
    limit: float
    unit: str
    at_least: bool = False  # the value must reach the limit (else: stay at or under it)
    note: str = ""

    @property
    def passed(self) -> bool:
        return self.value >= self.limit if self.at_least else self.value <= self.limit


def targets(results: Json, opts: Options) -> list[Goal]:
    """The targets of issue 16 that the sections run measured (a section not run: no line)."""
    goals: list[Goal] = []
    chunks = "" if opts.stream_chunks == 20 else f"; the target is for 20 chunks, this run sent {opts.stream_chunks}"
    if "saturation" in results:
        goals += [Goal("gateway CPU per non-stream request (saturation, pinned, ns)",
                       results["saturation"]["gateway"]["server_cpu_ms_per_req_schedstat"], 0.25, "ms"),
                  Goal(f"gateway CPU per {opts.stream_chunks}-chunk stream (saturation, pinned, ns)",
                       results["saturation_stream"]["gateway"]["server_cpu_ms_per_req_schedstat"], 0.6, "ms",
                       note=chunks.lstrip("; "))]
    if "non_stream" in results:
        goals += [Goal("added p50 at concurrency 1, non-stream", results["non_stream"]["added"]["p50"],
                       TARGET_ADDED_P50_MS, "ms"),
                  Goal("added stream TTFB p50 at concurrency 1", results["stream"]["ttfb"]["added"]["p50"], 0.4, "ms")]
    open20 = [c for c in results.get("open_loop", {}).get("cases", []) if c["rate"] == 20 and not c["stream"]]
    if open20:
        goals.append(Goal("added p50 at 20 req/s open loop, non-stream", open20[0]["added"]["p50"], 1.0, "ms",
                          note=f"p99 {open20[0]['added']['p99']:.3f} ms"))
    return goals + _worker_goals(results)


def _worker_goals(results: Json) -> list[Goal]:
    rss = [results["gateway_peak_rss_mb"]]
    goals: list[Goal] = []
    if "workers" in results:
        w = results["workers"]
        ns = w["modes"]["non_stream"]
        rss += [x["peak_rss_mb"] for x in ns["per_worker"]]
        goals.append(Goal(f"{w['workers']} workers ÷ 1 worker, non-stream throughput", ns["throughput_ratio"], 1.8,
                          "x", at_least=True,
                          note=f"with a core per worker: {ns['capacity']['as_shared_ratio']:.2f}x as the requests were"
                          f" shared, {ns['capacity']['projected_ratio']:.2f}x if shared evenly"
                          + ("" if w["workers"] == 2 else "; the target is for 2 workers")))
    return goals + [Goal("peak RSS per worker (VmHWM)", max(rss), 80.0, "MiB")]


def verdict_lines(goals: list[Json]) -> list[str]:
    """One line per target: PASS/FAIL (reported only, the exit status stays 0)."""
    lines = ["targets (issue 16):"]
    for g in goals:
        sign = ">=" if g["at_least"] else "<="
        verdict = "PASS" if g["passed"] else "FAIL"
        note = f"; {g['note']}" if g["note"] else ""
        lines.append(f"  {g['what']} {sign} {g['limit']:g} {g['unit']} -> {verdict} "
                     f"({g['value']:.3f} {g['unit']}{note})")
    return lines


# -- entry point -----------------------------------------------------------------------

def _interrupt(signum: int, frame: object) -> None:
    """Raise right where we are (not via asyncio task cancellation, which library code can
    swallow), so the finally blocks stop every process we started."""
    raise KeyboardInterrupt


def _install_signal_handlers() -> None:
    signal.signal(signal.SIGTERM, _interrupt)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # leave an ignored SIGINT ignored
        signal.signal(signal.SIGINT, _interrupt)


def bench_main(run: Callable[[], Json], report: Callable[[Json], str], json_path: Path | None) -> int:
    """A bench's ``main`` after its arguments: run (every process stopped, also on Ctrl-C
    and SIGTERM), print the report, write the JSON; exit 1 on ``BenchAbort``, 130 on Ctrl-C."""
    _install_signal_handlers()
    try:
        results = run()
    except BenchAbort as exc:
        print(f"benchmark aborted: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; every started process was stopped", file=sys.stderr)
        return 130
    print(report(results))
    if json_path:
        json_path.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests (a smoke run, a few seconds)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the numbers as JSON here")
    parser.add_argument("--only", metavar="SECTION[,SECTION]",
                        help=f"run only these sections: {', '.join(SECTIONS)} (default: all but workers; "
                             "workers as well with --workers N > 1)")
    parser.add_argument("--stream-chunks", type=int, default=Options.stream_chunks, metavar="N",
                        help="chunk events per streamed answer, role and finish included (default 20; "
                             "5 is the stream of runs before this option)")
    parser.add_argument("--rates", default="20,200", metavar="R[,R]", help="[6] open-loop request rates, req/s")
    parser.add_argument("--open-seconds", type=float, metavar="S",
                        help="[6] seconds per open-loop burst, 4 bursts per rate and mode (default 3, --quick 1)")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="[7] also measure the gateway with N worker processes, not pinned (N > 1)")
    parser.add_argument("--gateway-src", type=Path, metavar="DIR",
                        help="run the gateway from the code in DIR (PYTHONPATH=DIR; e.g. a git worktree)")
    parser.add_argument("--gateway-env", action="append", default=[], metavar="KEY=VALUE",
                        help="add to the gateway's environment (repeatable), e.g. SWITCHYARD_LOOP=asyncio")
    return parser


def options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Options:
    """``Options`` from the parsed command line; ``parser.error`` (exit 2) on a bad value."""
    default = [s for s in SECTIONS if s != "workers" or args.workers > 1]
    sections = [s.strip() for s in args.only.split(",") if s.strip()] if args.only else default
    if unknown := sorted(set(sections) - set(SECTIONS)):
        parser.error(f"--only: unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    if "workers" in sections and args.workers < 2:
        parser.error("the workers section needs --workers N with N > 1")
    if args.stream_chunks < MIN_CHUNKS:
        parser.error(f"--stream-chunks must be at least {MIN_CHUNKS}")
    try:
        rates = tuple(float(r) for r in args.rates.split(",") if r.strip())
    except ValueError:
        parser.error(f"--rates: not a list of numbers: {args.rates!r}")
    seconds = args.open_seconds if args.open_seconds is not None else (1.0 if args.quick else 3.0)
    if not rates or min(rates) <= 0 or not 0 < seconds <= PHASE_LIMIT_S / 5 or max(rates) * seconds > 20_000:
        parser.error(f"--rates and --open-seconds: positive, at most {PHASE_LIMIT_S / 5:g} s per burst "
                     "and 20000 requests per burst")
    if bad := [e for e in args.gateway_env if "=" not in e or not e.split("=", 1)[0]]:
        parser.error(f"--gateway-env wants KEY=VALUE, got {bad[0]!r}")
    if args.gateway_src and not (args.gateway_src / "router").is_dir():
        parser.error(f"--gateway-src: no router/ package in {args.gateway_src}")
    return Options(tuple(s for s in SECTIONS if s in sections), args.stream_chunks, rates, seconds, args.workers,
                   str(args.gateway_src.resolve()) if args.gateway_src else None,
                   tuple((k, v) for k, v in (e.split("=", 1) for e in args.gateway_env)))


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    opts = options(parser, args)
    cfg = QUICK if args.quick else FULL

    def run_doc() -> Json:
        doc = {"config": asdict(cfg), "options": asdict(opts), "quick": args.quick,
               "target_added_p50_ms": TARGET_ADDED_P50_MS, **run(cfg, opts)}
        doc["targets"] = [{**asdict(g), "passed": g.passed} for g in targets(doc, opts)]
        return doc

    return bench_main(run_doc, lambda doc: report(doc, cfg, opts, args.quick), args.json)


if __name__ == "__main__":
    # Run the module imported as ``overhead``, not this ``__main__`` copy: ``overhead_modes``
    # imports ``overhead``, and its BenchAbort must be the one bench_main() catches.
    import overhead

    raise SystemExit(overhead.main())
