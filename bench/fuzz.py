"""Fuzz the running gateway against its own OpenAPI document (schemathesis).

    .venv/bin/python bench/fuzz.py                       # >= 5,000 requests (a few minutes)
    .venv/bin/python bench/fuzz.py --requests 300        # a smoke run (CI: tests/e2e/test_openapi_fuzz.py)
    .venv/bin/python bench/fuzz.py --seed 7 --json /tmp/fuzz.json

One command does everything and cleans up after itself:

1. starts the fake upstreams of the test suite (``tests/fakes``: OpenAI's wire format, served
   to a ``vllm`` backend directly and to an ``openai`` backend through litellm; Anthropic's,
   through litellm) in a thread of this process;
2. starts the gateway (``switchyard serve``, its own process, admin and dashboard keys set,
   a team with a virtual key) on a free port, and waits for ``/healthz``;
3. loads ``GET /openapi.json`` into schemathesis and, operation by operation, draws requests
   from it with Hypothesis — valid ones (``positive``) and ones that break the schema
   (``negative``) — round after round with new seeds until ``--requests`` were sent. Each
   request carries the key its operation's ``security`` names (so the document's security
   is exercised too);
4. counts answers by status, keeps the first request of every 5xx, and reads the gateway's
   log for tracebacks; stops every process it started, by PID.

Exit status: 0 when no answer was >= 500 and the log holds no traceback, 1 otherwise, 2 when
the run could not be made. Deterministic for a given ``--seed`` (the gateway's answers
may still vary with timing). All traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the test fakes

import schemathesis  # noqa: E402
from aiohttp import web  # noqa: E402
from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402

from tests.fakes.anthropic_upstream import FakeAnthropic  # noqa: E402
from tests.fakes.base import BODY  # noqa: E402
from tests.fakes.openai_upstream import FakeOpenAI, error_response  # noqa: E402

HOST = "127.0.0.1"
ADMIN_KEY = "fuzz-admin-key-0123456789abcdef"
DASHBOARD_KEY = "fuzz-dashboard-key-0123456789abcdef"
VIRTUAL_KEY = "sk-fuzz-team-0123456789abcdef"
KEYS = {"virtualKey": VIRTUAL_KEY, "virtualKeyHeader": VIRTUAL_KEY, "adminKey": ADMIN_KEY,
        "dashboardKey": DASHBOARD_KEY}
READY_LIMIT_S = 30.0
REQUEST_TIMEOUT_S = 30.0
MAX_ROUNDS = 50

POLICY = """version: 1
backends:
  gpu: {{kind: vllm, base_url: '{openai}', model: served-model,
         timeouts: {{connect_s: 2, first_token_s: 10, idle_s: 10, total_s: 20}}}}
  gpt: {{kind: openai, base_url: '{openai}', model: gpt-4o-mini, api_key: sk-upstream-openai,
         timeouts: {{connect_s: 2, first_token_s: 10, idle_s: 10, total_s: 20}}}}
  claude: {{kind: anthropic, base_url: '{anthropic}', model: claude-sonnet-4-5, api_key: sk-ant-upstream,
            timeouts: {{connect_s: 2, first_token_s: 10, idle_s: 10, total_s: 20}}}}
models:
  chat-default: {{targets: [gpu, gpt]}}
  closed: {{targets: [claude, gpt]}}
  local-only: {{targets: [gpu]}}
rules:
  - name: sensitive-stays-home
    when: {{sensitivity: {{gte: confidential}}}}
    route: {{targets: [gpu], fallback: none}}
teams:
  fuzz: {{keys: ['{key}'], limits: {{rpm: 1000000, tpm: 1000000000}}}}
"""


@dataclass
class Tally:
    statuses: Counter[int] = field(default_factory=Counter)
    by_operation: dict[str, Counter[int]] = field(default_factory=dict)
    server_errors: list[dict[str, Any]] = field(default_factory=list)  # the first of each (operation, status)
    transport_errors: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.statuses.values()) + sum(self.transport_errors.values())

    def add(self, label: str, status: int, case: Any, body: bytes) -> None:
        self.statuses[status] += 1
        self.by_operation.setdefault(label, Counter())[status] += 1
        if status >= 500 and not any(e["operation"] == label and e["status"] == status for e in self.server_errors):
            self.server_errors.append({"operation": label, "status": status, "curl": case.as_curl_command(),
                                       "answer": body[:2000].decode(errors="replace")})


# -- processes ---------------------------------------------------------------------------------

def _ints(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in value)


class FuzzOpenAI(FakeOpenAI):
    """The OpenAI fake, checking embeddings input as a real server does (a 400, where the fake
    would fail with a 500 on floats, or compute a vector of any ``dimensions`` asked for —
    minutes for 10^8 — and the gateway rightly answer 502 or 504)."""

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        body = request[BODY]
        data = body if isinstance(body, dict) else {}
        dims, given = data.get("dimensions"), data.get("input")
        if isinstance(dims, int) and dims > 4096:
            return error_response(400, "dimensions must be at most 4096", "invalid_request_error",
                                  param="dimensions")
        texts = isinstance(given, list) and all(isinstance(x, str) for x in given)
        tokens = _ints(given) or (isinstance(given, list) and all(_ints(x) for x in given))
        if given is not None and not (isinstance(given, str) or texts or tokens):
            return error_response(400, "input must be a string, an array of strings or token arrays",
                                  "invalid_request_error", param="input")
        return await super()._embeddings(request)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@contextmanager
def fake_upstreams() -> Iterator[tuple[str, str]]:
    """(OpenAI base URL, Anthropic base URL), served from a thread of this process."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fakes", daemon=True)
    thread.start()
    openai_fake = FuzzOpenAI(name="fuzz-openai", model_name="fake-model")
    anthropic_fake = FakeAnthropic(api_key="sk-ant-upstream", model_name="claude-fake")
    for fake in (openai_fake, anthropic_fake):
        asyncio.run_coroutine_threadsafe(fake.start(), loop).result(timeout=10)
    try:
        yield openai_fake.base_url, anthropic_fake.base_url
    finally:
        for fake in (openai_fake, anthropic_fake):
            asyncio.run_coroutine_threadsafe(fake.close(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)


@contextmanager
def gateway(policy: Path, log: Path) -> Iterator[str]:
    """``switchyard serve`` on a free port, stopped by PID (SIGTERM, then SIGKILL)."""
    port = free_port()
    exe = Path(sys.executable).with_name("switchyard")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "router"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "SWITCHYARD_ADMIN_KEY": ADMIN_KEY,
           "SWITCHYARD_DASHBOARD_KEY": DASHBOARD_KEY}
    env.pop("SWITCHYARD_REDIS_URL", None)
    with log.open("wb") as out:
        proc = subprocess.Popen([*cmd, "serve", "--policy", str(policy), "--host", HOST, "--port", str(port),
                                 "--no-access-log"], stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, cwd=ROOT, env=env, start_new_session=True)
    base = f"http://{HOST}:{port}"
    try:
        wait_ready(base, proc)
        yield base
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def wait_ready(base: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_LIMIT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the gateway exited with {proc.returncode} before it was ready")
        try:
            if requests.get(base + "/healthz", timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the gateway did not answer /healthz within {READY_LIMIT_S:g} s")


# -- fuzzing -----------------------------------------------------------------------------------

def auth_headers(operation: Any) -> dict[str, str]:
    """The key named by the operation's first security requirement (none for public routes)."""
    requirements = operation.definition.raw.get("security") or [{}]
    for scheme in requirements[0]:
        if scheme == "virtualKeyHeader":
            return {"x-api-key": KEYS[scheme]}
        return {"Authorization": f"Bearer {KEYS[scheme]}"}
    return {}


def fuzz_operation(operation: Any, mode: GenerationMode, examples: int, run_seed: int, base: str,
                   session: requests.Session, tally: Tally) -> None:
    """Up to ``examples`` requests drawn for ``operation`` in ``mode``, each sent and counted."""
    label = f"{operation.method.upper()} {operation.path}"
    try:
        strategy = operation.as_strategy(generation_mode=mode)
    except Exception:  # noqa: BLE001 - nothing to generate in this mode (e.g. no parameters to break)
        return
    headers = auth_headers(operation)

    @seed(run_seed)
    @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def send(case: Any) -> None:
        try:
            response = case.call(base_url=base, session=session, headers=headers, timeout=REQUEST_TIMEOUT_S)
        except requests.RequestException as exc:
            tally.transport_errors[f"{label}: {exc.__class__.__name__}"] += 1
            return
        tally.add(label, response.status_code, case, response.content)

    try:
        send()
    except Unsatisfiable:
        return  # nothing (more) to draw: e.g. no parameter to break in negative mode
    except Exception as exc:  # noqa: BLE001 - a generation failure of one operation must not end the run
        tally.transport_errors[f"{label}: generation failed: {exc.__class__.__name__}: {exc}"[:300]] += 1


def fuzz(base: str, requests_wanted: int, run_seed: int, tally: Tally) -> int:
    """Rounds over every operation and both modes until ``requests_wanted`` were sent."""
    schema = schemathesis.openapi.from_url(base + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    per_round = len(operations) * 2
    rounds = 0
    with requests.Session() as session:
        while tally.total < requests_wanted and rounds < MAX_ROUNDS:
            examples = max(5, -(-(requests_wanted - tally.total) // per_round))
            for index, operation in enumerate(operations):
                for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                    fuzz_operation(operation, mode, examples, run_seed * 1_000_003 + rounds * 1_009 + index,
                                   base, session, tally)
            rounds += 1
    return len(operations)


def tracebacks(log: Path) -> list[str]:
    text = log.read_text(errors="replace")
    return [chunk[:3000] for chunk in text.split("Traceback (most recent call last):")[1:]]


# -- report ------------------------------------------------------------------------------------

def report(tally: Tally, operations: int, seconds: float, traces: list[str], run_seed: int) -> dict[str, Any]:
    return {"requests": tally.total, "operations": operations, "seed": run_seed, "seconds": round(seconds, 1),
            "by_status": {str(k): v for k, v in sorted(tally.statuses.items())},
            "server_errors": sum(v for k, v in tally.statuses.items() if k >= 500),
            "by_operation": {op: {str(k): v for k, v in sorted(c.items())}
                             for op, c in sorted(tally.by_operation.items())},
            "transport_errors": dict(tally.transport_errors), "first_server_errors": tally.server_errors,
            "tracebacks": len(traces), "first_tracebacks": traces[:3]}


def render(result: dict[str, Any]) -> str:
    lines = [f"schemathesis fuzz: {result['requests']} requests over {result['operations']} operations, "
             f"seed {result['seed']}, {result['seconds']} s",
             "by status: " + ", ".join(f"{k}: {v}" for k, v in result["by_status"].items())]
    for op, counts in result["by_operation"].items():
        lines.append(f"  {op:<32} " + ", ".join(f"{k}: {v}" for k, v in counts.items()))
    if result["transport_errors"]:
        lines.append(f"transport errors: {result['transport_errors']}")
    for error in result["first_server_errors"]:
        lines.append(f"5xx: {error['operation']} -> {error['status']}: {error['answer'][:300]}\n    {error['curl']}")
    for trace in result["first_tracebacks"]:
        lines.append("traceback in the gateway log:\n" + trace)
    verdict = result["server_errors"] == 0 and result["tracebacks"] == 0 and not result["transport_errors"]
    lines.append(f"responses >= 500: {result['server_errors']}, tracebacks: {result['tracebacks']} -> "
                 f"{'PASS' if verdict else 'FAIL'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=5000, help="at least this many requests (default 5000)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--json", type=Path, help="also write the result as JSON")
    args = parser.parse_args(argv)
    started = time.monotonic()
    tally = Tally()
    with tempfile.TemporaryDirectory(prefix="switchyard-fuzz-") as tmp:
        log = Path(tmp) / "gateway.log"
        try:
            with ExitStack() as stack:
                openai_url, anthropic_url = stack.enter_context(fake_upstreams())
                policy = Path(tmp) / "policy.yaml"
                policy.write_text(POLICY.format(openai=openai_url, anthropic=anthropic_url, key=VIRTUAL_KEY))
                base = stack.enter_context(gateway(policy, log))
                operations = fuzz(base, args.requests, args.seed, tally)
        except RuntimeError as exc:
            print(f"fuzz: cannot run: {exc}", file=sys.stderr)
            return 2
        result = report(tally, operations, time.monotonic() - started, tracebacks(log), args.seed)
    print(render(result))
    if args.json:
        args.json.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    failed = result["server_errors"] or result["tracebacks"] or result["transport_errors"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
