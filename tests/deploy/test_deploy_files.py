"""The deployment files under ``deploy/``: they parse, they agree with each other and with the
gateway, and the Grafana dashboard only queries metrics the gateway exports.

Fast and offline: no Docker, no cluster, no network. Tools found on the machine add checks
(``promtool`` evaluates the dashboard's PromQL, ``kubectl kustomize`` renders the manifests,
``kubernetes_validate`` checks them against the Kubernetes schemas); without them those tests
are skipped.

``promql_metric_names`` is meant for reuse: run it over the dashboard and compare with the
series names of a live ``/metrics`` scrape.
"""

from __future__ import annotations

import glob
import json
import re
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest
import yaml

from policies import load_policy_text
from router.policytest import run_test_file
from router.runtime import KIND_TABLE, check_backends

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
DASHBOARD = DEPLOY / "grafana" / "switchyard.json"
K8S = DEPLOY / "k8s"
NOT_OURS = ("local-model",)  # deploy/ subtrees owned by other scripts

# What the gateway exports at /metrics, as Prometheus names: type and labels (``otel_scope_*``,
# ``job`` and ``instance`` aside). Histograms also have ``_bucket`` (with ``le``), ``_sum``, ``_count``.
GEN_AI_OP = frozenset({"gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model",
                       "switchyard_backend", "error_type"})
EXPORTED: dict[str, tuple[str, frozenset[str]]] = {
    "gen_ai_client_token_usage": ("histogram", frozenset({
        "gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model", "gen_ai_token_type",
        "switchyard_team", "switchyard_backend"})),
    "gen_ai_client_operation_duration_seconds": ("histogram", GEN_AI_OP),
    "gen_ai_client_operation_time_to_first_chunk_seconds": ("histogram", GEN_AI_OP),
    "switchyard_cost_USD_total": ("counter", frozenset({
        "switchyard_team", "switchyard_alias", "switchyard_backend", "gen_ai_provider_name",
        "switchyard_self_hosted", "switchyard_rule"})),
    "switchyard_savings_USD_total": ("counter", frozenset({"switchyard_team", "switchyard_alias",
                                                           "switchyard_backend"})),
    "switchyard_requests_total": ("counter", frozenset({"switchyard_outcome", "error_type", "switchyard_team",
                                                        "switchyard_alias", "switchyard_rule",
                                                        "switchyard_endpoint"})),
    "switchyard_gateway_overhead_seconds": ("histogram", frozenset({"switchyard_stream"})),
    "switchyard_backend_queue_depth": ("gauge", frozenset({"switchyard_backend"})),
    "switchyard_backend_in_flight": ("gauge", frozenset({"switchyard_backend"})),
    "switchyard_backend_circuit_state": ("gauge", frozenset({"switchyard_backend"})),
    "switchyard_replica_in_flight": ("gauge", frozenset({"switchyard_backend", "switchyard_replica"})),
    "switchyard_replica_queue_depth": ("gauge", frozenset({"switchyard_backend", "switchyard_replica"})),
    "switchyard_replica_available": ("gauge", frozenset({"switchyard_backend", "switchyard_replica"})),
    "switchyard_budget_remaining_USD": ("gauge", frozenset({"switchyard_team", "switchyard_window"})),
    "switchyard_store_degraded": ("gauge", frozenset({"switchyard_component"})),
}
TARGET_LABELS = frozenset({"job", "instance"})


def exported_series() -> dict[str, frozenset[str]]:
    """Every series name a scrape of the gateway can show, with the labels it can carry."""
    series: dict[str, frozenset[str]] = {}
    for name, (kind, labels) in EXPORTED.items():
        if kind == "histogram":
            series[f"{name}_bucket"] = labels | {"le"}
            series[f"{name}_sum"] = series[f"{name}_count"] = labels
        else:
            series[name] = labels
    return series


# -- PromQL --------------------------------------------------------------------------------
_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\[\]]*\]")
_LABEL_LIST = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)")
_GRAFANA_VAR = re.compile(r"\$(?:\{[^}]*\}|\w+)")
_IDENT = re.compile(r"(?<![\w.:])[A-Za-z_:][\w:]*")
_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
                       "and", "or", "unless", "inf", "nan", "start", "end"})


def _strip(expr: str) -> str:
    """The expression with strings, Grafana variables, label matchers and ranges blanked out."""
    text = _STRING.sub('""', expr)
    text = _GRAFANA_VAR.sub(" ", text)
    text = _MATCHERS.sub(" ", text)
    return _RANGES.sub(" ", text)


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (``rate(x_total{a="b"}[5m])`` → ``{"x_total"}``).

    Functions and aggregations (a name followed by ``(``), keywords, label lists of
    ``by``/``on``/… and Grafana variables (``$__rate_interval``, ``${team}``) are not metric
    names. Selectors written only as ``{__name__="x"}`` are not seen.
    """
    text = _LABEL_LIST.sub(" ", _strip(expr))
    names = set()
    for match in _IDENT.finditer(text):
        word = match.group(0)
        if word.lower() in _KEYWORDS or text[match.end():].lstrip().startswith("("):
            continue
        names.add(word)
    return names


def promql_label_names(expr: str) -> set[str]:
    """Label names an expression refers to: in matchers and in ``by``/``on``/… lists."""
    text = _STRING.sub('""', expr)
    names = set()
    for block in _MATCHERS.findall(text):
        names |= set(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", block))
    for _, labels in _LABEL_LIST.findall(_GRAFANA_VAR.sub(" ", text)):
        names |= {label.strip() for label in labels.split(",") if label.strip()}
    return names


@pytest.mark.parametrize(("expr", "metrics", "labels"), [
    ('sum by (team) (rate(a_total{job=~"$job", x="y{z}"}[$__rate_interval])) * 3600', {"a_total"}, {"job", "x", "team"}),
    ("histogram_quantile(0.99, sum by (le, b) (rate(h_bucket[5m] offset 1h)))", {"h_bucket"}, {"le", "b"}),
    ("sum(a * on (k) group_left () group by (k) (b{s=\"true\"})) / (sum(c) > 0)", {"a", "b", "c"}, {"k", "s"}),
    ("topk(10, sum without (i) (increase(ns:rule:rate5m[1h]))) and bool 1e-3", {"ns:rule:rate5m"}, {"i"}),
    ("max_over_time(g[${window}:1m])", {"g"}, set()),
])
def test_promql_helpers(expr: str, metrics: set[str], labels: set[str]) -> None:
    assert promql_metric_names(expr) == metrics
    assert promql_label_names(expr) == labels


# -- loading -------------------------------------------------------------------------------
def _ours(path: Path) -> bool:
    return not any(part in NOT_OURS for part in path.relative_to(DEPLOY).parts)


def deploy_files(*suffixes: str) -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.is_file() and p.suffix in suffixes and _ours(p))


def yaml_docs(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]


def with_defaults(value: str) -> str:
    """``${NAME:-default}`` → ``default``: what compose uses when the variable is not set."""
    return re.sub(r"\$\{\w+:?-([^}]*)\}", r"\1", value)


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def dashboard_queries() -> Iterator[tuple[str, dict[str, Any]]]:
    """(panel title, target) for every query of every panel, rows' nested panels included."""
    def walk(panels: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
        for panel in panels:
            yield from ((panel["title"], t) for t in panel.get("targets", []))
            yield from walk(panel.get("panels", []))
    yield from walk(dashboard()["panels"])


def k8s_objects() -> list[dict[str, Any]]:
    """The objects of the kustomization's resources, plus the example Secret and optional extras."""
    return [doc for path in sorted(K8S.glob("*.yaml"))
            if path.name != "kustomization.yaml" and not path.name.startswith("policy") for doc in yaml_docs(path)]


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [obj for obj in k8s_objects() if obj["kind"] == kind]


def env_refs(text: str) -> dict[str, bool]:
    """``${NAME}`` references of a policy → whether each has a default (``${NAME:-…}``)."""
    refs: dict[str, bool] = {}
    for name, default in re.findall(r"(?<!\$)\$\{(\w+)(:-[^}]*)?\}", text):
        refs[name] = refs.get(name, True) and bool(default)
    return refs


# -- every file parses ---------------------------------------------------------------------
@pytest.mark.parametrize("path", deploy_files(".yaml", ".yml"), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_yaml_parses(path: Path) -> None:
    assert yaml_docs(path), f"{path} is empty"


@pytest.mark.parametrize("path", deploy_files(".json"), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_json_parses(path: Path) -> None:
    assert json.loads(path.read_text(encoding="utf-8"))


def test_the_expected_files_exist() -> None:
    for rel in ("Dockerfile", "docker-compose.yml", "README.md", "compose/policy.yaml", "compose/prometheus.yml",
                "compose/otel-collector.yaml", "grafana/switchyard.json", "k8s/kustomization.yaml"):
        assert (DEPLOY / rel).is_file(), rel
    assert (ROOT / ".dockerignore").is_file()


# -- Dockerfile ----------------------------------------------------------------------------
def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """Instructions (upper-case keyword, arguments) grouped by stage; continuations joined."""
    text = re.sub(r"\\\n(?:[ \t]*#[^\n]*\n)*", " ", DOCKERFILE.read_text(encoding="utf-8"))
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        if keyword.upper() == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((keyword.upper(), args.strip()))
    return stages


def _exec_form(args: str) -> list[str]:
    return json.loads(args) if args.startswith("[") else shlex.split(args)


def test_dockerfile_is_multi_stage_slim_and_hash_checked() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert re.search(r"python:3\.11-slim", text)
    build = " ".join(args for _, args in stages[0])
    assert "--require-hashes" in build and "requirements.lock" in build
    runtime = [kw for kw, _ in stages[-1]]
    assert "COPY" in runtime and not any("pip wheel" in args for _, args in stages[-1])


def test_dockerfile_runs_as_a_non_root_user_with_a_healthcheck() -> None:
    stage = dockerfile_stages()[-1]
    final = dict(stage)  # the last of each instruction wins
    args = dict(a.split("=", 1) for kw, a in stage if kw == "ARG" and "=" in a)
    user = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), final["USER"]).split(":")[0]
    assert user not in ("root", "0", "") and not user.startswith("$"), user
    assert "/healthz" in final["HEALTHCHECK"] and "python" in final["HEALTHCHECK"]
    assert "curl" not in final["HEALTHCHECK"]  # not in the slim image
    assert final["EXPOSE"].split() == ["4000"]
    command = _exec_form(final["ENTRYPOINT"]) + _exec_form(final["CMD"])
    assert command[:2] == ["switchyard", "serve"] and command[command.index("--host") + 1] == "0.0.0.0"
    assert "SWITCHYARD_POLICY=/etc/switchyard/policy.yaml" in final["ENV"]


def test_dockerfile_copies_only_what_exists_and_is_not_ignored() -> None:
    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    for stage in dockerfile_stages():
        for keyword, args in stage:
            if keyword != "COPY" or args.startswith("--from"):
                continue
            for source in _exec_form(args)[:-1]:
                assert (ROOT / source).exists(), source
                assert not any(fnmatch(source, pattern) or source.startswith(pattern + "/") for pattern in ignored), \
                    f"{source} is excluded by .dockerignore"
    assert ".git" in ignored and ".venv" in ignored


def _package_dirs() -> dict[str, Path]:
    """The gateway's importable packages (directories with ``__init__.py``), tests aside."""
    return {".".join(init.parent.relative_to(ROOT).parts): init.parent
            for top in ("router", "policies", "backends") for init in sorted((ROOT / top).rglob("__init__.py"))
            if "tests" not in init.relative_to(ROOT).parts}


def _declared_packages(setuptools_cfg: dict[str, Any]) -> set[str]:
    packages = setuptools_cfg.get("packages")
    if isinstance(packages, list):
        return set(packages)
    find = (packages or {}).get("find", {})
    include, exclude = find.get("include", ["*"]), find.get("exclude", [])
    return {p for p in _package_dirs() if any(fnmatch(p, i) for i in include) and not any(fnmatch(p, e) for e in exclude)}


def test_the_installed_gateway_has_every_package_and_data_file() -> None:
    """The image installs the gateway from its wheel (not editable, as in .venv): every package
    and every file read at run time must be declared in pyproject.toml."""
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    declared = _declared_packages(cfg)
    packages = _package_dirs()
    assert set(packages) <= declared, f"missing from [tool.setuptools] packages: {sorted(set(packages) - declared)}"
    data = cfg.get("package-data", {})
    for package, pkg_dir in packages.items():
        shipped = {f for pattern in data.get(package, []) + data.get("*", [])
                   for f in glob.glob(pattern, root_dir=pkg_dir, recursive=True)}
        for file in sorted(pkg_dir.rglob("*")):
            rel = file.relative_to(pkg_dir)
            if (not file.is_file() or file.suffix in (".py", ".pyc") or "__pycache__" in rel.parts
                    or rel.parts[0] == "tests" or ".".join((package, *rel.parts[:-1])) in packages and len(rel.parts) > 1):
                continue
            assert str(rel) in shipped, f"{package}: {rel} is not in [tool.setuptools.package-data]"


# -- docker compose ------------------------------------------------------------------------
def test_compose_has_every_service() -> None:
    services = compose()["services"]
    assert {"gateway", "redis", "vllm", "llamacpp", "otel-collector", "prometheus", "grafana"} <= set(services)
    assert services["vllm"]["profiles"] == ["gpu"]
    assert "profiles" not in services["llamacpp"] and "profiles" not in services["gateway"]
    assert with_defaults(services["vllm"]["image"]).startswith("vllm/vllm-openai:")
    devices = services["vllm"]["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in d["capabilities"] for d in devices)
    assert with_defaults(services["llamacpp"]["image"]) == "ghcr.io/ggml-org/llama.cpp:server"
    assert with_defaults(services["otel-collector"]["image"]).startswith("otel/opentelemetry-collector-contrib:")
    redis = services["redis"]["command"]
    assert redis[redis.index("--appendonly") + 1] == "yes"


def test_compose_gateway_is_built_from_the_dockerfile() -> None:
    gateway = compose()["services"]["gateway"]
    context = (DEPLOY / gateway["build"]["context"]).resolve()
    assert context == ROOT and (context / gateway["build"]["dockerfile"]).resolve() == DOCKERFILE
    env = gateway["environment"]
    assert env["SWITCHYARD_POLICY"] == "/etc/switchyard/policy.yaml"
    assert env["SWITCHYARD_REDIS_URL"].startswith("redis://redis:")
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"
    mounts = {v.split(":")[1]: v.split(":")[0] for v in gateway["volumes"]}
    assert (DEPLOY / mounts["/etc/switchyard"] / "policy.yaml").is_file()


def test_compose_bind_mounts_exist() -> None:
    for name, service in compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source}"


def test_compose_policy_only_needs_what_the_gateway_is_given() -> None:
    text = (DEPLOY / "compose" / "policy.yaml").read_text()
    env = compose()["services"]["gateway"]["environment"]
    for name, has_default in env_refs(text).items():
        assert has_default or name in env, f"${{{name}}} is neither defaulted nor set for the gateway"


@pytest.mark.parametrize("env", [{}, {"OPENAI_API_KEY": "sk-test", "ANTHROPIC_API_KEY": "sk-ant-test",
                                      "SWITCHYARD_DEMO_KEY": "demo-key", "SEARCH_APP_KEY": "search-key"}],
                         ids=["no-keys", "keys"])
@pytest.mark.parametrize("rel", ["compose/policy.yaml", "k8s/policy.yaml"])
def test_deploy_policies_are_valid(rel: str, env: dict[str, str]) -> None:
    path = DEPLOY / rel
    loaded = load_policy_text(path.read_text(encoding="utf-8"), env, kinds=KIND_TABLE, file=str(path))  # raises PolicyError
    check_backends(loaded, include_disabled=True)
    backends = loaded.policy.backends
    assert any(b.kind in ("vllm", "llamacpp") for b in backends.values())
    assert any(b.kind in ("openai", "anthropic") for b in backends.values())


@pytest.mark.parametrize("rel", ["compose/policy.test.yaml", "k8s/policy.test.yaml"])
def test_deploy_policies_decide_as_their_tests_say(rel: str) -> None:
    results = run_test_file(DEPLOY / rel)
    assert results and all(r.ok for r in results), [(r.name, r.problems) for r in results if not r.ok]


def test_compose_policy_routes_to_the_compose_model_servers() -> None:
    loaded = load_policy_text((DEPLOY / "compose" / "policy.yaml").read_text(), {}, kinds=KIND_TABLE)
    urls = {b.kind: str(b.base_url) for b in loaded.policy.backends.values() if b.base_url}
    assert urls["llamacpp"].startswith("http://llamacpp:8080") and urls["vllm"].startswith("http://vllm:8000")


def test_collector_receives_otlp_http_and_exports_traces_and_metrics() -> None:
    (config,) = yaml_docs(DEPLOY / "compose" / "otel-collector.yaml")
    assert config["receivers"]["otlp"]["protocols"]["http"]["endpoint"] == "0.0.0.0:4318"
    pipelines = config["service"]["pipelines"]
    assert "otlp" in pipelines["traces"]["receivers"] and "debug" in pipelines["traces"]["exporters"]
    assert "otlp" in pipelines["metrics"]["receivers"] and "prometheus" in pipelines["metrics"]["exporters"]
    for pipeline in pipelines.values():
        assert set(pipeline["exporters"]) <= set(config["exporters"])
        assert set(pipeline.get("processors", [])) <= set(config["processors"])


def test_prometheus_scrapes_the_gateway_as_job_switchyard() -> None:
    (config,) = yaml_docs(DEPLOY / "compose" / "prometheus.yml")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    gateway = jobs["switchyard"]
    assert gateway.get("metrics_path", "/metrics") == "/metrics"
    assert "gateway:4000" in gateway["static_configs"][0]["targets"]


def test_grafana_provisioning_matches_the_compose_mounts() -> None:
    grafana = compose()["services"]["grafana"]
    mounts = {v.split(":")[1]: (DEPLOY / v.split(":")[0]).resolve() for v in grafana["volumes"] if v.startswith(".")}
    assert mounts["/etc/grafana/provisioning"] == DEPLOY / "grafana" / "provisioning"
    (providers,) = yaml_docs(DEPLOY / "grafana" / "provisioning" / "dashboards" / "switchyard.yaml")
    path = providers["providers"][0]["options"]["path"]
    assert mounts[f"{path}/switchyard.json"] == DASHBOARD
    (datasources,) = yaml_docs(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yaml")
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"


# -- the Grafana dashboard -----------------------------------------------------------------
def test_dashboard_queries_only_exported_metrics() -> None:
    series = exported_series()
    used: set[str] = set()
    for title, target in dashboard_queries():
        names = promql_metric_names(target["expr"])
        assert names, f"{title}: no metric in {target['expr']}"
        assert names <= set(series), f"{title}: not exported: {sorted(names - set(series))}"
        used |= names
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            metric = re.match(r"label_values\(([\w:]+)", variable["definition"])
            assert metric and metric.group(1) in series, variable["name"]
    unused = {name for name in EXPORTED if not any(s.startswith(name) for s in used)}
    assert not unused, f"exported but on no panel: {sorted(unused)}"


def test_dashboard_labels_exist_on_the_metrics_queried() -> None:
    series = exported_series()
    for title, target in dashboard_queries():
        metrics = promql_metric_names(target["expr"])
        known = TARGET_LABELS.union(*(series[m] for m in metrics))
        labels = promql_label_names(target["expr"]) | set(re.findall(r"\{\{\s*(\w+)\s*\}\}",
                                                                      target.get("legendFormat", "")))
        assert labels <= known, f"{title}: unknown labels {sorted(labels - known)} in {target['expr']}"


def test_dashboard_structure() -> None:
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert board["uid"] and board["title"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"]), panel["title"]
    titles = " | ".join(p["title"].lower() for p in board["panels"])
    for topic in ("spend by team", "spend by model", "spend by provider", "savings", "self-hosted share",
                  "cache hit rate", "fallbacks, spillovers, recoveries", "p50 / p99", "time to first chunk",
                  "top rules", "budget remaining", "gateway overhead", "circuit state", "in flight"):
        assert topic in titles, topic


def _as_prometheus(expr: str, window: str = "10m") -> str:
    """A dashboard expression with Grafana's variables replaced, as Prometheus would receive it."""
    return (expr.replace("$__rate_interval", window).replace("$__range", window)
            .replace('"$job"', '"switchyard"').replace('"$team"', '".*"'))


def _promtool(*args: str, cwd: Path) -> None:
    if shutil.which("promtool") is None:
        pytest.skip("promtool not installed (Debian package prometheus)")
    result = subprocess.run(["promtool", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_promql_parses(tmp_path: Path) -> None:
    rules = [{"record": f"dashboard:query_{i}", "expr": _as_prometheus(t["expr"])}
             for i, (_, t) in enumerate(dashboard_queries())]
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    _promtool("check", "rules", "rules.yml", cwd=tmp_path)
    _promtool("check", "config", str(DEPLOY / "compose" / "prometheus.yml"), cwd=tmp_path)


def test_dashboard_ratios_compute_the_right_numbers(tmp_path: Path) -> None:
    """Self-hosted share and cache hit rate on synthetic series: team a sends 3 requests a minute
    to llama.cpp (self-hosted, cost 0), team b 1 a minute to gpt-mini; 1 in 4 of a's is a cache hit."""
    queries = {title: t["expr"] for title, t in dashboard_queries()}
    usage = 'gen_ai_client_token_usage_count{{job="switchyard",switchyard_team="{}",switchyard_backend="{}",' \
            'gen_ai_token_type="{}"}}'
    cost = 'switchyard_cost_USD_total{{job="switchyard",switchyard_team="{}",switchyard_backend="{}",' \
           'switchyard_self_hosted="{}",switchyard_alias="chat",gen_ai_provider_name="p",switchyard_rule="r"}}'
    requests = 'switchyard_requests_total{{job="switchyard",switchyard_team="a",switchyard_outcome="{}"}}'
    series = [
        {"series": usage.format("a", "llamacpp", "input"), "values": "0+3x10"},
        {"series": usage.format("a", "llamacpp", "output"), "values": "0+3x10"},
        {"series": usage.format("b", "gpt-mini", "input"), "values": "0+1x10"},
        {"series": cost.format("a", "llamacpp", "true"), "values": "0x10"},
        {"series": cost.format("b", "gpt-mini", "false"), "values": "0+0.25x10"},
        {"series": requests.format("ok"), "values": "0+3x10"},
        {"series": requests.format("cache_hit"), "values": "0+1x10"},
    ]
    checks = [(queries["Self-hosted share"], 0.75), (queries["Cache hit rate"], 0.25), (queries["Spend"], 2.5)]
    tests = {"tests": [{"interval": "1m", "input_series": series, "promql_expr_test": [
        {"expr": _as_prometheus(expr), "eval_time": "10m", "exp_samples": [{"labels": "{}", "value": value}]}
        for expr, value in checks]}]}
    (tmp_path / "test.yml").write_text(yaml.safe_dump(tests, sort_keys=False))
    _promtool("test", "rules", "test.yml", cwd=tmp_path)


# -- Kubernetes ----------------------------------------------------------------------------
def test_k8s_has_the_expected_objects() -> None:
    kinds = {obj["kind"] for obj in k8s_objects()}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "Secret", "PodDisruptionBudget"} <= kinds
    kustomization = yaml_docs(K8S / "kustomization.yaml")[0]
    generated = {g["name"] for g in kustomization.get("configMapGenerator", [])}
    assert "switchyard-policy" in generated or "ConfigMap" in kinds
    for resource in kustomization["resources"]:
        assert (K8S / resource).is_file(), resource
    assert "secret.example.yaml" not in kustomization["resources"]  # no placeholder key is ever applied


def _gateway_container() -> dict[str, Any]:
    (deployment,) = by_kind("Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def test_k8s_deployment_probes_and_security() -> None:
    (deployment,) = by_kind("Deployment")
    assert deployment["spec"]["replicas"] > 1
    pod = deployment["spec"]["template"]["spec"]
    container = _gateway_container()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == 4000
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] in ("http", 4000)
    assert container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0


def test_k8s_policy_is_mounted_so_that_updates_reach_the_gateway() -> None:
    (deployment,) = by_kind("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = _gateway_container()
    env = {e["name"]: e.get("value") for e in container["env"]}
    policy = Path(env["SWITCHYARD_POLICY"])
    volumes = {v["name"]: v for v in pod["volumes"]}
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == str(policy.parent)]
    assert "subPath" not in mount  # a subPath mount never sees ConfigMap updates
    config_map = volumes[mount["name"]]["configMap"]["name"]
    kustomization = yaml_docs(K8S / "kustomization.yaml")[0]
    (generator,) = [g for g in kustomization["configMapGenerator"] if g["name"] == config_map]
    assert generator["files"] == [policy.name] and generator["options"]["disableNameSuffixHash"] is True
    assert any(m["mountPath"] == "/tmp" for m in container["volumeMounts"])  # read-only root: a writable /tmp


def test_k8s_objects_point_at_each_other() -> None:
    (deployment,) = by_kind("Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (service,) = by_kind("Service")
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] in ("http", 4000)
    (pdb,) = by_kind("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (hpa,) = by_kind("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": deployment["metadata"]["name"]}
    assert hpa["spec"]["minReplicas"] > 1 and hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"


def test_k8s_secret_provides_what_the_policy_and_gateway_read() -> None:
    (secret,) = by_kind("Secret")
    container = _gateway_container()
    assert {"secretRef": {"name": secret["metadata"]["name"]}} in container["envFrom"]
    provided = set(secret["stringData"]) | {e["name"] for e in container["env"]}
    assert {"SWITCHYARD_ADMIN_KEY", "SWITCHYARD_REDIS_URL"} <= provided
    for name, has_default in env_refs((K8S / "policy.yaml").read_text()).items():
        assert has_default or name in provided, name
    assert all(value == "" for value in secret["stringData"].values())  # a template: no key in the repository


def test_k8s_kustomize_renders(tmp_path: Path) -> None:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl not installed")
    result = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    rendered = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    kinds = {doc["kind"] for doc in rendered}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "ConfigMap", "PodDisruptionBudget"} <= kinds
    (config_map,) = [d for d in rendered if d["kind"] == "ConfigMap"]
    assert config_map["data"]["policy.yaml"] == (K8S / "policy.yaml").read_text()
    assert all(d["metadata"].get("namespace") == "switchyard" for d in rendered if d["kind"] != "Namespace")


def test_k8s_objects_match_the_kubernetes_schemas() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    for obj in k8s_objects():
        if obj["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # a CRD: no schema in the package
        kubernetes_validate.validate(obj, kubernetes_validate.latest_version(), strict=True)
