"""The real coding agents, served through the gateway by a chat-only upstream.

Claude Code (Anthropic Messages: ``/v1/messages``) and Codex CLI (OpenAI Responses:
``/v1/responses``), installed from the npm registry at pinned versions by
``tests/tools/ensure-agents.sh``, each do one small task through the running gateway. The
gateway's only backend is an ``openai_compatible`` chat upstream
(``tests.fakes.scripted_chat``) that answers the first turn with one scripted shell-tool
call and the turn carrying the tool's result with a final text. Each test checks that the
agent ran the tool (the file exists), printed the final text, and that every request it
sent got a 2xx; the chat upstream checks that the tool call and its result crossed the
translation intact.

A recording reverse proxy sits between the agent and the gateway: it keeps what the agent
sent and what the gateway answered (status, ``x-switchyard-*`` headers such as the
sensitivity level the gateway gave the session). All of it, the upstream's requests and
the agent's output are written under ``${SWITCHYARD_ARTIFACTS:-/tmp/switchyard-artifacts}/agents/``
for every run, passed or failed.

The agents run as subprocesses of the test's event loop (the gateway is in-process), with
a minimal environment (a temporary HOME, no inherited provider keys), stdin from
/dev/null, in their own session, under a hard timeout after which their process group is
killed by its id.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp import web
from multidict import CIMultiDict

from policies.models import SensitivitySpec
from policies.sensitivity import Scanner
from router.surfaces import messages as messages_codec
from router.surfaces import responses as responses_codec
from tests.fakes.faults import Fault
from tests.fakes.scripted_chat import ScriptedCall, ScriptedChat

REPO = Path(__file__).resolve().parents[2]
ENSURE_AGENTS = REPO / "tests" / "tools" / "ensure-agents.sh"
AGENT_KEY = "sk-switchyard-agents-" + "k" * 16
FINAL_TEXT = "switchyard-final-ok: result.txt written"
MARKER = "switchyard-ok"
COMMAND = f"echo {MARKER} > result.txt"
TASK = "Create the file result.txt containing the word switchyard-ok, with one shell command."
AGENT_TIMEOUT_S = 180
#: the gateway aliases: the names the agents know, so they send their full, real requests
CLAUDE_ALIAS = "claude-opus-5-5"
CODEX_ALIAS = "gpt-5.5"
#: The level the gateway gives each agent's plain session (a task with no secret and no personal
#: data) under the default detectors with the shipped policies' ``sensitivity.allow``. Without
#: it Claude Code's is ``confidential``: every request carries its git-attribution reminder
#: ("Co-Authored-By: Claude ... <noreply@anthropic.com>") and the email detector fires on that
#: address (checked below on what it sent), so every session would be kept home.
PLAIN_SESSION_LEVEL = {"claude": "public", "codex": "public"}
WITHOUT_ALLOW_LEVEL = {"claude": "confidential", "codex": "public"}
#: how each agent's shell tool is called (its name and arguments, as the agent declares them)
SCRIPT = (
    ScriptedCall("Bash", {"command": COMMAND, "description": "Write the result file"}),
    ScriptedCall("exec_command", {"cmd": COMMAND}),
)
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
              "proxy-authorization", "proxy-authenticate", "host", "content-length"}
SECRET_HEADERS = {"authorization", "x-api-key"}


# -- the agents -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def agents() -> dict[str, str]:
    """``{"claude": path, "codex": path}``: installed once into the user cache (reused)."""
    done = subprocess.run(["bash", str(ENSURE_AGENTS)], capture_output=True, text=True, timeout=900,
                          check=False)
    assert done.returncode == 0, f"ensure-agents.sh failed:\n{done.stderr[-4000:]}"
    found = dict(line.split(" ", 1) for line in done.stdout.splitlines() if line.strip())
    assert set(found) == {"claude", "codex"}, done.stdout
    return found


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    seconds: float


async def run_agent(argv: list[str], env: dict[str, str], cwd: Path) -> Run:
    """Run one agent to completion; after the timeout (or if the test is cancelled) kill its
    whole process group: it and the shells it started. A killed run has returncode -9."""
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=cwd, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, start_new_session=True)
    note = ""
    try:
        async with asyncio.timeout(AGENT_TIMEOUT_S):
            out, err = await proc.communicate()
    except TimeoutError:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = await proc.communicate()
        note = f"\n[switchyard] killed: no exit within {AGENT_TIMEOUT_S} s"
    finally:
        if proc.returncode is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(errors="replace"), err.decode(errors="replace") + note,
               time.monotonic() - started)


def base_env(home: Path) -> dict[str, str]:
    """What every agent gets: a PATH with node and bash, a private HOME, nothing else inherited,
    and a proxy that is not there for any host but loopback: should an agent try to reach its
    vendor anyway, the attempt fails here instead of leaving the machine."""
    nowhere = "http://127.0.0.1:9"  # the discard port: nothing listens
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8", "TMPDIR": str(home),
            "HTTP_PROXY": nowhere, "HTTPS_PROXY": nowhere, "ALL_PROXY": nowhere,
            "http_proxy": nowhere, "https_proxy": nowhere, "all_proxy": nowhere,
            "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}


# -- the recording proxy ----------------------------------------------------------------------

@dataclass
class Exchange:
    """One request the agent sent and what the gateway answered."""

    method: str
    path: str
    request_headers: dict[str, str]
    request_body: bytes
    status: int = 0
    response_headers: dict[str, str] = field(default_factory=dict)
    response_body: bytes = b""
    error: str | None = None

    def request_json(self) -> Any:
        try:
            return json.loads(self.request_body) if self.request_body else None
        except ValueError:
            return None

    def record(self) -> dict[str, Any]:
        """A JSON view for the artifacts; credentials are redacted."""
        headers = {k: ("<redacted>" if k.lower() in SECRET_HEADERS else v)
                   for k, v in self.request_headers.items()}
        body = self.request_json()
        return {"method": self.method, "path": self.path, "request_headers": headers,
                "request_bytes": len(self.request_body),
                "request_body": body if body is not None else self.request_body.decode(errors="replace"),
                "status": self.status, "response_headers": self.response_headers,
                "response_body": self.response_body.decode(errors="replace"), "error": self.error}


class RecordingProxy:
    """A reverse proxy on a free loopback port that forwards everything to ``target``
    byte for byte (streams included, compression untouched) and records each exchange."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.exchanges: list[Exchange] = []
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None
        self.url = ""

    async def __aenter__(self) -> RecordingProxy:
        self._http = aiohttp.ClientSession(auto_decompress=False, timeout=aiohttp.ClientTimeout(total=300))
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._http is not None:
            await self._http.close()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        exchange = Exchange(request.method, request.path_qs, dict(request.headers), body)
        self.exchanges.append(exchange)
        headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP)
        assert self._http is not None
        try:
            async with self._http.request(request.method, self.target + request.path_qs, headers=headers,
                                          data=body, allow_redirects=False) as upstream:
                return await self._relay(request, upstream, exchange)
        except aiohttp.ClientError as error:
            exchange.error = repr(error)
            raise

    @staticmethod
    async def _relay(request: web.Request, upstream: aiohttp.ClientResponse,
                     exchange: Exchange) -> web.StreamResponse:
        exchange.status = upstream.status
        exchange.response_headers = dict(upstream.headers)
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for key, value in upstream.headers.items():
            if key.lower() not in HOP_BY_HOP:
                response.headers.add(key, value)
        await response.prepare(request)
        chunks = []
        async for chunk in upstream.content.iter_any():
            chunks.append(chunk)
            await response.write(chunk)
        exchange.response_body = b"".join(chunks)
        await response.write_eof()
        return response


# -- the stack -------------------------------------------------------------------------------

def agents_policy(upstream: ScriptedChat) -> str:
    backend = (f"{{kind: openai_compatible, base_url: '{upstream.base_url}', model: scripted-model, "
               "timeouts: {connect_s: 2, first_token_s: 30, idle_s: 30, total_s: 120}}")
    return f"""
version: 1
backends:
  chat-upstream: {backend}
models:
  {CLAUDE_ALIAS}: {{targets: [chat-upstream]}}
  {CODEX_ALIAS}: {{targets: [chat-upstream]}}
teams:
  agents: {{keys: ["${{AGENT_KEY}}"]}}
sensitivity:
  allow: [noreply@anthropic.com]   # as the shipped policies: Claude Code's co-author address
"""


@dataclass
class Stack:
    upstream: ScriptedChat
    proxy: RecordingProxy
    work: Path
    home: Path


@pytest.fixture
async def stack_for_agent(gateway, stack, tmp_path) -> AsyncIterator[Stack]:
    upstream = await stack.enter_async_context(ScriptedChat(calls=SCRIPT, final_text=FINAL_TEXT))
    url = await gateway(agents_policy(upstream), env={"AGENT_KEY": AGENT_KEY})
    proxy = await stack.enter_async_context(RecordingProxy(url))
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    yield Stack(upstream, proxy, work, home)


def artifacts_dir(name: str) -> Path:
    root = Path(os.environ.get("SWITCHYARD_ARTIFACTS", "/tmp/switchyard-artifacts")) / "agents" / name
    root.mkdir(parents=True, exist_ok=True)
    return root


def keep_artifacts(name: str, s: Stack, run: Run | None) -> Path:
    """What the agent sent, what the gateway answered, what the upstream got, the agent's output."""
    out = artifacts_dir(name)
    with open(out / "exchanges.jsonl", "w") as f:
        for exchange in s.proxy.exchanges:
            f.write(json.dumps(exchange.record()) + "\n")
    with open(out / "upstream.jsonl", "w") as f:
        for received in s.upstream.received:
            f.write(json.dumps({"method": received.method, "path": received.path, "body": received.body}) + "\n")
    answers = [vars(a) for a in s.upstream.answers]
    summary = {"agent": name, "requests": [summary_line(e) for e in s.proxy.exchanges], "upstream_answers": answers,
               "returncode": run.returncode if run else None, "seconds": round(run.seconds, 2) if run else None}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    if run is not None:
        (out / "stdout.txt").write_text(run.stdout)
        (out / "stderr.txt").write_text(run.stderr)
    return out


def summary_line(e: Exchange) -> dict[str, Any]:
    return {"method": e.method, "path": e.path, "bytes": len(e.request_body), "status": e.status,
            "sensitivity": e.response_headers.get("x-switchyard-sensitivity"),
            "backend": e.response_headers.get("x-switchyard-backend"),
            "dropped": e.response_headers.get("x-switchyard-dropped")}


# -- what every agent run must show ----------------------------------------------------------

def failed_exchanges(s: Stack) -> str:
    bad = [e for e in s.proxy.exchanges if not 200 <= e.status < 300]
    return "\n".join(f"{e.method} {e.path} -> {e.status} {e.error or ''} {e.response_body[:2000]!r}" for e in bad)


def assert_tool_round_trip(s: Stack, tool: str, argument: str, *, tries: int = 1) -> None:
    """The upstream saw the tool offered and answered a call of it (``tries`` times: a turn
    whose stream was cut is asked again), then got the last call's result and gave the final text."""
    kinds = [a.kind for a in s.upstream.answers]
    assert kinds == ["tool_call"] * tries + ["final"], kinds
    call = s.upstream.answers[tries - 1]
    bodies = s.upstream.chat_bodies()
    offered = {t["function"]["name"]: t["function"] for t in bodies[0]["tools"] if t.get("type") == "function"}
    assert tool in offered and argument in json.dumps(offered[tool].get("parameters")), offered.get(tool)
    last = bodies[-1]
    calls = [c for m in last["messages"] if m.get("role") == "assistant" for c in m.get("tool_calls") or []]
    assert [(c["id"], c["function"]["name"]) for c in calls] == [(call.call_id, tool)], calls
    assert json.loads(calls[0]["function"]["arguments"])[argument] == COMMAND
    results = [m for m in last["messages"] if m.get("role") == "tool"]
    assert [m["tool_call_id"] for m in results] == [call.call_id], results


def assert_served(s: Stack, surface: str) -> tuple[list[Exchange], set[str]]:
    """Every agent request got a 2xx and each turn used ``surface``: those exchanges, and the
    sensitivity levels the gateway gave them."""
    assert s.proxy.exchanges, "the agent sent nothing to the gateway"
    assert not failed_exchanges(s), "requests the gateway did not serve:\n" + failed_exchanges(s)
    turns = [e for e in s.proxy.exchanges if e.path.split("?")[0] == surface and e.method == "POST"]
    assert len(turns) >= 2, [summary_line(e) for e in s.proxy.exchanges]
    return turns, {e.response_headers.get("x-switchyard-sensitivity", "<missing>") for e in turns}


def levels_without_allow(turns: list[Exchange], surface: str) -> set[str]:
    """The levels the same requests get with the default detectors and no ``allow``: what the
    agent's own boilerplate does to a plain session on its own."""
    scanner = Scanner(SensitivitySpec())
    out = set()
    for e in turns:
        body = e.request_json()
        chat = messages_codec.to_chat(body).chat if surface == "/v1/messages" else responses_codec.to_chat(body)[0].chat
        out.add(scanner.scan("chat", chat).level)
    return out


def cut_first_stream(s: Stack, cut: bool) -> int:
    """With ``cut``, the upstream breaks its first stream inside the tool call's arguments (the
    gateway can only report it in the stream); returns how many tool-call answers to expect."""
    if cut:
        s.upstream.break_next_stream(Fault(cut_after_chunks=1))
    return 2 if cut else 1


# -- Claude Code -----------------------------------------------------------------------------

@pytest.mark.parametrize(("credential", "cut"), [("ANTHROPIC_API_KEY", False), ("ANTHROPIC_AUTH_TOKEN", False),
                                                 ("ANTHROPIC_API_KEY", True)],
                         ids=["x-api-key", "bearer", "stream-cut"])
async def test_claude_code_does_one_tool_call_through_the_gateway(agents, stack_for_agent, credential, cut):
    s: Stack = stack_for_agent
    tries = cut_first_stream(s, cut)
    env = {**base_env(s.home), "ANTHROPIC_BASE_URL": s.proxy.url, credential: AGENT_KEY,
           # without it Claude Code also calls its vendor's own hosts (with the key)
           "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
           # it retries even a 401 ten times, backing off to minutes: a broken run fails in seconds instead
           "CLAUDE_CODE_MAX_RETRIES": "2"}
    # --allowedTools: as root, --dangerously-skip-permissions is refused (unless IS_SANDBOX=1)
    argv = [agents["claude"], "-p", TASK, "--output-format", "json", "--model", CLAUDE_ALIAS,
            "--allowedTools", "Bash"]
    run = None
    try:
        run = await run_agent(argv, env, s.work)
        assert run.returncode == 0, f"claude exited {run.returncode}\n{run.stderr[-3000:]}\n{run.stdout[-3000:]}"
        output = json.loads(run.stdout)
        assert (output["is_error"], output["subtype"]) == (False, "success"), output
        assert output["result"] == FINAL_TEXT
        assert (s.work / "result.txt").read_text().strip() == MARKER
        turns, levels = assert_served(s, "/v1/messages")
        assert_tool_round_trip(s, "Bash", "command", tries=tries)
        auth = "x-api-key" if auth_name(credential) == "x-api-key" else "authorization"
        assert all(auth in {k.lower() for k in e.request_headers} for e in s.proxy.exchanges)
        assert levels == {PLAIN_SESSION_LEVEL["claude"]}, f"Claude Code's plain session was given {levels}"
        assert levels_without_allow(turns, "/v1/messages") == {WITHOUT_ALLOW_LEVEL["claude"]}
        if cut:  # the broken stream ends in an error event; Claude Code asks again without streaming
            assert b"event: error" in turns[0].response_body, turns[0].response_body[-2000:]
            assert turns[1].request_json()["stream"] is False
            assert json.loads(turns[1].response_body)["stop_reason"] == "tool_use"
    finally:
        keep_artifacts("claude-" + ("stream-cut" if cut else auth_name(credential)), s, run)


def auth_name(credential: str) -> str:
    return "x-api-key" if credential == "ANTHROPIC_API_KEY" else "bearer"


# -- Codex CLI -------------------------------------------------------------------------------

def codex_config(base_url: str) -> str:
    return f"""\
model = "{CODEX_ALIAS}"
model_provider = "switchyard"
approval_policy = "never"
sandbox_mode = "danger-full-access"
check_for_update_on_startup = false

[model_providers.switchyard]
name = "Switchyard"
base_url = "{base_url}/v1"
env_key = "SWITCHYARD_API_KEY"
wire_api = "responses"

[analytics]
enabled = false

[features]
plugins = false
remote_plugin = false
apps = false
"""


def codex_events(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def sse_types(body: bytes) -> list[str]:
    return [line[len("event: "):] for line in body.decode(errors="replace").splitlines() if line.startswith("event: ")]


@pytest.mark.parametrize("cut", [False, True], ids=["clean", "stream-cut"])
async def test_codex_does_one_tool_call_through_the_gateway(agents, stack_for_agent, cut):
    s: Stack = stack_for_agent
    tries = cut_first_stream(s, cut)
    codex_home = s.home / "codex"
    codex_home.mkdir()
    (codex_home / "config.toml").write_text(codex_config(s.proxy.url))
    env = {**base_env(s.home), "CODEX_HOME": str(codex_home), "SWITCHYARD_API_KEY": AGENT_KEY}
    # stdin is /dev/null: with an open stdin `codex exec` waits for more prompt forever
    argv = [agents["codex"], "exec", "--strict-config", "--skip-git-repo-check", "--ephemeral", "--json",
            "-C", str(s.work), TASK]
    run = None
    try:
        run = await run_agent(argv, env, s.work)
        assert run.returncode == 0, f"codex exited {run.returncode}\n{run.stderr[-3000:]}\n{run.stdout[-3000:]}"
        events = codex_events(run.stdout)
        items = [e["item"] for e in events if e.get("type") == "item.completed"]
        commands = [i for i in items if i.get("type") == "command_execution"]
        assert len(commands) == 1 and COMMAND in commands[0]["command"], items
        assert commands[0]["exit_code"] == 0, commands
        assert [i["text"] for i in items if i.get("type") == "agent_message"] == [FINAL_TEXT], items
        assert [e["type"] for e in events if e["type"].startswith("turn.")] == ["turn.started", "turn.completed"]
        assert (s.work / "result.txt").read_text().strip() == MARKER
        turns, levels = assert_served(s, "/v1/responses")
        assert_tool_round_trip(s, "exec_command", "cmd", tries=tries)
        assert all(e.request_headers.get("Authorization") == f"Bearer {AGENT_KEY}" for e in s.proxy.exchanges)
        assert levels == {PLAIN_SESSION_LEVEL["codex"]}, f"Codex's plain session was given {levels}"
        assert levels_without_allow(turns, "/v1/responses") == {WITHOUT_ALLOW_LEVEL["codex"]}
        assert all(sse_types(t.response_body)[-1] == "response.completed" for t in turns[-2:])
        if cut:  # the broken stream ends in response.failed; Codex reconnects and asks again
            assert sse_types(turns[0].response_body)[-1] == "response.failed", turns[0].response_body[-2000:]
            assert any(e["type"] == "error" and "Reconnecting" in e["message"] for e in events), events
    finally:
        keep_artifacts("codex-stream-cut" if cut else "codex", s, run)


# -- the scripted upstream itself (what the agent tests stand on) ---------------------------

@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_scripted_chat_answers_a_tool_call_then_the_final_text(stack, stream):
    upstream = await stack.enter_async_context(ScriptedChat(calls=SCRIPT, final_text=FINAL_TEXT))
    client = openai.AsyncOpenAI(base_url=upstream.base_url, api_key="unused", max_retries=0, timeout=10)
    tools = [{"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}
             for name in ("Read", "exec_command")]
    messages: list[dict[str, Any]] = [{"role": "user", "content": TASK}]

    async def ask() -> tuple[str, list[dict[str, Any]], str | None]:
        extra = {"stream_options": {"include_usage": True}} if stream else {}
        if not stream:
            done = await client.chat.completions.create(model="m", messages=messages, tools=tools)
            message = done.choices[0].message
            calls = [c.model_dump() for c in message.tool_calls or []]
            return message.content or "", calls, done.choices[0].finish_reason
        text, calls, finish, usage = "", {}, None, None
        async for chunk in await client.chat.completions.create(model="m", messages=messages, tools=tools,
                                                                stream=True, **extra):
            usage = chunk.usage or usage
            for choice in chunk.choices:
                text += choice.delta.content or ""
                finish = choice.finish_reason or finish
                for d in choice.delta.tool_calls or []:
                    call = calls.setdefault(d.index, {"id": d.id, "type": "function",
                                                      "function": {"name": d.function.name, "arguments": ""}})
                    call["function"]["arguments"] += d.function.arguments or ""
        assert usage is not None and usage.total_tokens > 0
        return text, list(calls.values()), finish

    text, calls, finish = await ask()
    assert (text, finish) == ("", "tool_calls")
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == \
        [("exec_command", {"cmd": COMMAND})]
    messages += [{"role": "assistant", "content": None, "tool_calls": calls},
                 {"role": "tool", "tool_call_id": calls[0]["id"], "content": "done"}]
    assert await ask() == (FINAL_TEXT, [], "stop")
    assert [a.kind for a in upstream.answers] == ["tool_call", "final"]
    assert all(a.stream is stream for a in upstream.answers)
    assert len(upstream.chat_bodies()) == 2
