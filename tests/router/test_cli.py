"""The ``switchyard`` command as users run it: a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
SWITCHYARD = [sys.executable, "-m", "router"]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SWITCHYARD, *args], capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env={**os.environ, **(env or {})})


def test_version():
    out = run("--version")
    assert out.returncode == 0 and out.stdout.startswith("switchyard 0.")


def test_policy_check_ok_for_every_shipped_policy():
    files = [str(p) for p in sorted((ROOT / "policies").rglob("*.yaml")) if p.parent.name != "tests"]
    assert len(files) >= 6
    out = run("policy", "check", *files)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("ok: ") == len(files)


def test_policy_check_names_file_line_and_path(tmp_path):
    bad = tmp_path / "x.yaml"
    bad.write_text("version: 1\nbackends:\n  a: {kind: vllm, base_url: 'http://h/v1', model: m}\n"
                   "  b: {kind: frobnicator, model: m}\nmodels:\n  chat:\n    targets:\n      - a\n"
                   "      - tgi-b\n")
    out = run("policy", "check", str(bad))
    assert out.returncode == 1
    assert f"{bad}:9 models.chat.targets[1]: unknown backend 'tgi-b'" in out.stderr
    bad.write_text("version: 1\nbackends:\n  a: {kind: vllm, base_url: 'http://h/v1', model: m}\n"
                   "  b: {kind: frobnicator, model: m}\nmodels:\n  chat: {targets: [a, b]}\n")
    out = run("policy", "check", str(bad))
    assert out.returncode == 1
    assert f"{bad}:4 backends.b.kind: unknown backend kind 'frobnicator'" in out.stderr


def test_serve_refuses_a_broken_policy(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("version: 1\nbackends: {}\nmodels: {}\n")
    out = run("serve", "--policy", str(bad), "--port", str(free_port()))
    assert out.returncode == 1
    assert "not starting" in out.stderr and "backends" in out.stderr


def _wait_for_answer(url: str, proc: subprocess.Popen[str], deadline_s: float) -> float:
    """Poll until the gateway answers a chat request; return seconds since ``proc`` started."""
    start = time.monotonic()
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    while time.monotonic() - start < deadline_s:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        try:
            r = httpx.post(url + "/v1/chat/completions", json=body, timeout=5)
            if r.status_code == 200:
                return time.monotonic() - start
        except httpx.TransportError:
            time.sleep(0.02)  # not listening yet: poll again
    raise AssertionError(f"no answer within {deadline_s} s")


def _models(url: str, proc: subprocess.Popen[str], deadline_s: float = 20) -> list[str]:
    """Poll ``GET /v1/models`` until the gateway listens; the model ids it lists."""
    start = time.monotonic()
    while time.monotonic() - start < deadline_s:
        assert proc.poll() is None
        try:
            return [m["id"] for m in httpx.get(url + "/v1/models", timeout=2).json()["data"]]
        except httpx.TransportError:
            time.sleep(0.02)  # not listening yet: poll again
    raise AssertionError(f"not listening within {deadline_s} s")


@pytest.mark.llamacpp
def test_self_hosted_gateway_answers_within_2s_without_importing_litellm(tmp_path, llamacpp_url):
    pol = tmp_path / "local.yaml"
    pol.write_text(f"version: 1\nbackends:\n  local: {{kind: llamacpp, base_url: '{llamacpp_url}', "
                   "model: gemma-3-270m}\nmodels:\n  chat: {targets: [local]}\n")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-X", "importtime", "-m", "router", "serve", "--port", str(port)],
                            cwd=ROOT, env={**os.environ, "SWITCHYARD_POLICY": str(pol)},
                            stderr=subprocess.PIPE, text=True)
    try:
        elapsed = _wait_for_answer(f"http://127.0.0.1:{port}", proc, 20)
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=10)
    imported = [line.rsplit("|", 1)[-1].strip() for line in stderr.splitlines() if line.startswith("import time:")]
    assert "aiohttp" in imported  # the import log really is there
    assert not [m for m in imported if m.startswith("litellm")]
    assert elapsed < 2.0, f"first answer after {elapsed:.2f} s"
    assert proc.returncode == 0  # SIGTERM is a clean shutdown


def test_serve_with_env_settings_and_two_workers(tmp_path):
    pol = tmp_path / "p.yaml"
    pol.write_text("version: 1\nbackends:\n  dead: {kind: vllm, base_url: 'http://127.0.0.1:9/v1', model: m}\n"
                   "models:\n  chat: {targets: [dead]}\n")
    port = free_port()
    env = {**os.environ, "SWITCHYARD_POLICY": str(pol), "SWITCHYARD_PORT": str(port),
           "SWITCHYARD_HOST": "127.0.0.1"}
    proc = subprocess.Popen([*SWITCHYARD, "serve", "--workers", "2"], cwd=ROOT, env=env,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert _models(f"http://127.0.0.1:{port}", proc) == ["chat"]
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert len(children) == 2, children
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0
    # uvloop by default (a worker still starting when the test stops it logs nothing)
    assert "serving on the uvloop event loop" in err and "asyncio event loop" not in err, err


def test_serve_on_asyncio_when_uvloop_is_switched_off(tmp_path):
    pol = tmp_path / "p.yaml"
    pol.write_text("version: 1\nbackends:\n  dead: {kind: vllm, base_url: 'http://127.0.0.1:9/v1', model: m}\n"
                   "models:\n  chat: {targets: [dead]}\n")
    port = free_port()
    env = {**os.environ, "SWITCHYARD_LOOP": "asyncio"}
    proc = subprocess.Popen([*SWITCHYARD, "serve", "--policy", str(pol), "--port", str(port)], cwd=ROOT, env=env,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert _models(f"http://127.0.0.1:{port}", proc) == ["chat"]
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=15)
    assert "serving on the asyncio event loop" in err, err


def test_serve_refuses_an_unknown_event_loop():
    done = run("serve", "--loop", "trio")
    assert done.returncode == 2
    assert "invalid choice: 'trio'" in done.stderr
    done = run("serve", env={**os.environ, "SWITCHYARD_LOOP": "trio"})
    assert done.returncode == 2
    assert "the event loop must be one of uvloop, asyncio, got 'trio'" in done.stderr


def _sockets(pid: int) -> set[int]:
    """Inodes of the sockets a process has open."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            link = os.readlink(fd)
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(int(link[8:-1]))
    return inodes


def _sockets_on(port: int, state: str = "01") -> set[int]:
    """Inodes of the IPv4 TCP sockets whose local port is ``port`` in ``state`` (01:
    established, 0A: listening)."""
    out = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        if int(f[1].rsplit(":", 1)[1], 16) == port and f[3] == state:
            out.add(int(f[9]))
    return out


def test_two_workers_share_new_connections(tmp_path):
    """Each worker listens on its own SO_REUSEPORT socket, so the kernel spreads connections
    over them. With one socket shared by the workers (before) the split was a race: 31/1 under
    load (bench/README.md), 0/64, 0/64, 17/47 and 117/139 here — so the regression check is a
    listening socket per worker; then 256 connections: each worker holds 128 on average, sd 8,
    and fewer than 80 (6 sd below) has a chance of about 1e-9."""
    import socket

    pol = tmp_path / "p.yaml"
    pol.write_text("version: 1\nbackends:\n  dead: {kind: vllm, base_url: 'http://127.0.0.1:9/v1', model: m}\n"
                   "models:\n  chat: {targets: [dead]}\n")
    port = free_port()
    proc = subprocess.Popen([*SWITCHYARD, "serve", "--workers", "2", "--policy", str(pol), "--port", str(port)],
                            cwd=ROOT, stderr=subprocess.PIPE, text=True)
    conns: list[socket.socket] = []
    try:
        _models(f"http://127.0.0.1:{port}", proc)
        workers = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert len(workers) == 2
        deadline = time.monotonic() + 20  # until both listen (the first may answer alone for a moment)
        while not all(_sockets(int(w)) & _sockets_on(port, "0A") for w in workers):
            assert time.monotonic() < deadline, "a worker never listened"
            time.sleep(0.02)
        mine = [_sockets(int(w)) & _sockets_on(port, "0A") for w in workers]
        assert len(mine[0]) == len(mine[1]) == 1 and mine[0] != mine[1], mine  # a listening socket each
        for _ in range(256):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
            assert s.recv(65536).startswith(b"HTTP/1.1 ")  # accepted and answered: held by a worker
            conns.append(s)
        held = _sockets_on(port)
        counts = sorted(len(_sockets(int(w)) & held) for w in workers)
        assert sum(counts) == 256 and counts[0] >= 80, counts
    finally:
        for s in conns:
            s.close()
        proc.terminate()
        proc.communicate(timeout=15)
    assert proc.returncode == 0
