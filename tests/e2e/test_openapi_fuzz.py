"""schemathesis against the running gateway (issue 11, item 6): requests generated from the
gateway's own ``/openapi.json`` — valid and schema-breaking — get no answer >= 500 and leave
no traceback in the gateway's log.

A smoke-sized run of ``bench/fuzz.py`` (its own processes: the gateway, fake upstreams for a
direct, an OpenAI-through-litellm and an Anthropic-through-litellm backend), fixed seed; the
full >= 5,000-request run and its figures are in bench/README.md.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[2]


def test_fuzzing_the_gateway_finds_no_server_error(tmp_path: Path) -> None:
    out = tmp_path / "fuzz.json"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "fuzz.py"), "--requests", "250", "--seed", "3",
                           "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=170)
    assert done.returncode in (0, 1), done.stderr[-3000:]
    result = orjson.loads(out.read_bytes())
    assert result["requests"] >= 250
    assert result["server_errors"] == 0, done.stdout[-4000:]
    assert result["tracebacks"] == 0, done.stdout[-4000:]
    assert result["transport_errors"] == {}, done.stdout[-4000:]
    assert done.returncode == 0
    statuses = {int(s) for s in result["by_status"]}
    assert 200 in statuses and 400 in statuses  # it reached the upstreams and it broke the schema
    assert len(result["by_operation"]) == result["operations"]  # every operation was exercised
