"""Planner speed: microseconds to plan a typical request against a 20-rule policy.

    .venv/bin/python bench/planner.py [--quick]

Measures, in one process, with a seeded request mix:
- ``plan``: ``Planner.plan(facts, load, spilling, rng)`` alone (rules evaluated in order;
  most requests match late rules, the worst case for first-match evaluation);
- ``facts+plan``: building ``RequestFacts`` from a parsed ~1 KB chat body (sensitivity
  scan included) and planning it — what the gateway does per request before any I/O;
- ``explain``: a plan with the full rule trace (the explain endpoint's cost).
Target (issue): ≤ 50 µs to plan a typical request.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from policies import BackendLoad, load_policy_text  # noqa: E402
from policies.sensitivity import Scanner  # noqa: E402
from router.body import parse_body  # noqa: E402
from router.facts import build_facts  # noqa: E402
from router.runtime import KIND_TABLE, build_planner  # noqa: E402

TARGET_US = 50.0


def policy_yaml(rules: int = 20) -> str:
    lines = ["version: 1", "backends:",
             "  gpu-a: {kind: vllm, base_url: 'http://a:8000/v1', model: m,"
             " price: {gpu_hour_usd: 2, tokens_per_s: 2000}}",
             "  gpu-b: {kind: vllm, base_url: 'http://b:8000/v1', model: m}",
             "  mini: {kind: openai_compatible, base_url: 'http://c/v1', model: m, self_hosted: false,"
             " price: {input_per_mtok_usd: 0.15, output_per_mtok_usd: 0.6}}",
             "  big: {kind: openai_compatible, base_url: 'http://d/v1', model: m, self_hosted: false,"
             " price: {input_per_mtok_usd: 3, output_per_mtok_usd: 15}}",
             "models:", "  chat: {targets: [gpu-a, gpu-b, mini, big]}", "  other: {targets: [gpu-a, mini]}",
             "rules:",
             "  - {name: sensitive, when: {sensitivity: {gte: confidential}}, route: {targets: [gpu-a, gpu-b]}}"]
    for i in range(rules - 2):
        lines.append(f"  - {{name: r{i}, when: {{tags: {{contains: t{i}}}, input_tokens: {{gt: {i * 100}}},"
                     f" metadata.app: {{in: [app{i}, x{i}]}}}}, route: {{strategy: least_loaded}}}}")
    lines.append("  - {name: busy, route: {strategy: cheapest, spillover: {queue_over: 8}}}")
    return "\n".join(lines) + "\n"


def body(rng: random.Random) -> bytes:
    words = [rng.choice(["the", "gateway", "routes", "requests", "to", "open", "models", "first", "and",
                         "spills", "when", "busy", "cost", "policy", "team"]) for _ in range(180)]
    return orjson.dumps({"model": "chat", "max_tokens": 256, "metadata": {"app": "web"},
                         "messages": [{"role": "system", "content": "You are terse."},
                                      {"role": "user", "content": " ".join(words)}]})


def timed(fn, n: int) -> float:  # noqa: ANN001
    """Median µs per call over 7 batches of n."""
    batches = []
    for _ in range(7):
        start = time.perf_counter_ns()
        for _ in range(n):
            fn()
        batches.append((time.perf_counter_ns() - start) / n / 1000)
    return statistics.median(batches)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    n = 300 if parser.parse_args(argv).quick else 3000
    loaded = load_policy_text(policy_yaml(), {}, kinds=KIND_TABLE, file="bench-policy.yaml")
    planner, scanner = build_planner(loaded), Scanner(loaded.policy.sensitivity)
    rng = random.Random(7)
    raw = body(rng)
    parsed = parse_body(raw, "chat")
    facts, _ = build_facts(parsed, "chat", {}, scanner, loaded.policy.settings)
    load = {"gpu-a": BackendLoad(queue=3, running=5), "gpu-b": BackendLoad(queue=0, running=2)}
    plan = planner.plan(facts, load, frozenset(), rng)
    assert plan.rule == "busy" and plan.targets[0] == "gpu-b", plan  # 20 rules evaluated, the last matches
    results = {
        "plan (20 rules, last one matches)": timed(lambda: planner.plan(facts, load, frozenset(), rng), n),
        "facts+plan (1 KB body, scan included)": timed(
            lambda: planner.plan(build_facts(parse_body(raw, "chat"), "chat", {}, scanner,
                                             loaded.policy.settings)[0], load, frozenset(), rng), n),
        "explain (full rule trace)": timed(lambda: planner.plan(facts, load, frozenset(), rng, explain=True), n),
    }
    print(f"planner, python {sys.version.split()[0]}; {len(raw)} byte body; median of 7 batches of {n}")
    for label, us in results.items():
        print(f"  {label:40s} {us:8.1f} µs")
    verdict = "PASS" if results["plan (20 rules, last one matches)"] <= TARGET_US else "FAIL"
    print(f"target: plan <= {TARGET_US:.0f} µs -> {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
