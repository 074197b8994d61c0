"""Sections [6] (open loop) and [7] (several workers) of ``bench/overhead.py``, and the raw
HTTP/1.1 load client both use.

- ``RawConn``: one keep-alive connection on ``asyncio.Protocol`` that carries one request at a
  time, takes its timestamps in ``data_received`` (first body byte, answer complete) and checks
  every answer byte for byte (chunked bodies decoded first). It costs a fraction of aiohttp's
  client CPU, which matters when the client shares two cores with the mock and the workers.
- ``ClosedLoop`` / ``OpenLoop``: what a ``RawPool`` of those connections sends: each connection
  its next request as soon as its answer is in (saturation), or requests at scheduled times
  whatever the answers do (open loop: latency counts from the scheduled time, so a slow answer
  cannot delay the next measurement and hide itself: no coordinated omission).
- ``open_loop()`` [6], ``workers_section()`` [7], and their report lines.

It imports ``overhead`` (targets, processes, CPU counters, statistics); ``overhead`` imports
it only inside the functions that run or report these sections.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from collections import Counter, deque
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar
from urllib.parse import SplitResult, urlsplit

import aiohttp
from mock_upstream import CHAT_BODY, content_length
from overhead import (
    CLK_TCK,
    HOST,
    READY_LIMIT_S,
    BenchAbort,
    Config,
    CorePlan,
    Json,
    Proc,
    Target,
    added,
    core_ticks,
    cpu_ns,
    free_port,
    gateway_argv,
    make_target,
    peak_rss_kb,
    percentile,
    phase,
    spawn,
    stop,
    summary_ms,
    wait_ready,
)

T = TypeVar("T")
OPEN_CONNECTIONS = 16  # [6]: the client's pool, as a typical SDK keeps
OPEN_WARMUP = 64       # [6]: closed-loop requests per target and mode before the bursts
START_LEAD_S = 0.02    # [6]: a burst's first send is scheduled this long after it is set up
# A send this long after its scheduled time counts as late. asyncio's timers fire up to ~1 ms
# after their time (epoll waits in whole ms), so smaller lags are the clock, not a busy client.
LATE_MS = 2.0
IDLE_NS = 20_000_000   # [7]: a worker that used less CPU than this in 0.2 s has finished starting


# -- the raw client --------------------------------------------------------------------

class Owner(Protocol):
    """What a ``RawConn`` reports its answer to: the run that sent the request."""

    def done(self, conn: RawConn, tag: int, first_ns: int, end_ns: int) -> None: ...

    def fail(self, message: str) -> None: ...


class RawConn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 client connection carrying one request at a time; answers with
    ``Content-Length`` or chunked bodies, checked against the expected bytes."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = 0       # the local port: which gateway worker holds the other end (/proc/net/tcp)
        self.completed = 0  # answers received and checked on this connection
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._owner: Owner | None = None
        self._tag = 0
        self._want = b""
        self._status = 0
        self._first = 0
        self._body_at = -1  # where the body starts in _buf; -1: the head is not complete yet
        self._length = 0    # Content-Length; -1: chunked
        self._pos = 0       # chunked: where the next chunk-size line starts
        self._parts: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self.port = int(transport.get_extra_info("sockname")[1])

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        owner, self._owner = self._owner, None
        if owner is not None:
            owner.fail(f"{self.name}: the connection closed before the answer was complete ({exc})")

    def send(self, owner: Owner, tag: int, request: bytes, want: bytes) -> None:
        if self._transport is None:
            owner.fail(f"{self.name}: the keep-alive connection was closed (by the server?)")
            return
        self._owner, self._tag, self._want = owner, tag, want
        self._first, self._body_at, self._parts = 0, -1, []
        self._transport.write(request)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        self._buf += data
        if self._owner is None:
            return  # bytes nobody asked for: they spoil the next answer, whose check then fails
        try:
            if self._body_at < 0 and not self._head():
                return
            if not self._first and len(self._buf) > self._body_at:
                self._first = now
            body = self._body()
        except ValueError as exc:
            self._owner.fail(f"{self.name}: unreadable HTTP answer ({exc}): {bytes(self._buf[:500])!r}")
            return
        if body is not None:
            self._finish(body, now)

    def _head(self) -> bool:
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = bytes(self._buf[:end]).lower()
        self._status = int(head[9:12]) if head.startswith(b"http/1.1 ") else 0
        self._body_at = self._pos = end + 4
        length = content_length(head)  # None: chunked (no Content-Length: an empty body)
        self._length = -1 if length is None else length
        return True

    def _body(self) -> bytes | None:
        """The whole body once it is in (and dropped from the buffer); ``None`` until then."""
        if self._length >= 0:
            end = self._body_at + self._length
            if len(self._buf) < end:
                return None
            body = bytes(self._buf[self._body_at:end])
        else:
            end = self._dechunk()
            if end < 0:
                return None
            body = b"".join(self._parts)
        del self._buf[:end]
        return body

    def _dechunk(self) -> int:
        """Decode the chunks that are complete; where the answer ends once the last-chunk
        marker is in (no trailers), else -1."""
        buf, pos = self._buf, self._pos
        while (eol := buf.find(b"\r\n", pos)) >= 0:
            size = int(bytes(buf[pos:eol]).split(b";", 1)[0], 16)
            if size == 0:
                if len(buf) < eol + 4:
                    break
                return eol + 4
            stop_at = eol + 2 + size
            if len(buf) < stop_at + 2:
                break
            self._parts.append(bytes(buf[eol + 2:stop_at]))
            pos = stop_at + 2
        self._pos = pos
        return -1

    def _finish(self, body: bytes, now: int) -> None:
        owner, self._owner = self._owner, None
        assert owner is not None
        if self._status != 200 or body != self._want or self._buf:
            extra = f" (and {len(self._buf)} bytes after it)" if self._buf else ""
            owner.fail(f"{self.name} answered HTTP {self._status}, not the mock's fixed answer{extra}:\n"
                       + body[:2000].decode("utf-8", "replace"))
            return
        self.completed += 1
        owner.done(self, self._tag, self._first, now)


def _request(url: SplitResult, body: bytes) -> bytes:
    return (f"POST {url.path} HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


class Run:
    """One burst of requests over a pool; ``finished`` resolves when it is over (or failed)."""

    def __init__(self, request: bytes, want: bytes) -> None:
        self.request, self.want = request, want
        self.finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def fail(self, message: str) -> None:
        if not self.finished.done():
            self.finished.set_exception(BenchAbort(message))


class ClosedLoop(Run):
    """``total`` requests; each connection sends its next one as soon as its answer is in."""

    def __init__(self, request: bytes, want: bytes, total: int) -> None:
        super().__init__(request, want)
        self.left, self.in_flight = total, 0

    def start(self, conns: list[RawConn]) -> None:
        if self.left <= 0:
            self.finished.set_result(None)
        for conn in conns[:self.left]:
            self._send(conn)

    def _send(self, conn: RawConn) -> None:
        self.left -= 1
        self.in_flight += 1
        conn.send(self, 0, self.request, self.want)

    def done(self, conn: RawConn, tag: int, first_ns: int, end_ns: int) -> None:
        self.in_flight -= 1
        if self.finished.done():
            return
        if self.left > 0:
            self._send(conn)
        elif self.in_flight == 0:
            self.finished.set_result(None)


class OpenLoop(Run):
    """Request ``i`` is due at ``offsets_ns[i]`` after the start, whatever the answers do. It
    goes out on the connection idle longest (round robin over the pool); when every connection
    is busy it waits for the first one free ("queued"). All times are ``time.monotonic_ns``,
    the clock of ``loop.call_at``."""

    def __init__(self, request: bytes, want: bytes, conns: list[RawConn], offsets_ns: list[int]) -> None:
        super().__init__(request, want)
        n = len(offsets_ns)
        self.offsets = offsets_ns
        self.sched, self.sent, self.first, self.end = [0] * n, [0] * n, [0] * n, [0] * n
        self.queued = self.completed = 0
        self._idle = deque(conns)
        self._backlog: deque[int] = deque()
        self._timers: list[asyncio.TimerHandle] = []

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        base = time.monotonic_ns() + int(START_LEAD_S * 1e9)
        for i, offset in enumerate(self.offsets):
            self.sched[i] = base + offset
            self._timers.append(loop.call_at((base + offset) / 1e9, self._due, i))

    def cancel(self) -> None:
        for timer in self._timers:
            timer.cancel()

    def _due(self, i: int) -> None:
        if self._idle:
            self._send(self._idle.popleft(), i)
        else:
            self.queued += 1
            self._backlog.append(i)

    def _send(self, conn: RawConn, i: int) -> None:
        self.sent[i] = time.monotonic_ns()
        conn.send(self, i, self.request, self.want)

    def done(self, conn: RawConn, tag: int, first_ns: int, end_ns: int) -> None:
        self.first[tag], self.end[tag] = first_ns, end_ns
        self.completed += 1
        if self._backlog:
            self._send(conn, self._backlog.popleft())
        else:
            self._idle.append(conn)
        if self.completed == len(self.sched) and not self.finished.done():
            self.finished.set_result(None)


class RawPool:
    """``n`` keep-alive ``RawConn``s to one target and the raw requests to send on them."""

    def __init__(self, target: Target, conns: list[RawConn]) -> None:
        self.target, self.conns = target, conns
        url = urlsplit(target.url)
        self._requests = {False: _request(url, target.body), True: _request(url, target.stream_body)}
        self._wants = {False: CHAT_BODY, True: target.stream_want}

    @classmethod
    async def open(cls, target: Target, n: int) -> RawPool:
        loop = asyncio.get_running_loop()
        port = urlsplit(target.url).port or 80
        try:
            made = await asyncio.gather(*(loop.create_connection(lambda: RawConn(target.name), HOST, port)
                                          for _ in range(n)))
        except OSError as exc:
            raise BenchAbort(f"cannot connect to {target.name} at {HOST}:{port}: {exc}") from None
        return cls(target, [conn for _, conn in made])

    def close(self) -> None:
        for conn in self.conns:
            conn.close()

    async def closed(self, stream: bool, total: int) -> None:
        run = ClosedLoop(self._requests[stream], self._wants[stream], total)
        run.start(self.conns)
        await run.finished

    async def open_loop(self, stream: bool, offsets_ns: list[int]) -> OpenLoop:
        run = OpenLoop(self._requests[stream], self._wants[stream], self.conns, offsets_ns)
        run.start()
        try:
            await run.finished
        finally:
            run.cancel()
        return run


# -- CPU accounting --------------------------------------------------------------------

@dataclass(frozen=True)
class Usage:
    """Wall time, CPU time (schedstat ns) of each gateway process, the mock and this client,
    and the busy/total ticks of the cores: absolute at an instant, or spent over bursts."""

    wall_ns: int
    gateway_ns: tuple[int, ...]
    mock_ns: int
    client_ns: int
    cores: tuple[int, int]

    @classmethod
    def now(cls, gateway: list[int], mock: int, cores: set[int]) -> Usage:
        return cls(time.monotonic_ns(), tuple(cpu_ns(p) for p in gateway), cpu_ns(mock), cpu_ns(os.getpid()),
                   core_ticks(cores))

    @classmethod
    def zero(cls, processes: int) -> Usage:
        return cls(0, (0,) * processes, 0, 0, (0, 0))

    def _zip(self, other: Usage, sign: int) -> Usage:
        return Usage(self.wall_ns + sign * other.wall_ns,
                     tuple(a + sign * b for a, b in zip(self.gateway_ns, other.gateway_ns, strict=True)),
                     self.mock_ns + sign * other.mock_ns, self.client_ns + sign * other.client_ns,
                     (self.cores[0] + sign * other.cores[0], self.cores[1] + sign * other.cores[1]))

    def __add__(self, other: Usage) -> Usage:
        return self._zip(other, 1)

    def __sub__(self, other: Usage) -> Usage:
        return self._zip(other, -1)

    def per_request(self, requests: int) -> Json:
        """CPU ms per request of each party, throughput, and how busy the cores were (and how
        much of that was processes outside this bench: the machine is shared)."""
        tick_ns = 1e9 / CLK_TCK
        ours = sum(self.gateway_ns) + self.mock_ns + self.client_ns
        others = max(0.0, self.cores[0] * tick_ns - ours) / max(1.0, self.cores[1] * tick_ns)
        return {"requests": requests, "req_per_s": requests * 1e9 / max(1, self.wall_ns),
                "gateway_cpu_ms_per_req": sum(self.gateway_ns) / 1e6 / requests,
                "mock_cpu_ms_per_req": self.mock_ns / 1e6 / requests,
                "client_cpu_ms_per_req": self.client_ns / 1e6 / requests,
                "gateway_cores_used": sum(self.gateway_ns) / max(1, self.wall_ns),
                "cores_busy_pct": 100 * self.cores[0] / max(1, self.cores[1]), "others_pct": 100 * others}


async def metered(work: Awaitable[T], gateway: list[int], mock: int, cores: set[int]) -> tuple[T, Usage]:
    before = Usage.now(gateway, mock, cores)
    result = await work
    return result, Usage.now(gateway, mock, cores) - before


# -- [6] open loop ---------------------------------------------------------------------

async def open_loop(direct: Target, gateway: Target, mock_pid: int, rates: tuple[float, ...],
                    seconds: float) -> Json:
    """For each rate, non-stream and stream: warm-up, then 4 bursts of ``seconds`` at that rate
    (direct, gateway, gateway, direct), each with the same fixed-interval schedule."""
    machine = {"wake_cpu_ms": wake_cost_ms(), "gateway_idle_cpu_ms_per_s": await idle_cpu_ms_per_s(gateway.pid)}
    pools = [await RawPool.open(t, OPEN_CONNECTIONS) for t in (direct, gateway)]
    try:
        cases = []
        for rate in rates:
            for stream in (False, True):
                what = "stream" if stream else "non-stream"
                cases.append(await phase(f"open loop, {rate:g} req/s, {what}",
                                         _open_case(pools, rate, stream, seconds, mock_pid)))
    finally:
        for pool in pools:
            pool.close()
    return {"connections": OPEN_CONNECTIONS, "seconds_per_burst": seconds, "late_ms": LATE_MS,
            "warmup_per_target": OPEN_WARMUP, **machine, "cases": cases}


def wake_cost_ms(gap_s: float = 0.02, n: int = 20) -> dict[str, float]:
    """CPU ms this process spends on a 400-byte socketpair round trip, back to back and after
    sleeping ``gap_s``: what the machine charges a process for waking up. On a VM that can be
    ~0.1 ms (caches gone cold while the core was idle or ran others), and a request at a low rate
    pays it at every hop, in the gateway, the mock and this client alike."""
    a, b = socket.socketpair()
    try:
        def round_trips(count: int, gap: float) -> float:
            start = time.thread_time_ns()
            for _ in range(count):
                if gap:
                    time.sleep(gap)
                a.send(b"x" * 400)
                b.recv(1024)
            return (time.thread_time_ns() - start) / 1e6 / count

        return {"back_to_back": round_trips(500, 0.0), f"after_{gap_s * 1000:g}_ms_idle": round_trips(n, gap_s)}
    finally:
        a.close()
        b.close()


async def idle_cpu_ms_per_s(pid: int, seconds: float = 0.5) -> float:
    """CPU ms per second a process uses with no requests (its timers), for reading CPU per
    request at a low rate, where idle time is included."""
    before = cpu_ns(pid)
    await asyncio.sleep(seconds)
    return (cpu_ns(pid) - before) / 1e6 / seconds


async def _open_case(pools: list[RawPool], rate: float, stream: bool, seconds: float, mock_pid: int) -> Json:
    direct, gateway = pools
    n = max(2, round(rate * seconds))
    offsets = [round(i * 1e9 / rate) for i in range(n)]
    for pool in pools:
        await pool.closed(stream, OPEN_WARMUP)
    runs: dict[str, list[OpenLoop]] = {"direct": [], "gateway": []}
    use = {"direct": Usage.zero(1), "gateway": Usage.zero(1)}
    cores = os.sched_getaffinity(0)
    for who, pool in (("direct", direct), ("gateway", gateway), ("gateway", gateway), ("direct", direct)):
        run, spent = await metered(pool.open_loop(stream, offsets), [gateway.target.pid], mock_pid, cores)
        runs[who].append(run)
        use[who] += spent
    d, g = _open_side(runs["direct"], use["direct"], stream), _open_side(runs["gateway"], use["gateway"], stream)
    out: Json = {"rate": rate, "stream": stream, "requests_per_burst": n, "bursts_per_target": 2,
                 "direct": d, "gateway": g, "added": added(d["latency_ms"], g["latency_ms"])}
    if stream:
        out["ttfb_added"] = added(d["ttfb_ms"], g["ttfb_ms"])
    return out


def _open_side(runs: list[OpenLoop], use: Usage, stream: bool) -> Json:
    """One target's bursts: latency (and TTFB) from the scheduled times, how well the schedule
    was kept, and CPU per request at this rate (idle time between requests included)."""
    lag = sorted((x - s) / 1e6 for r in runs for s, x in zip(r.sched, r.sent, strict=True))
    spans = [(len(r.sent) - 1, (max(r.sent) - min(r.sent)) / 1e9) for r in runs]
    out: Json = {
        "sent": len(lag), "late": sum(x > LATE_MS for x in lag), "queued": sum(r.queued for r in runs),
        "send_lag_ms": {"p50": percentile(lag, 50), "p99": percentile(lag, 99), "max": lag[-1]},
        "achieved_req_per_s": sum(k for k, _ in spans) / max(1e-9, sum(s for _, s in spans)),
        "latency_ms": summary_ms([e - s for r in runs for s, e in zip(r.sched, r.end, strict=True)]),
        **{k: v for k, v in use.per_request(len(lag)).items() if k.endswith("_ms_per_req")},
    }
    if stream:
        out["ttfb_ms"] = summary_ms([f - s for r in runs for s, f in zip(r.sched, r.first, strict=True)])
    return out


def open_lines(r: Json) -> list[str]:
    lines = [f"[6] open loop: fixed-interval arrivals over {r['connections']} keep-alive connections (raw HTTP/1.1"
             f" client), {r['seconds_per_burst']:g} s bursts, direct/gateway/gateway/direct, same schedule;",
             "    latency from each request's scheduled send time to the end of its body (ms)",
             f"  {'req/s':>6} {'mode':<11}{'sent':>7}{'late':>7}{'queued':>7}{'lag p99':>8}{'direct':>8}"
             f"{'gateway':>8}{'added':>8}{'added':>8}{'TTFB+':>8}{'TTFB+':>8}{'gw CPU':>8}{'client':>8}",
             f"  {'':>6} {'':<11}{'':>7}{'':>7}{'':>7}{'':>8}{'p50':>8}{'p50':>8}{'p50':>8}{'p99':>8}{'p50':>8}"
             f"{'p99':>8}{'ms/req':>8}{'ms/req':>8}"]
    for c in r["cases"]:
        d, g = c["direct"], c["gateway"]
        ttfb = c.get("ttfb_added", {})
        cells = [max(d["send_lag_ms"]["p99"], g["send_lag_ms"]["p99"]), d["latency_ms"]["p50"],
                 g["latency_ms"]["p50"], c["added"]["p50"], c["added"]["p99"], ttfb.get("p50"), ttfb.get("p99"),
                 g["gateway_cpu_ms_per_req"], g["client_cpu_ms_per_req"]]
        lines.append(f"  {c['rate']:>6g} {'stream' if c['stream'] else 'non-stream':<11}{d['sent'] + g['sent']:>7d}"
                     f"{d['late'] + g['late']:>7d}{d['queued'] + g['queued']:>7d}" + "".join(_cell(v) for v in cells))
    achieved = ", ".join(f"{c['rate']:g}: {c['gateway']['achieved_req_per_s']:.1f}" for c in r["cases"][::2])
    hot, cold = r["wake_cpu_ms"].values()
    lines += [f"  sent: requests over both targets, every answer complete and checked; late: sent more than"
              f" {r['late_ms']:g} ms after schedule", "  (the client was behind, or queued); queued: waited for one of"
              f" the {r['connections']} connections; lag p99: send time - scheduled time, worse target",
              f"  gw CPU: gateway CPU ms per request at that rate (schedstat, idle time included: the gateway idles at"
              f" {r['gateway_idle_cpu_ms_per_s']:.3f} ms/s); client: this client's",
              f"  rates achieved (gateway, non-stream): {achieved}; this machine charges {cold:.3f} CPU ms for a"
              f" socket round trip after 20 ms asleep",
              f"  ({hot:.3f} back to back): at low rates every process pays that at each wake-up, so CPU per request"
              " (and added latency) is higher than at saturation"]
    return lines


def _cell(ms: float | None) -> str:
    """A value in an 8-wide column: 3 decimals while they fit (an overloaded run reaches seconds)."""
    if ms is None:
        return f"{'-':>8}"
    return f"{ms:>8.3f}" if abs(ms) < 1000 else f"{ms:>8.0f}"


# -- [7] several workers ---------------------------------------------------------------

@dataclass(frozen=True)
class WorkersRun:
    """What [7] takes from the run: the pinned 1-worker gateway, the mock, and what starting
    the N-worker gateway needs."""

    one: Target
    mock_pid: int
    policy: Path
    tmp: Path
    procs: dict[str, Proc]
    env: dict[str, str]
    workers: int
    plan: CorePlan
    cfg: Config


@dataclass(frozen=True)
class Worker:
    pid: int
    started: str  # /proc/PID/stat field 22: tells this process from a later one with the same PID


async def workers_section(run: WorkersRun) -> Json:
    """Start ``switchyard serve --workers N`` on every core, saturate it and the pinned 1-worker
    gateway in ABBA bursts (non-stream, then stream), stop it by PID (its workers too)."""
    port = free_port()
    cores = (run.plan[0] | run.plan[1]) if run.plan else os.sched_getaffinity(0)
    proc = spawn("gateway_workers", gateway_argv(run.policy, port, run.workers), cores,
                 run.tmp / "gateway-workers.log", run.env)
    run.procs["gateway_workers"] = proc
    workers: list[Worker] = []
    try:
        many = make_target("gateway_workers", port, "bench", proc.popen.pid, run.one.stream_want)
        workers = await phase(f"workers: start {run.workers}", _start_workers(many, proc, port, run.workers))
        return await _compare(run, many, [w.pid for w in workers], cores)
    finally:
        stop(proc)
        _kill_left(workers)


async def _start_workers(target: Target, proc: Proc, port: int, n: int) -> list[Worker]:
    """Wait until ``/healthz`` answers and ``n`` workers listen on ``port`` and are idle."""
    async with aiohttp.ClientSession() as session:
        await wait_ready(session, target.base + "/healthz", proc)
    pids: list[int] = []
    deadline = time.monotonic() + READY_LIMIT_S
    while time.monotonic() < deadline:
        pids = workers_of(proc.popen.pid, port)
        if len(pids) >= n and await _idle(pids):
            return [Worker(pid, _stat(pid)[19]) for pid in pids]
        await asyncio.sleep(0.1)
    raise BenchAbort(f"the {n}-worker gateway did not have {n} idle workers listening on port {port} within "
                     f"{READY_LIMIT_S:g} s (found {pids})")


async def _idle(pids: list[int]) -> bool:
    before = [cpu_ns(p) for p in pids]
    await asyncio.sleep(0.2)
    return all(cpu_ns(p) - b < IDLE_NS for p, b in zip(pids, before, strict=True))


def _stat(pid: int) -> list[str]:
    """/proc/PID/stat fields from field 3 on (after "pid (comm)")."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2:].split()


def children(pid: int) -> list[int]:
    """Child PIDs (/proc/PID/task/*/children; a scan of every /proc/*/stat if the kernel lacks it)."""
    kids: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            kids += [int(k) for k in (task / "children").read_text().split()]
        return kids
    except FileNotFoundError:
        pass
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int(_stat(int(entry.name))[1]) == pid:
                    kids.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
    return kids


def _sockets(pid: int) -> set[int]:
    """Inodes of the sockets a process has open."""
    inodes = set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                link = os.readlink(fd)
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(int(link[8:-1]))
    except OSError:
        pass
    return inodes


def _tcp(pid: int) -> Iterator[tuple[int, int, str, int]]:
    """(local port, remote port, state, inode) of the IPv4 TCP sockets in a process's network namespace."""
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        yield int(f[1].rsplit(":", 1)[1], 16), int(f[2].rsplit(":", 1)[1], 16), f[3], int(f[9])


def workers_of(master: int, port: int) -> list[int]:
    """The master's children that hold a socket listening on ``port``: the workers (whatever
    else the master may start, e.g. a multiprocessing helper, does not listen)."""
    listening = {inode for local, _, state, inode in _tcp(master) if local == port and state == "0A"}
    return sorted(pid for pid in children(master) if _sockets(pid) & listening)


def connection_owners(workers: list[int], port: int) -> dict[int, list[int]]:
    """Worker PID -> the client ports of the established connections it holds on ``port``."""
    owner = {inode: pid for pid in workers for inode in _sockets(pid)}
    out: dict[int, list[int]] = {pid: [] for pid in workers}
    for local, remote, state, inode in _tcp(workers[0]):
        if local == port and state == "01" and inode in owner:
            out[owner[inode]].append(remote)
    return out


def _kill_left(workers: list[Worker]) -> None:
    """SIGKILL, by PID, workers still running after their master stopped (it was killed)."""
    for w in workers:
        try:
            if _stat(w.pid)[19] == w.started:
                os.kill(w.pid, signal.SIGKILL)
        except (OSError, IndexError):
            continue


@contextmanager
def unpinned(pids: list[int], cores: set[int]) -> Iterator[None]:
    """Every thread of ``pids`` may run on ``cores`` inside the block; the old affinity after."""
    saved: list[tuple[int, set[int]]] = []
    try:
        for pid in pids:
            for task in Path(f"/proc/{pid}/task").iterdir():
                tid = int(task.name)
                saved.append((tid, os.sched_getaffinity(tid)))
                os.sched_setaffinity(tid, cores)
        yield
    finally:
        for tid, old in saved:
            try:
                os.sched_setaffinity(tid, old)
            except OSError:
                continue


async def _compare(run: WorkersRun, many: Target, pids: list[int], cores: set[int]) -> Json:
    conns = run.cfg.concurrency
    one_pool, many_pool = await RawPool.open(run.one, conns), await RawPool.open(many, conns)
    try:
        modes = {}
        for stream in (False, True):
            key = "stream" if stream else "non_stream"
            modes[key] = await phase(f"workers: {key.replace('_', '-')}, 1 worker vs {run.workers}",
                                     _saturate_pair(run, one_pool, many_pool, pids, stream, cores))
    finally:
        one_pool.close()
        many_pool.close()
    return {"workers": run.workers, "connections": conns, "cores": sorted(cores), "rounds": run.cfg.sat_rounds,
            "one_worker_cores": sorted(run.plan[0]) if run.plan else None,
            "rss_note": "VmHWM counts pages shared with the master (forked) in every worker", "modes": modes}


async def _saturate_pair(run: WorkersRun, one: RawPool, many: RawPool, pids: list[int], stream: bool,
                         cores: set[int]) -> Json:
    """Warm-up, then ``cfg.sat_rounds`` closed-loop bursts each in ABBA order. During the
    N-worker bursts the client and the mock may run on every core, like the workers."""
    share = 2 if stream else 1
    total = run.cfg.sat_n // share // run.cfg.sat_rounds * run.cfg.sat_rounds
    for pool in (one, many):
        await pool.closed(stream, run.cfg.sat_warmup // share)
    use = {"one": Usage.zero(1), "many": Usage.zero(len(pids))}
    by_port: Counter[int] = Counter()
    for i in range(run.cfg.sat_rounds):
        for which in ("one", "many") if i % 2 == 0 else ("many", "one"):
            if which == "one":
                use["one"] += (await metered(one.closed(stream, total // run.cfg.sat_rounds), [run.one.pid],
                                             run.mock_pid, cores))[1]
                continue
            before = {c.port: c.completed for c in many.conns}
            with unpinned([run.mock_pid, os.getpid()], cores):
                use["many"] += (await metered(many.closed(stream, total // run.cfg.sat_rounds), pids,
                                              run.mock_pid, cores))[1]
            by_port.update({c.port: c.completed - before[c.port] for c in many.conns})
    owners = connection_owners(pids, int(many.target.base.rsplit(":", 1)[1]))
    return _pair_summary(use["one"], use["many"], total, pids, by_port, owners)


def _pair_summary(one_use: Usage, many_use: Usage, total: int, pids: list[int], by_port: Counter[int],
                  owners: dict[int, list[int]]) -> Json:
    one, many = one_use.per_request(total), many_use.per_request(total)
    many_cpu = max(1, sum(many_use.gateway_ns))
    per_worker: list[Json] = []
    for k, pid in enumerate(pids):
        requests = sum(by_port[p] for p in owners[pid])
        cpu = many_use.gateway_ns[k]
        per_worker.append({"pid": pid, "connections": len(owners[pid]), "requests": requests,
                           "request_share": requests / total, "cpu_s": cpu / 1e9, "cpu_share": cpu / many_cpu,
                           "cpu_ms_per_req": cpu / 1e6 / requests if requests else None,
                           "peak_rss_mb": peak_rss_kb(pid) / 1024})
    one_per_cpu_s = total * 1e9 / max(1, sum(one_use.gateway_ns))
    many_per_cpu_s = total * 1e9 / many_cpu
    busiest = max((w["request_share"] for w in per_worker), default=1.0) or 1.0
    per_req_all = many["gateway_cpu_ms_per_req"] + many["mock_cpu_ms_per_req"] + many["client_cpu_ms_per_req"]
    ncores = len(os.sched_getaffinity(pids[0])) if pids else 1
    return {"requests_per_target": total, "one": one, "many": many,
            "throughput_ratio": many["req_per_s"] / one["req_per_s"],
            "capacity": {"one_req_per_cpu_s": one_per_cpu_s, "many_req_per_cpu_s": many_per_cpu_s,
                         "projected_req_per_s": len(pids) * many_per_cpu_s,
                         "projected_ratio": len(pids) * many_per_cpu_s / one_per_cpu_s,
                         # the busiest worker at a full core sets the pace if requests keep being shared so
                         "as_shared_req_per_s": min(len(pids), 1 / busiest) * many_per_cpu_s,
                         "as_shared_ratio": min(len(pids), 1 / busiest) * many_per_cpu_s / one_per_cpu_s},
            "ceiling": {"cores": ncores, "cpu_ms_per_req_all": per_req_all,
                        "req_per_s": ncores * 1000 / per_req_all,
                        "ratio_to_one": ncores * 1000 / per_req_all / one["req_per_s"]},
            "unattributed_requests": total - sum(w["requests"] for w in per_worker),
            "per_worker": per_worker}


def workers_lines(r: Json) -> list[str]:
    n, pinned = r["workers"], r["one_worker_cores"]
    lines = [f"[7] {n} workers (not pinned: cpus {r['cores']}) vs 1 worker (pinned to cpu {pinned}): saturation over "
             f"{r['connections']} keep-alive connections (raw client), {r['rounds']} ABBA bursts each;",
             f"    during the {n}-worker bursts the client and the mock may use every core too"]
    for key in ("non_stream", "stream"):
        lines += _pair_lines(key, r["modes"][key], n)
    lines += ["  capacity = requests ÷ gateway CPU seconds: what the workers would serve with a core each",
              "    (\"as shared\": the busiest worker's core sets the pace);",
              "  ceiling = cores ÷ CPU ms per request of gateway + mock + client: the most this machine serves while",
              "    the client and the mock share its cores with the workers. Measured req/s near the ceiling with the",
              "    cores ~100 % busy: the machine is the limit, not the gateway; read capacity and the shares then.",
              "  others: CPU time of processes outside this bench on the cores (a shared machine lowers every req/s).",
              f"  {r['rss_note']}."]
    return lines


def _pair_lines(key: str, m: Json, n: int) -> list[str]:
    one, many, cap, ceil = m["one"], m["many"], m["capacity"], m["ceiling"]
    lines = ["", f"  {key.replace('_', '-')}: {m['requests_per_target']} requests per target",
             f"    {'':<20}{'req/s':>8}{'gw CPU':>9}{'mock':>8}{'client':>8}{'gw cores':>10}{'cores':>8}{'others':>8}",
             f"    {'':<20}{'':>8}{'ms/req':>9}{'ms/req':>8}{'ms/req':>8}{'used':>10}{'% busy':>8}{'% cores':>8}"]
    for label, x in (("1 worker, pinned", one), (f"{n} workers", many)):
        lines.append(f"    {label:<20}{x['req_per_s']:>8.0f}{x['gateway_cpu_ms_per_req']:>9.3f}"
                     f"{x['mock_cpu_ms_per_req']:>8.3f}{x['client_cpu_ms_per_req']:>8.3f}"
                     f"{x['gateway_cores_used']:>10.2f}{x['cores_busy_pct']:>8.0f}{x['others_pct']:>8.0f}")
    lines += [f"    throughput {n} workers ÷ 1 worker: {m['throughput_ratio']:.2f}x measured",
              f"    capacity: 1 worker {cap['one_req_per_cpu_s']:.0f}/s, {n} workers {cap['many_req_per_cpu_s']:.0f}/s"
              f" per core -> {cap['projected_req_per_s']:.0f}/s = {cap['projected_ratio']:.2f}x evenly shared,"
              f" {cap['as_shared_req_per_s']:.0f}/s = {cap['as_shared_ratio']:.2f}x shared as below",
              f"    ceiling here: {ceil['cores']} cores ÷ {ceil['cpu_ms_per_req_all']:.3f} CPU ms per request ="
              f" {ceil['req_per_s']:.0f} req/s = {ceil['ratio_to_one']:.2f}x one worker",
              f"    {'worker pid':<14}{'conns':>6}{'requests':>10}{'share':>7}{'CPU s':>8}{'CPU share':>11}"
              f"{'ms/req':>8}{'VmHWM MiB':>11}"]
    for w in m["per_worker"]:
        per_req = "-" if w["cpu_ms_per_req"] is None else f"{w['cpu_ms_per_req']:.3f}"
        lines.append(f"    {w['pid']:<14}{w['connections']:>6}{w['requests']:>10}{w['request_share']:>7.0%}"
                     f"{w['cpu_s']:>8.2f}{w['cpu_share']:>11.0%}{per_req:>8}{w['peak_rss_mb']:>11.1f}")
    if m["unattributed_requests"]:
        lines.append(f"    {m['unattributed_requests']} requests on connections no worker held at the end")
    return lines
