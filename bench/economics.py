"""Routing economics (issue 15): one seeded, bursty workload replayed through the real
gateway under each routing policy, against a simulated GPU server and a simulated closed
provider; what each policy costs, how much stays on the GPU, and what latency users get.

    .venv/bin/python bench/economics.py [--quick] [--seed N] [--duration S] [--json PATH]

The upstreams are ``bench/economics_sim.py``, run in this process (their timing is real
``asyncio.sleep``; the report shows the event loop's worst lag, so a distorted run shows):

* **GPU**: a vLLM server with 16 slots (continuous batching, FIFO queue behind them),
  prefill 5000 tokens/s, decode 60 tokens/s per request (2 % slower per other running
  request), vLLM's ``/metrics``; it costs ``gpu_hour_usd`` ($3/h), also written into the
  policy as the backend's ``price`` (with ``tokens_per_s`` = slots × decode speed).
* **closed**: a gpt-4o-class provider: TTFT 0.35 s ± 0.08 s, 80 tokens/s, 600 requests per
  minute (then 429), $2.50 / $10.00 per million input / output tokens, key checked.

The workload (``economics_sim.workload``, seeded): 90 s of Poisson arrivals at 3.5/s, ×3 for
the last 10 s of every 30 s (mean 5.83/s, about 515 requests); prompts log-normal (median 400
tokens, σ 0.9, ≤ 4000), answers log-normal (median 70 tokens, σ 0.8, ≤ 1024; sent as
``max_tokens``, and the simulated answer is exactly that long); 20 % carry a test card
number or IBAN (the gateway's detectors rate them ``restricted``), 60 % are streamed. The
GPU is offered about 80 % of what it can serve on average and about 1.4× during bursts.
Short runs vary with the seed and from run to run; compare policies on the same seed,
better over a few seeds, or run longer (``--duration``). ``--quick`` is a 4 s smoke run on a
smaller workload.

Each scenario (``SCENARIOS``) starts fresh simulators and its own gateway process
(``switchyard serve``) with a policy written to a temporary directory, then replays the
same jobs at the same offsets with the official ``openai`` SDK (``AsyncOpenAI``,
``max_retries=0``), each job on its own (open loop: arrivals do not wait for answers). A
scenario is either a baseline (every request to one simulator) or a policy file whose
backends are pointed at the simulators: every self-hosted backend becomes the GPU (kind
``vllm``), every closed one the closed provider (kind ``openai``), each with the sim's URL,
model, key and price, and a self-hosted backend's ``capacity`` (if it has one) gets the sim's
slots and nominal speeds (its ``reserved_slots`` kept); everything else (models, rules,
objectives, hedging, timeouts, settings) is the file's own. To compare a policy, add
``Scenario(label, path)`` to ``SCENARIOS``.

Per scenario, from the simulators' own logs (never from gateway headers) and the client:

* **cost** = closed cost + GPU cost. Closed cost: the closed simulator's bill, from its log
  (prompt tokens × input price + tokens produced × output price, for every request it
  worked on, failed or cancelled ones included). GPU cost (amortised) =
  ``gpu_hour_usd`` × replay duration / 3600, when the policy has a self-hosted backend
  (the GPU is paid for whether busy or not). Replay duration: from the first arrival to
  the last answer. **vs all-closed** = cost ÷ the all-closed scenario's cost.
* **self-hosted share** = answers the GPU served ÷ answers both simulators served.
* **TTFT** p50/p99 (streamed requests: time to the first content token) and **latency**
  p50/p99 (every successful request, to the last token), measured by the client.
* **errors**: exceptions, non-200 answers and incomplete answers; **leaks**: sensitive jobs
  whose marker reached the closed simulator (any request in its log, refused ones too).

Targets (issue 15), for each scenario that is not a baseline: cost ≤ 40 % of all-closed,
TTFT p99 ≤ 1.5 s, latency p99 ≤ 1.5 × all-closed's, 0 leaks, 0 errors. The report only
reports (exit status 0 on FAIL). Every gateway is stopped by PID; all traffic stays on
127.0.0.1; each replay is cut off ``drain_limit_s`` after its last arrival (what is left
counts as errors).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal, cast

import aiohttp
import httpx
import openai
import orjson
from economics_sim import (  # bench/ is sys.path[0] when run as a script
    ClosedSpec,
    GpuSpec,
    Job,
    SimClosed,
    SimGPU,
    WorkloadSpec,
    answer_text,
    workload,
)
from openai.types.chat import ChatCompletionMessageParam
from overhead import (
    HOST,
    Json,
    bench_main,
    free_port,
    gateway_argv,
    log_tail,
    percentile,
    processes,
    spawn,
    wait_ready,
)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the gateway's own packages: the kind table, the YAML reader

from backends.kinds import kind_traits  # noqa: E402
from policies.loader import read_yaml  # noqa: E402

CLIENT_TIMEOUT_S = 120.0
CLIENT_KEY = "sk-bench-client"
LAG_TICK_S = 0.05
TARGET_COST_SHARE = 0.40
TARGET_TTFT_P99_S = 1.5
TARGET_LATENCY_RATIO = 1.5
_MARKER = re.compile(r"Case (q[a-z]{6})\.")


@dataclass(frozen=True)
class Scenario:
    """A routing policy to replay: a policy file (backends swapped for the simulators) or,
    with ``only``, a baseline that sends every request to one simulator."""

    label: str
    policy: Path | None = None
    only: Literal["closed", "gpu"] | None = None
    alias: str | None = None  # the model clients ask for; default: the policy's first alias

    @property
    def baseline(self) -> bool:
        return self.only is not None


#: Replayed in this order; all-closed is the reference of cost and latency targets. One more
#: policy is one more line, e.g. ``Scenario("slo-first", ROOT / "policies" / "slo-first.yaml")``.
SCENARIOS = [
    Scenario("all-closed", only="closed"),
    Scenario("all-self-hosted", only="gpu"),
    Scenario("spillover (shipped)", ROOT / "policies" / "burst-spillover.yaml"),
    Scenario("slo-first (shipped)", ROOT / "policies" / "slo-first.yaml"),
]


@dataclass(frozen=True)
class Config:
    workload: WorkloadSpec
    gpu: GpuSpec = GpuSpec()
    closed: ClosedSpec = ClosedSpec()
    drain_limit_s: float = 120.0  # after the last arrival, then the replay is cut off


#: A GPU the size of a real vLLM deployment's batch (16 sequences at once), offered about 80 % of
#: what it can serve on average and about 1.4x during bursts.
FULL = Config(WorkloadSpec(base_rate=3.5), GpuSpec(slots=16, batch_slowdown=0.02))
QUICK = Config(WorkloadSpec(duration_s=4.0, base_rate=2.0, burst_every_s=4.0, burst_s=2.0), drain_limit_s=30.0)


@dataclass
class Outcome:
    """One job as the client saw it."""

    job: Job
    error: str | None = None
    ttft_s: float | None = None  # streamed only
    latency_s: float | None = None
    ended: float | None = None  # time.monotonic()


# -- policies --------------------------------------------------------------------------

def gpu_backend(gpu: SimGPU) -> Json:
    spec = gpu.spec
    price = {"gpu_hour_usd": spec.gpu_hour_usd, "tokens_per_s": spec.slots * spec.decode_tps}
    return {"kind": "vllm", "base_url": gpu.base_url, "model": spec.model, "price": price}


def closed_backend(closed: SimClosed) -> Json:
    spec = closed.spec
    price = {"input_per_mtok_usd": spec.input_per_mtok_usd, "output_per_mtok_usd": spec.output_per_mtok_usd}
    return {"kind": "openai", "base_url": closed.base_url, "model": spec.model, "api_key": spec.api_key,
            "price": price}


def baseline_policy(only: str, gpu: SimGPU, closed: SimClosed) -> Json:
    """Every request to one simulator; the closed baseline takes sensitive requests too."""
    backend = gpu_backend(gpu) if only == "gpu" else {**closed_backend(closed), "max_sensitivity": "restricted"}
    backend["timeouts"] = {"first_token_s": CLIENT_TIMEOUT_S, "total_s": CLIENT_TIMEOUT_S}
    return {"version": 1, "backends": {only: backend}, "models": {"chat": {"targets": [only]}}}


def adapted_policy(path: Path, gpu: SimGPU, closed: SimClosed) -> Json:
    """The policy file at ``path`` with each backend pointed at the simulator of its side."""
    data = read_yaml(path)
    if not isinstance(data, dict) or not isinstance(data.get("backends"), dict):
        raise SystemExit(f"{path}: not a policy with backends")
    for name, spec in data["backends"].items():
        self_hosted = spec.get("self_hosted", kind_traits(str(spec.get("kind"))).self_hosted)
        for key in ("replicas", "discovery", "placement", "self_hosted", "base_url", "api_key", "price", "speaks"):
            spec.pop(key, None)
        spec.update(gpu_backend(gpu) if self_hosted else closed_backend(closed))
        if self_hosted and isinstance(spec.get("capacity"), dict):
            spec["capacity"] = sim_capacity(spec["capacity"], gpu.spec)
        data["backends"][name] = spec
    return data


def sim_capacity(capacity: Json, spec: GpuSpec) -> Json:
    """A backend's ``capacity`` describing the simulated GPU: its slots and nominal speeds; the
    file's ``reserved_slots`` kept (at most slots - 1)."""
    reserved = min(int(capacity.get("reserved_slots", 0)), spec.slots - 1)
    return {**capacity, "slots": spec.slots, "prefill_tokens_per_s": spec.prefill_tps,
            "decode_tokens_per_s": spec.decode_tps, "reserved_slots": reserved}


def policy_for(scenario: Scenario, gpu: SimGPU, closed: SimClosed) -> Json:
    if scenario.only is not None:
        return baseline_policy(scenario.only, gpu, closed)
    if scenario.policy is None:
        raise SystemExit(f"scenario {scenario.label!r}: give a policy file or only=closed|gpu")
    return adapted_policy(scenario.policy, gpu, closed)


def write_policy(directory: Path, scenario: Scenario, data: Json) -> Path:
    """As JSON (which is YAML) under a comment naming where it came from."""
    slug = re.sub(r"[^a-z0-9]+", "-", scenario.label.lower()).strip("-")
    source = _shown(scenario.policy) if scenario.policy else "a baseline"
    path = directory / f"{slug}.yaml"
    path.write_bytes(f"# bench/economics.py: {source}, backends on the simulators\n".encode()
                     + orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")
    return path


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def uses_gpu(data: Json) -> bool:
    return any(spec.get("kind") == "vllm" for spec in data["backends"].values())


# -- the client ------------------------------------------------------------------------

async def send(client: openai.AsyncOpenAI, alias: str, job: Job, t0: float) -> Outcome:
    """Send ``job`` at its offset from ``t0`` (``time.monotonic()``) and read the answer."""
    await asyncio.sleep(max(0.0, t0 + job.at - time.monotonic()))
    out = Outcome(job)
    started = time.monotonic()
    try:
        text = await (_streamed(client, alias, job, out, started) if job.stream else _whole(client, alias, job))
    except openai.APIStatusError as exc:
        out.error = f"HTTP {exc.status_code}"
    except (openai.APIError, httpx.HTTPError) as exc:
        out.error = type(exc).__name__
    else:
        if text != answer_text(0, job.max_tokens):
            out.error = "incomplete answer"
    out.ended = time.monotonic()
    out.latency_s = out.ended - started
    return out


def _messages(job: Job) -> list[ChatCompletionMessageParam]:
    return cast("list[ChatCompletionMessageParam]", list(job.messages))


async def _whole(client: openai.AsyncOpenAI, alias: str, job: Job) -> str:
    completion = await client.chat.completions.create(model=alias, messages=_messages(job), max_tokens=job.max_tokens)
    return completion.choices[0].message.content or ""


async def _streamed(client: openai.AsyncOpenAI, alias: str, job: Job, out: Outcome, started: float) -> str:
    stream = await client.chat.completions.create(model=alias, messages=_messages(job), max_tokens=job.max_tokens,
                                                  stream=True,
                                                  stream_options={"include_usage": True})
    parts: list[str] = []
    async with stream:
        async for chunk in stream:
            for choice in chunk.choices:
                if choice.delta.content:
                    if out.ttft_s is None:
                        out.ttft_s = time.monotonic() - started
                    parts.append(choice.delta.content)
    return "".join(parts)


async def replay(url: str, alias: str, jobs: list[Job], limit_s: float) -> tuple[list[Outcome], float, float]:
    """Every job at its offset; (outcomes, t0, the event loop's worst lag in s). Jobs still
    running ``limit_s`` after the last arrival are cancelled and count as errors."""
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=CLIENT_TIMEOUT_S)
    lag = asyncio.create_task(_worst_lag())
    t0 = time.monotonic() + 0.2
    tasks = [asyncio.create_task(send(client, alias, job, t0)) for job in jobs]
    try:
        await asyncio.wait(tasks, timeout=(jobs[-1].at if jobs else 0) + 0.2 + limit_s)
    finally:
        for task in (*tasks, lag):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.close()
    worst = await asyncio.gather(lag, return_exceptions=True)
    outcomes = [_outcome(task, job) for task, job in zip(tasks, jobs, strict=True)]
    return outcomes, t0, worst[0] if isinstance(worst[0], float) else 0.0


def _outcome(task: asyncio.Task[Outcome], job: Job) -> Outcome:
    if task.cancelled():
        return Outcome(job, "unfinished")
    exc = task.exception()
    return Outcome(job, f"{type(exc).__name__}: {exc}"[:200]) if exc else task.result()


async def _worst_lag() -> float:
    """How late the event loop wakes up (the simulators' timing is only as good as this)."""
    worst = 0.0
    try:
        while True:
            before = time.monotonic()
            await asyncio.sleep(LAG_TICK_S)
            worst = max(worst, time.monotonic() - before - LAG_TICK_S)
    except asyncio.CancelledError:
        return worst


# -- one scenario ----------------------------------------------------------------------

async def _scenario(scenario: Scenario, cfg: Config, jobs: list[Job], seed: int, tmp: Path,
                    procs: dict[str, Any]) -> Json:
    async with SimGPU(cfg.gpu, seed) as gpu, SimClosed(cfg.closed, seed) as closed:
        data = policy_for(scenario, gpu, closed)
        alias = scenario.alias or next(iter(data["models"]))
        path = write_policy(tmp, scenario, data)
        port = free_port()
        procs["gateway"] = spawn("gateway", gateway_argv(path, port), None, path.with_suffix(".log"))
        url = f"http://{HOST}:{port}"
        async with aiohttp.ClientSession() as http:
            await wait_ready(http, url + "/healthz", procs["gateway"])
        outcomes, t0, lag = await replay(url, alias, jobs, cfg.drain_limit_s)
        wall = max([o.ended for o in outcomes if o.ended is not None], default=t0) - t0
        result = summarise(scenario, cfg, outcomes, gpu, closed, wall, uses_gpu(data))
        if result["errors"]:  # the temporary directory goes: keep what the gateway said
            result["gateway_log_tail"] = log_tail(procs["gateway"], 15)
        return result | {"event_loop_lag_max_s": lag}


def summarise(scenario: Scenario, cfg: Config, outcomes: list[Outcome], gpu: SimGPU, closed: SimClosed,
              wall: float, rents_gpu: bool) -> Json:
    ok = [o for o in outcomes if o.error is None]
    ttft = sorted(o.ttft_s for o in ok if o.ttft_s is not None)
    latency = sorted(o.latency_s for o in ok if o.latency_s is not None)
    served_gpu, served_closed = sum(r.served for r in gpu.log), sum(r.served for r in closed.log)
    closed_cost = closed.cost_usd()
    gpu_cost = cfg.gpu.gpu_hour_usd * wall / 3600 if rents_gpu else 0.0
    errors: dict[str, int] = {}
    for o in outcomes:
        if o.error is not None:
            errors[o.error] = errors.get(o.error, 0) + 1
    return {
        "label": scenario.label, "baseline": scenario.baseline,
        "policy": _shown(scenario.policy) if scenario.policy else None,
        "requests": len(outcomes), "ok": len(ok), "errors": sum(errors.values()), "errors_by_kind": errors,
        "leaks": len(leaks(outcomes, closed)),
        "cost_usd": closed_cost + gpu_cost, "closed_cost_usd": closed_cost, "gpu_cost_usd": gpu_cost,
        "self_hosted_share": served_gpu / max(1, served_gpu + served_closed),
        "served_gpu": served_gpu, "served_closed": served_closed,
        "closed_requests": len(closed.log), "closed_429": sum(r.status == 429 for r in closed.log),
        "gpu_requests": len(gpu.log), "gpu_utilisation": gpu.busy_slot_seconds() / (cfg.gpu.slots * max(wall, 1e-9)),
        "ttft_p50_s": _pct(ttft, 50), "ttft_p99_s": _pct(ttft, 99),
        "latency_p50_s": _pct(latency, 50), "latency_p99_s": _pct(latency, 99),
        "by_sensitivity": {name: _tails([o for o in ok if o.job.sensitive == flag])
                           for name, flag in (("sensitive", True), ("other", False))},
        "replay_s": wall,
    }


def _tails(ok: list[Outcome]) -> Json:
    """p99s of one group of successful requests (who makes the tail: those that must stay home?)."""
    ttft = sorted(o.ttft_s for o in ok if o.ttft_s is not None)
    latency = sorted(o.latency_s for o in ok if o.latency_s is not None)
    return {"requests": len(ok), "ttft_p99_s": _pct(ttft, 99), "latency_p99_s": _pct(latency, 99)}


def leaks(outcomes: list[Outcome], closed: SimClosed) -> set[str]:
    """Markers of sensitive jobs found in anything the closed provider received."""
    sensitive = {o.job.marker for o in outcomes if o.job.sensitive}
    return {m for record in closed.log for m in _MARKER.findall(record.text())} & sensitive


def _pct(values: list[float], q: float) -> float | None:
    return percentile(values, q) if values else None


# -- the run ---------------------------------------------------------------------------

def run(cfg: Config, seed: int, scenarios: list[Scenario]) -> Json:
    jobs = workload(cfg.workload, seed)
    out: Json = {"seed": seed, "config": asdict(cfg), "workload": workload_summary(cfg.workload, jobs),
                 "scenarios": []}
    with tempfile.TemporaryDirectory(prefix="switchyard-economics-") as tmp:
        for scenario in scenarios:
            print(f"  … {scenario.label}", file=sys.stderr, flush=True)
            with processes() as procs:
                out["scenarios"].append(asyncio.run(_scenario(scenario, cfg, jobs, seed, Path(tmp), procs)))
    relative(out["scenarios"], reference_cost(cfg, jobs))
    out["targets"] = {s["label"]: targets(s, out["scenarios"]) for s in out["scenarios"] if not s["baseline"]}
    return out


def workload_summary(spec: WorkloadSpec, jobs: list[Job]) -> Json:
    return {"requests": len(jobs), "sensitive": sum(j.sensitive for j in jobs),
            "streamed": sum(j.stream for j in jobs), "mean_rate_per_s": spec.mean_rate,
            "prompt_tokens": sum(j.prompt_tokens for j in jobs), "output_tokens": sum(j.max_tokens for j in jobs)}


def reference_cost(cfg: Config, jobs: list[Job]) -> float:
    """The workload at the closed provider's prices, each job once (a cross-check)."""
    c = cfg.closed
    return sum(j.prompt_tokens * c.input_per_mtok_usd + j.max_tokens * c.output_per_mtok_usd for j in jobs) / 1e6


def relative(scenarios: list[Json], priced: float) -> None:
    """Each scenario's cost ÷ the all-closed scenario's (÷ the priced workload without one)."""
    closed = next((s for s in scenarios if s["label"] == "all-closed"), None)
    base = closed["cost_usd"] if closed and closed["cost_usd"] > 0 else priced
    for s in scenarios:
        s["cost_vs_all_closed"] = s["cost_usd"] / base if base > 0 else None
        s["workload_at_closed_prices_usd"] = priced


def targets(s: Json, scenarios: list[Json]) -> dict[str, Json]:
    """Issue 15's targets: name → {ok, got} (``got``: the measured value, as printed)."""
    closed = next((x for x in scenarios if x["label"] == "all-closed"), None)
    cap = TARGET_LATENCY_RATIO * closed["latency_p99_s"] if closed and closed["latency_p99_s"] else None
    share, ttft, latency = s["cost_vs_all_closed"], s["ttft_p99_s"], s["latency_p99_s"]
    checks = {
        f"cost <= {TARGET_COST_SHARE:.0%} of all-closed": (share is not None and share <= TARGET_COST_SHARE,
                                                          _share(share)),
        f"TTFT p99 <= {TARGET_TTFT_P99_S:g} s": (ttft is not None and ttft <= TARGET_TTFT_P99_S, f"{_s(ttft)} s"),
        f"latency p99 <= {TARGET_LATENCY_RATIO:g}x all-closed ({_s(cap)} s)":
            (cap is not None and latency is not None and latency <= cap, f"{_s(latency)} s"),
        "0 leaks": (s["leaks"] == 0, str(s["leaks"])),
        "0 errors": (s["errors"] == 0, str(s["errors"])),
    }
    return {name: {"ok": ok, "got": got} for name, (ok, got) in checks.items()}


# -- report ----------------------------------------------------------------------------

def report(r: Json) -> str:
    w, g, c = r["config"]["workload"], r["config"]["gpu"], r["config"]["closed"]
    wl = r["workload"]
    lines = [
        f"routing economics replay, seed {r['seed']}: {wl['requests']} requests in {w['duration_s']:g} s "
        f"(Poisson {w['base_rate']:g}/s, x{w['burst_factor']:g} for {w['burst_s']:g} s of every "
        f"{w['burst_every_s']:g} s; mean {wl['mean_rate_per_s']:.2f}/s), {wl['sensitive']} sensitive, "
        f"{wl['streamed']} streamed",
        f"  GPU sim: {g['slots']} slots, prefill {g['prefill_tps']:g} tok/s, decode {g['decode_tps']:g} tok/s "
        f"(-{g['batch_slowdown']:.0%} per other running), ${g['gpu_hour_usd']:g}/h; closed sim: {c['model']}, "
        f"TTFT {c['ttft_s']:g}±{c['ttft_jitter_s']:g} s, {c['tokens_per_s']:g} tok/s, {c['rpm']} RPM, "
        f"${c['input_per_mtok_usd']:.2f}/${c['output_per_mtok_usd']:.2f} per M",
        f"  the workload at closed prices: ${r['scenarios'][0]['workload_at_closed_prices_usd']:.4f}",
        "",
        f"  {'scenario':<22}{'cost $':>9}{'vs closed':>10}{'GPU share':>10}{'TTFT p50':>9}{'p99':>7}"
        f"{'lat p50':>8}{'p99':>7}{'errors':>7}{'leaks':>6}{'GPU busy':>9}{'429s':>5}{'replay s':>9}",
    ]
    for s in r["scenarios"]:
        lines.append(f"  {s['label']:<22}{s['cost_usd']:>9.4f}{_share(s['cost_vs_all_closed']):>10}"
                     f"{_share(s['self_hosted_share']):>10}{_s(s['ttft_p50_s']):>9}{_s(s['ttft_p99_s']):>7}"
                     f"{_s(s['latency_p50_s']):>8}{_s(s['latency_p99_s']):>7}{s['errors']:>7}{s['leaks']:>6}"
                     f"{_share(s['gpu_utilisation']):>9}{s['closed_429']:>5}{s['replay_s']:>9.1f}")
    for s in r["scenarios"]:
        sens, other = s["by_sensitivity"]["sensitive"], s["by_sensitivity"]["other"]
        lines.append(f"  {s['label']}: TTFT p99 / latency p99 of sensitive requests {_s(sens['ttft_p99_s'])} / "
                     f"{_s(sens['latency_p99_s'])} s, of the others {_s(other['ttft_p99_s'])} / "
                     f"{_s(other['latency_p99_s'])} s")
    for s in r["scenarios"]:
        if s["errors_by_kind"]:
            lines.append(f"  errors, {s['label']}: {s['errors_by_kind']} (gateway log tail in the JSON)")
    worst = max(s["event_loop_lag_max_s"] for s in r["scenarios"])
    lines += ["  (all-closed sends sensitive requests to the closed provider on purpose: its leaks are the "
              "reference)",
              f"  worst event-loop lag in this process (simulators + client): {worst * 1000:.0f} ms", ""]
    for label, checks in r["targets"].items():
        lines += [f"  target {label}: {name} -> {'PASS' if c['ok'] else 'FAIL'} ({c['got']})"
                  for name, c in checks.items()]
    return "\n".join(lines)


def _share(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a 4 s workload per scenario (a smoke run, about 25 s)")
    parser.add_argument("--seed", type=int, default=1, help="workload and jitter seed (default 1)")
    parser.add_argument("--duration", type=float, help="seconds of arrivals per scenario (default 90; quick 4)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the numbers as JSON here")
    parser.add_argument("--policy", type=Path, action="append", default=[], metavar="PATH",
                        help="also replay this policy file (repeatable)")
    parser.add_argument("--only", action="append", default=[], metavar="LABEL",
                        help="replay only these scenarios (repeatable; all-closed always runs: the reference)")
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    if args.duration:
        cfg = replace(cfg, workload=replace(cfg.workload, duration_s=args.duration))
    scenarios = SCENARIOS + [Scenario(path.stem, path.resolve()) for path in args.policy]
    if args.only:
        extra = {path.resolve() for path in args.policy}
        scenarios = [s for s in scenarios if s.label in {"all-closed", *args.only} or s.policy in extra]
    return bench_main(lambda: run(cfg, args.seed, scenarios), report, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
