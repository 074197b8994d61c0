"""What telemetry costs: CPU per request of the gateway with metrics and tracing on vs off,
from one run.

    .venv/bin/python bench/telemetry.py [--quick]

Starts the fast mock upstream (``bench/mock_upstream.py``), an OTLP/HTTP sink in this process
(answers 200 to ``/v1/traces`` and ``/v1/metrics`` and counts what it gets), and two gateways
on the same pinned core: ``off`` (``SWITCHYARD_TELEMETRY=off``: no metrics, no spans) and
``on`` (metrics for ``/metrics`` and the dashboard counters, plus traces and metrics exported
over OTLP to the sink: ``OTEL_EXPORTER_OTLP_ENDPOINT``, batch span export). Then bursts of N
requests at concurrency 32 to each, alternating ABBA, and the CPU time (utime + stime, all
threads, from /proc) each gateway process spent per request. ``/metrics`` of ``on`` is
scraped once per burst, as Prometheus would. Target (issue 6): ``on`` costs ≤ 10 % more CPU
per request than ``off``. Every process is stopped by PID; traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path

import aiohttp
from aiohttp import web
from overhead import (
    HOST,
    BenchAbort,
    Proc,
    blast,
    cpu_plan,
    cpu_ticks,
    free_port,
    gateway_argv,
    make_target,
    spawn,
    stop,
    wait_ready,
    write_policy,
)

CLK_TCK = os.sysconf("SC_CLK_TCK")
TARGET_RATIO = 1.10
CONCURRENCY = 32


async def sink(counts: dict[str, int]) -> tuple[web.AppRunner, int]:
    async def accept(request: web.Request) -> web.Response:
        counts[request.path] = counts.get(request.path, 0) + 1
        await request.read()
        return web.Response(status=200, content_type="application/x-protobuf", body=b"")

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/traces", accept)
    app.router.add_post("/v1/metrics", accept)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, HOST, port).start()
    return runner, port


async def measure(args: argparse.Namespace, tmp: Path, procs: dict[str, Proc]) -> int:
    n, rounds = (1000, 4) if args.quick else (4000, 6)
    plan = cpu_plan()
    gw_cores, client_cores = plan if plan else (None, None)
    if client_cores:
        os.sched_setaffinity(0, client_cores)
    counts: dict[str, int] = {}
    runner, sink_port = await sink(counts)
    try:
        mock_port = free_port()
        procs["mock"] = spawn("mock", [sys.executable, str(Path(__file__).with_name("mock_upstream.py")), "--host",
                                       HOST, "--port", str(mock_port)], client_cores, tmp / "mock.log")
        policy = write_policy(tmp, mock_port)
        targets = {}
        otlp = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{HOST}:{sink_port}", "OTEL_BSP_SCHEDULE_DELAY": "1000"}
        for name, env in (("off", {"SWITCHYARD_TELEMETRY": "off"}), ("metrics", {"SWITCHYARD_TELEMETRY": "on"}),
                          ("on", {"SWITCHYARD_TELEMETRY": "on", **otlp}),
                          ("on-all", {"SWITCHYARD_TELEMETRY": "on", "SWITCHYARD_TRACE_RATIO": "1",
                                      "OTEL_METRICS_EXPORTER": "otlp", "OTEL_METRIC_EXPORT_INTERVAL": "5000",
                                      **otlp})):
            port = free_port()
            procs[name] = spawn(name, gateway_argv(policy, port), gw_cores, tmp / f"{name}.log", env)
            targets[name] = make_target(name, port, "bench", procs[name].popen.pid)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY * 2)) as session:
            for name, target in targets.items():
                await wait_ready(session, target.base + "/healthz", procs[name])
                await blast(session, target, n // 2, CONCURRENCY)  # warm-up
            ticks = {name: 0 for name in targets}
            names = list(targets)
            for i in range(rounds):
                for name in names if i % 2 == 0 else reversed(names):
                    target = targets[name]
                    before = cpu_ticks(target.pid)
                    await blast(session, target, n, CONCURRENCY)
                    if name != "off":
                        async with session.get(target.base + "/metrics") as r:
                            if r.status != 200 or b"switchyard_requests_total" not in await r.read():
                                raise BenchAbort(f"the {name!r} gateway's /metrics has no request counter")
                    ticks[name] += cpu_ticks(target.pid) - before
        total = n * rounds
        per = {name: t * 1000 / CLK_TCK / total for name, t in ticks.items()}
        print(f"bench/telemetry.py  cpus {os.cpu_count()}  gateways pinned to {sorted(gw_cores or [])}  "
              f"{rounds} bursts x {n} requests each, concurrency {CONCURRENCY}, order ABBA")
        print(f"{'gateway':<9} {'CPU ms/request':>15} {'vs off':>8}")
        for name, what in (("off", "SWITCHYARD_TELEMETRY=off"), ("metrics", "metrics, no trace exporter"),
                           ("on", "metrics + traces over OTLP, default sampling"),
                           ("on-all", "every request traced + metrics pushed over OTLP too")):
            print(f"{name:<9} {per[name]:>15.4f} {per[name] / per['off']:>8.3f}   {what}")
        print(f"OTLP sink received: {counts.get('/v1/traces', 0)} trace exports, "
              f"{counts.get('/v1/metrics', 0)} metric exports")
        if not counts.get("/v1/traces"):
            raise BenchAbort("no traces were exported: tracing was not really on")
        ratio = per["on"] / per["off"]
        print(f"target: telemetry on (metrics + traces, default sampling) <= {TARGET_RATIO:.2f} x the CPU per "
              f"request of off -> {'PASS' if ratio <= TARGET_RATIO else 'FAIL'} ({ratio:.3f})")
        return 0
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 bursts of 1000 instead of 6 of 4000")
    args = parser.parse_args(argv)
    procs: dict[str, Proc] = {}
    with tempfile.TemporaryDirectory(prefix="switchyard-bench-") as tmp:
        try:
            return asyncio.run(asyncio.wait_for(measure(args, Path(tmp), procs), 300))
        except (BenchAbort, TimeoutError) as exc:
            print(f"aborted: {exc}", file=sys.stderr)
            return 1
        finally:
            for proc in reversed(procs.values()):
                stop(proc)


if __name__ == "__main__":
    sys.exit(main())
