"""Replica pools on real servers: ``bench/pools.py --quick`` (three llama.cpp replicas of the
shipped model, four placements, the same small multi-turn replay) must show affinity keeping
every follow-up turn on its conversation's replica — also behind three gateway processes —
and reusing at least as much of the prompts' KV cache as round robin does, by llama.cpp's own
timings. Its own processes, stopped by PID; the full run's figures are in bench/README.md."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_affinity_keeps_conversations_on_their_replica_and_reuses_their_cache(tmp_path: Path) -> None:
    if os.environ.get("SWITCHYARD_SKIP_LLAMACPP") == "1":
        pytest.skip("SWITCHYARD_SKIP_LLAMACPP=1")
    out = tmp_path / "pools.json"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "pools.py"), "--quick", "--slots", "4",
                           "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    placements = orjson.loads(out.read_bytes())["placements"]
    for label in ("affinity", "affinity, 3 gateways"):
        assert placements[label]["follow_ups_on_previous_replica_pct"] == 100.0, placements[label]
    assert placements["round_robin"]["follow_ups_on_previous_replica_pct"] < 100.0  # the baseline moves them
    assert placements["affinity"]["prompt_tokens_reused"] >= placements["round_robin"]["prompt_tokens_reused"]
