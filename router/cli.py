"""The ``switchyard`` command.

    switchyard serve [--policy FILE] [--host H] [--port P] [--workers N] [--drain-s S]
    switchyard policy check FILE…
    switchyard policy schema [--output FILE]
    switchyard report [--since 24h] [--json] [--redis-url URL | --url URL --key K]
    switchyard --version

``serve`` reads ``SWITCHYARD_POLICY``, ``SWITCHYARD_HOST``, ``SWITCHYARD_PORT``,
``SWITCHYARD_WORKERS`` and ``SWITCHYARD_DRAIN_S`` when the flags are not given; the default
policy is the shipped ``policies/default.yaml``. SIGTERM (or SIGINT) drains: see
``router.app.run_app``.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import signal
import socket
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from policies import LoadedPolicy, PolicyError, UnknownAlias, load_policy, policy_schema_json
from router import logfilter
from router.runtime import KIND_TABLE, check_backends, policy_scrubber
from router.settings import LOOPS, Settings

__all__ = ["main"]

log = logging.getLogger("switchyard")
ACCESS_FORMAT = '%a "%r" %s %b %Tfs rid=%{x-request-id}o backend=%{x-switchyard-backend}o'


def _version() -> str:
    try:
        return version("switchyard-gateway")
    except PackageNotFoundError:
        return "0+unknown"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="switchyard", description="OpenAI-compatible LLM routing gateway.")
    parser.add_argument("--version", action="version", version=f"switchyard {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--policy", help="policy YAML (env SWITCHYARD_POLICY; default: shipped default.yaml)")
    serve.add_argument("--host", help="listen address (env SWITCHYARD_HOST; default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (env SWITCHYARD_PORT; default 4000)")
    serve.add_argument("--workers", type=int, help="worker processes sharing the port (default 1)")
    serve.add_argument("--no-access-log", action="store_true", help="do not log one line per request")
    serve.add_argument("--log-level", help="DEBUG, INFO, WARNING, ERROR (env SWITCHYARD_LOG_LEVEL)")
    serve.add_argument("--redis-url", help="shared state for replicas (env SWITCHYARD_REDIS_URL; default in-memory)")
    serve.add_argument("--drain-s", type=float,
                       help="on SIGTERM, seconds requests in flight get to finish (env SWITCHYARD_DRAIN_S; default 10)")
    serve.add_argument("--loop", choices=LOOPS,
                       help="event loop (env SWITCHYARD_LOOP; default uvloop, asyncio to turn it off)")
    keys = sub.add_parser("keys", help="manage virtual keys in the shared store (Redis)")
    keys.add_argument("--redis-url", help="env SWITCHYARD_REDIS_URL")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create a key for a team; prints it once")
    create.add_argument("--team", required=True)
    create.add_argument("--name", default="")
    create.add_argument("--expires", help="lifetime, e.g. 3600s, 90m, 12h, 30d")
    create.add_argument("--budget-usd", type=float, help="this key's own budget, USD per UTC month")
    listing = keys_sub.add_parser("list", help="list keys (ids, never the keys)")
    listing.add_argument("--team")
    revoke = keys_sub.add_parser("revoke", help="revoke a key by id (12 hex, at least the first 8) or the key itself")
    revoke.add_argument("id")
    report = sub.add_parser("report", help="spend, tokens, savings and top rules for a time window")
    report.add_argument("--since", default="24h", help="the window, e.g. 90m, 24h, 30d (default 24h)")
    report.add_argument("--json", action="store_true", help="the raw counters as JSON")
    report.add_argument("--redis-url", help="read every replica's counters from Redis (env SWITCHYARD_REDIS_URL)")
    report.add_argument("--url", help="ask a running gateway instead (default http://127.0.0.1:4000)")
    report.add_argument("--key", help="its dashboard or admin key (env SWITCHYARD_DASHBOARD_KEY / _ADMIN_KEY)")
    policy = sub.add_parser("policy", help="work with policy files")
    policy_sub = policy.add_subparsers(dest="policy_command", required=True)
    check = policy_sub.add_parser("check", help="validate policy files; exit 1 on any error")
    check.add_argument("files", nargs="+", type=Path)
    ptest = policy_sub.add_parser("test", help="run policy test files (*.test.yaml); exit 1 on any failure")
    ptest.add_argument("files", nargs="+", type=Path)
    pschema = policy_sub.add_parser("schema", help="print the JSON Schema of policy files (for editors)")
    pschema.add_argument("--output", type=Path, metavar="FILE", help="write it to FILE instead of stdout")
    explain = sub.add_parser("explain", help="why would this request go where it goes? (offline)")
    explain.add_argument("request", type=Path, help="a chat completions request body (JSON file, - for stdin)")
    explain.add_argument("--policy", type=Path, help="policy YAML (default: SWITCHYARD_POLICY or the shipped one)")
    explain.add_argument("--team", help="the team the request comes from")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "policy":
        if args.policy_command == "schema":
            return policy_schema(args.output)
        return policy_check(args.files) if args.policy_command == "check" else policy_test(args.files)
    if args.command == "explain":
        return explain_offline(args.request, args.policy, args.team)
    if args.command == "keys":
        from router.keyscli import run_keys

        return run_keys(args, os.environ)
    if args.command == "report":
        from router.reportcli import run_report

        return run_report(args, os.environ)
    try:
        settings = Settings.from_env(os.environ, policy=args.policy, host=args.host, port=args.port,
                                     workers=args.workers, log_level=args.log_level, redis_url=args.redis_url,
                                     drain_s=args.drain_s, loop=args.loop,
                                     access_log=False if args.no_access_log else None)
    except ValueError as exc:
        print(f"switchyard: {exc}", file=sys.stderr)
        return 2
    return serve(settings)


def policy_check(files: list[Path]) -> int:
    """Print every error (and warning) of every file; 0 when all are valid."""
    failed = False
    for file in files:
        try:
            loaded = load_policy(file, os.environ, kinds=KIND_TABLE)
            check_backends(loaded, include_disabled=True)
        except PolicyError as exc:
            failed = True
            for issue in exc.issues:
                print(f"error: {issue}", file=sys.stderr)
            continue
        for warning in loaded.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        policy = loaded.policy
        print(f"ok: {file} ({len(policy.backends)} backends, {len(policy.models)} models)")
    return 1 if failed else 0


def policy_test(files: list[Path]) -> int:
    from router.policytest import run_test_file

    failed = passed = 0
    for file in files:
        for case in run_test_file(file):
            if case.ok:
                passed += 1
                continue
            failed += 1
            print(f"FAIL {file}: {case.name}", file=sys.stderr)
            for problem in case.problems:
                print(f"    {problem}", file=sys.stderr)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed or not passed else 0


def policy_schema(output: Path | None) -> int:
    """``switchyard policy schema``: the policy files' JSON Schema, to stdout or to ``output``."""
    text = policy_schema_json()
    if output is None:
        sys.stdout.write(text)
        return 0
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        print(f"switchyard: {exc}", file=sys.stderr)
        return 2
    return 0


def explain_offline(request: Path, policy: Path | None, team: str | None) -> int:
    """``switchyard explain``: plan a request against a policy file without serving it."""
    import orjson

    from policies.sensitivity import Scanner
    from router.body import parse_body
    from router.errors import GatewayError
    from router.explain import explain_json
    from router.facts import build_facts
    from router.runtime import build_planner

    settings = Settings.from_env(os.environ, policy=policy)
    loaded = _load(settings)
    if loaded is None:
        return 1
    try:
        raw = sys.stdin.buffer.read() if str(request) == "-" else request.read_bytes()
        body = parse_body(raw, "chat", loaded.policy.settings.max_n)
        facts, scan = build_facts(body, "chat", {}, Scanner(loaded.policy.sensitivity),
                                  loaded.policy.settings, team=team)
        plan = build_planner(loaded).plan(facts, explain=True)
    except OSError as exc:
        print(f"switchyard: {exc}", file=sys.stderr)
        return 2
    except GatewayError as exc:
        print(f"switchyard: {exc.message}", file=sys.stderr)
        return 1
    except UnknownAlias as exc:
        print(f"switchyard: {exc}", file=sys.stderr)
        return 1
    print(orjson.dumps(explain_json(facts, scan, plan, {}, {}), option=orjson.OPT_INDENT_2).decode())
    return 0


def _load(settings: Settings) -> LoadedPolicy | None:
    try:
        loaded = load_policy(settings.policy, os.environ, kinds=KIND_TABLE)
        check_backends(loaded)
    except PolicyError as exc:
        for issue in exc.issues:
            print(f"error: {issue}", file=sys.stderr)
        print("switchyard: the policy has errors; not starting", file=sys.stderr)
        return None
    return loaded


def serve(settings: Settings) -> int:
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    loaded = _load(settings)
    if loaded is None:
        return 1
    if settings.workers <= 1:
        _serve_one(settings, loaded, reuse_port=False)
        return 0
    return _serve_many(settings)


def _serve_one(settings: Settings, loaded: LoadedPolicy, *, reuse_port: bool,
               sock: socket.socket | None = None) -> None:
    from router.app import create_app, run_app  # the app (and aiohttp server parts) only when serving

    app = create_app(settings, loaded, policy_path=settings.policy)
    logfilter.install(policy_scrubber(loaded, (k for k in (settings.admin_key, settings.dashboard_key) if k)))
    log.info("switchyard %s listening on http://%s:%d (pid %d)", _version(), settings.host, settings.port,
             os.getpid())
    run_app(app, settings, sock=sock, reuse_port=reuse_port,
            access_log=log.getChild("access") if settings.access_log else None, access_log_format=ACCESS_FORMAT)


def _worker(settings: Settings, port: int) -> None:
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    loaded = _load(settings)
    if loaded is not None:
        sock = socket.create_server((settings.host, port), reuse_port=True, backlog=1024)
        _serve_one(settings, loaded, reuse_port=True, sock=sock)


def _serve_many(settings: Settings) -> int:
    """N worker processes, each with its own listening socket on the port (``SO_REUSEPORT``:
    the kernel spreads new connections over them evenly; one socket shared by every worker
    let whichever woke first take most of them). The master holds the port bound (not
    listening: it gets no connections) so it is taken before any worker starts, and port 0
    means one port for all. SIGTERM/SIGINT stop them all."""
    holder = socket.socket(socket.AF_INET6 if ":" in settings.host else socket.AF_INET, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind((settings.host, settings.port))
    port = holder.getsockname()[1]
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_worker, args=(settings, port)) for _ in range(settings.workers)]
    for proc in procs:
        proc.start()
    log.info("started %d workers on http://%s:%d", len(procs), settings.host, port)

    def stop(signum: int, frame: object) -> None:
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signal.SIGTERM)

    def reload(signum: int, frame: object) -> None:
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signal.SIGHUP)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, reload)
    for proc in procs:
        proc.join()
    holder.close()
    return max((p.exitcode or 0) for p in procs)


