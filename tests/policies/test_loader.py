"""``policies.loader``: YAML → validated ``LoadedPolicy``, env expansion, and issues that
name the exact ``file:line dotted.path``. Pure unit tests: no network, no subprocess."""

from __future__ import annotations

import re
import string
from pathlib import Path
from textwrap import dedent

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import policies
from policies import LoadedPolicy, PolicyError, PolicyIssue, load_policy, load_policy_text
from router.runtime import KIND_TABLE

FILE = "p.yaml"
POLICY_DIR = Path(policies.__file__).resolve().parent
SHIPPED = sorted([POLICY_DIR / "default.yaml", *(POLICY_DIR / "examples").glob("*.yaml")])

# A minimal valid policy the tests below extend.
BASE = dedent("""\
    version: 1
    backends:
      a:
        kind: openai
        model: gpt-4o-mini
    models:
      chat:
        targets: [a]
    """)


def line_of(text: str, needle: str, nth: int = 0) -> int:
    """1-based line of the ``nth`` line of ``text`` containing ``needle``."""
    hits = [i for i, line in enumerate(text.splitlines(), 1) if needle in line]
    assert len(hits) > nth, f"{needle!r} not found {nth + 1} times"
    return hits[nth]


def load(text: str, env: dict[str, str] | None = None) -> LoadedPolicy:
    return load_policy_text(text, env or {}, kinds=KIND_TABLE, file=FILE)


def issues_of(text: str, env: dict[str, str] | None = None) -> tuple[PolicyIssue, ...]:
    with pytest.raises(PolicyError) as info:
        load(text, env)
    assert info.value.issues, "PolicyError without issues"
    # The exception text is every issue, one per line.
    assert str(info.value) == "\n".join(str(i) for i in info.value.issues)
    return info.value.issues


def only_issue(text: str, env: dict[str, str] | None = None) -> PolicyIssue:
    issues = issues_of(text, env)
    assert len(issues) == 1, issues
    return issues[0]


# -- shipped policies ----------------------------------------------------------------------


def api_key_vars(path: Path) -> set[str]:
    return set(re.findall(r"api_key:\s*\$\{([A-Za-z_][A-Za-z0-9_]*)", path.read_text()))


def test_shipped_policies_are_found():
    names = {p.relative_to(POLICY_DIR).as_posix() for p in SHIPPED}
    assert "default.yaml" in names
    assert len([n for n in names if n.startswith("examples/")]) >= 2


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_policy_loads_with_empty_env(path: Path):
    loaded = load_policy(path, {}, kinds=KIND_TABLE)
    assert loaded.source == str(path)
    assert loaded.policy.version == 1
    # every key is optional (`${X:-}`): with no env, each closed backend with an api_key is
    # disabled and says so, on the api_key line
    disabled = {n for n, b in loaded.policy.backends.items() if not b.has_credentials}
    assert disabled == {n for n, b in loaded.policy.backends.items()
                        if b.api_key is not None and not b.direct}
    warned = {w.path for w in loaded.warnings if w.path.endswith(".api_key")}
    assert warned == {f"backends.{n}.api_key" for n in disabled}
    text = path.read_text().splitlines()
    for w in loaded.warnings:
        assert w.file == str(path) and w.line is not None
        if w.path.endswith(".api_key"):
            assert "api_key:" in text[w.line - 1]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_policy_with_keys_set_has_every_backend_enabled(path: Path):
    keys = api_key_vars(path)
    assert keys, "each shipped policy has at least one optional key"
    loaded = load_policy(path, {k: f"sk-test-{k.lower()}" for k in keys}, kinds=KIND_TABLE)
    assert loaded.warnings == ()
    assert all(b.has_credentials for b in loaded.policy.backends.values())
    for name, backend in loaded.policy.backends.items():
        if backend.api_key is not None:
            var = re.search(rf"^  {re.escape(name)}:(?:\n    .*)*?\n    api_key: \$\{{(\w+)",
                            path.read_text(), re.M)
            assert var is not None
            assert backend.api_key.get_secret_value() == f"sk-test-{var.group(1).lower()}"


def test_default_policy_contents_and_warnings():
    loaded = load_policy(POLICY_DIR / "default.yaml", {}, kinds=KIND_TABLE)
    p = loaded.policy
    assert list(p.models) == ["chat-default", "local-only", "closed-best"]
    assert p.models["chat-default"].targets == ["local", "gpt-mini", "claude", "gemini"]
    assert p.settings.default_alias == "chat-default"
    assert p.settings.max_body_mb == 10
    assert str(p.backends["local"].base_url) == "http://127.0.0.1:8080/v1"
    assert p.backends["local"].timeouts.connect_s == 2
    assert p.backends["local"].is_self_hosted and p.backends["local"].direct
    paths = [w.path for w in loaded.warnings]
    assert paths == ["backends.gpt-mini.api_key", "backends.claude.api_key", "backends.gemini.api_key",
                     "models.closed-best.targets"]
    alias_warning = loaded.warnings[-1]
    assert "every target is disabled" in alias_warning.message
    text = (POLICY_DIR / "default.yaml").read_text()
    assert alias_warning.line == line_of(text, "targets: [claude, gpt-mini, gemini]")


def test_default_policy_local_url_from_env():
    loaded = load_policy(POLICY_DIR / "default.yaml", {"SWITCHYARD_LOCAL_MODEL_URL": "http://gpu:9000/v1"}, kinds=KIND_TABLE)
    assert str(loaded.policy.backends["local"].base_url) == "http://gpu:9000/v1"


def test_closed_providers_example_bedrock_uses_credential_chain():
    loaded = load_policy(POLICY_DIR / "examples" / "closed-providers.yaml", {}, kinds=KIND_TABLE)
    bedrock = loaded.policy.backends["bedrock-claude"]
    assert bedrock.api_key is None and bedrock.has_credentials
    # `smart` still has bedrock, `cheap` has nothing left
    alias_warnings = [w.path for w in loaded.warnings if w.path.startswith("models.")]
    assert alias_warnings == ["models.cheap.targets"]
    assert loaded.policy.backends["claude"].timeouts.first_token_s == 20
    assert loaded.policy.backends["claude"].timeouts.total_s == 600.0  # defaults kept


def test_self_hosted_fleet_example():
    loaded = load_policy(POLICY_DIR / "examples" / "self-hosted-fleet.yaml", {}, kinds=KIND_TABLE)
    assert [w.path for w in loaded.warnings] == ["backends.openai.api_key"]
    price = loaded.policy.backends["vllm-a"].price
    assert price is not None and price.gpu_hour_usd == 2.4 and price.tokens_per_s == 2500


# -- load_policy: files --------------------------------------------------------------------


def test_load_policy_missing_file(tmp_path: Path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(PolicyError) as info:
        load_policy(missing, {}, kinds=KIND_TABLE)
    (issue,) = info.value.issues
    assert issue.file == str(missing) and issue.line is None and issue.path == ""
    assert issue.message.startswith("cannot read policy file:")


def test_load_policy_invalid_utf8_file(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(BASE.encode() + b"# \xff\xfe\n")
    with pytest.raises(PolicyError) as info:
        load_policy(bad, {}, kinds=KIND_TABLE)
    (issue,) = info.value.issues
    assert issue.message.startswith("cannot read policy file:")


def test_load_policy_reads_file_and_names_it(tmp_path: Path):
    path = tmp_path / "ok.yaml"
    path.write_text(BASE.replace("targets: [a]", "targets: [a, zz]"))
    with pytest.raises(PolicyError) as info:
        load_policy(path, {}, kinds=KIND_TABLE)
    assert str(info.value) == f"{path}:8 models.chat.targets[1]: unknown backend 'zz' (backends: a)"


def test_load_policy_text_default_file_name():
    with pytest.raises(PolicyError) as info:
        load_policy_text("", {}, kinds=KIND_TABLE)
    assert str(info.value) == "<policy>: policy file is empty"


# -- env expansion -------------------------------------------------------------------------


def described(description: str, env: dict[str, str]) -> str | None:
    text = BASE + f"    description: {description}\n"
    return load(text, env).policy.models["chat"].description


def test_env_var_is_expanded():
    assert described("'${WHO}'", {"WHO": "team-a"}) == "team-a"


def test_env_var_expanded_inside_text_and_several_times():
    assert described("'x-${A}-${B}-${A}'", {"A": "1", "B": "2"}) == "x-1-2-1"


def test_env_default_used_when_unset():
    assert described("'${NOPE:-fallback value}'", {}) == "fallback value"


def test_env_default_ignored_when_set():
    assert described("'${YEP:-fallback}'", {"YEP": "real"}) == "real"


def test_env_empty_default():
    assert described("'[${NOPE:-}]'", {}) == "[]"


def test_env_empty_default_api_key_disables_backend():
    text = BASE.replace("model: gpt-4o-mini", "model: gpt-4o-mini\n    api_key: ${KEY:-}")
    loaded = load(text)
    key = loaded.policy.backends["a"].api_key
    assert key is not None and key.get_secret_value() == ""
    assert not loaded.policy.backends["a"].has_credentials
    loaded = load(text, {"KEY": "sk-1"})
    assert loaded.policy.backends["a"].api_key.get_secret_value() == "sk-1"
    assert loaded.warnings == ()


def test_double_dollar_is_a_literal_dollar():
    assert described("'costs $$5'", {}) == "costs $5"
    assert described("'$${NOT_EXPANDED}'", {"NOT_EXPANDED": "x"}) == "${NOT_EXPANDED}"
    assert described("'$$$$'", {}) == "$$"


def test_lone_dollar_and_non_brace_forms_are_literal():
    assert described("'$5 and $HOME and ${lower-dash}'", {"HOME": "/root"}) == "$5 and $HOME and ${lower-dash}"


def test_expansion_is_not_recursive():
    assert described("'${A}'", {"A": "${B}", "B": "nope"}) == "${B}"


def test_env_value_is_a_string_coerced_by_the_model():
    text = BASE + "settings:\n  max_body_mb: ${MB:-12.5}\n"
    assert load(text).policy.settings.max_body_mb == 12.5
    assert load(text, {"MB": "3"}).policy.settings.max_body_mb == 3.0


def test_keys_are_not_expanded():
    text = BASE.replace("  a:\n", "  ${NAME}:\n")
    issue = issues_of(text, {"NAME": "a"})
    assert any("invalid names ['${NAME}']" in i.message for i in issue)


def test_unset_env_var_names_line_path_and_fix():
    text = BASE.replace("model: gpt-4o-mini", "model: gpt-4o-mini\n    api_key: ${OPENAI_API_KEY}")
    issue = only_issue(text)
    assert issue.file == FILE
    assert issue.line == line_of(text, "api_key:") == 6
    assert issue.path == "backends.a.api_key"
    assert issue.message == ("environment variable OPENAI_API_KEY is not set "
                             "(use ${OPENAI_API_KEY:-} to make it optional)")
    assert str(issue) == ("p.yaml:6 backends.a.api_key: environment variable OPENAI_API_KEY is not set "
                          "(use ${OPENAI_API_KEY:-} to make it optional)")


def test_unset_env_var_inside_a_list_item():
    text = dedent("""\
        version: 1
        backends:
          a: {kind: openai, model: m}
        models:
          chat:
            targets:
              - a
            description: "${DESC}"
        """)
    issue = only_issue(text)
    assert (issue.line, issue.path) == (8, "models.chat.description")


def test_every_unset_env_var_is_reported():
    text = BASE + "    description: '${ONE} ${TWO}'\nsettings:\n  default_alias: ${THREE}\n"
    issues = issues_of(text)
    # THREE expands to "" → unknown alias ''; reported alongside the env problems
    env_msgs = [i.message.split(" is not set")[0] for i in issues if "is not set" in i.message]
    assert env_msgs == ["environment variable ONE", "environment variable TWO", "environment variable THREE"]
    assert [i.path for i in issues if "is not set" in i.message] == [
        "models.chat.description", "models.chat.description", "settings.default_alias"]


def test_set_but_empty_env_var_is_not_an_error():
    assert described("'[${EMPTY}]'", {"EMPTY": ""}) == "[]"


def test_env_default_used_when_set_but_empty():
    # as in POSIX shells: `:-` takes the default when the variable is unset *or empty*
    assert described("'${URL:-http://fallback}'", {"URL": ""}) == "http://fallback"
    assert described("'[${URL:-}]'", {"URL": ""}) == "[]"


def test_empty_env_var_with_default_keeps_self_hosted_url():
    text = (POLICY_DIR / "default.yaml").read_text()
    loaded = load(text, {"SWITCHYARD_LOCAL_MODEL_URL": "", "OPENAI_API_KEY": ""})
    assert str(loaded.policy.backends["local"].base_url) == "http://127.0.0.1:8080/v1"
    assert not loaded.policy.backends["gpt-mini"].has_credentials


_ENV_NAME = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True)
_ENV_VALUE = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=40)


@settings(derandomize=True, max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=_ENV_NAME, value=_ENV_VALUE, other=_ENV_VALUE)
def test_property_env_var_expands_exactly_to_its_value(name: str, value: str, other: str):
    # The bare form gives exactly the value (even empty), the defaulted form too unless the value
    # is empty; wherever it sits in a string, and the value itself is never re-scanned for `$`.
    text = BASE + "    description: " + yaml.safe_dump(f"<${{{name}}}|${{{name}:-ignored}}>").split("\n...")[0]
    loaded = load(text, {name: value, "UNRELATED": other})
    assert loaded.policy.models["chat"].description == f"<{value}|{value or 'ignored'}>"


@settings(derandomize=True, max_examples=150, deadline=None)
@given(literal=st.text(alphabet=string.ascii_letters + string.digits + " ${}:-_", max_size=30))
def test_property_escaped_dollars_round_trip(literal: str):
    escaped = literal.replace("$", "$$")
    text = BASE + "    description: " + yaml.safe_dump(escaped).split("\n...")[0]
    assert load(text).policy.models["chat"].description == literal


# -- YAML level problems -------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "  \n"])
def test_empty_file(text: str):
    issue = only_issue(text)
    assert (issue.file, issue.line, issue.path) == (FILE, None, "")
    assert issue.message == "policy file is empty"
    assert str(issue) == "p.yaml: policy file is empty"


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n", "null\n"])
def test_top_level_not_a_mapping(text: str):
    issue = only_issue(text)
    assert (issue.line, issue.path) == (1, "")
    assert issue.message == "a policy must be a mapping with backends: and models:"


def test_yaml_syntax_error_has_a_line():
    text = BASE + "settings:\n  max_body_mb: [1, 2\n"
    issue = only_issue(text)
    assert issue.path == ""
    assert issue.message.startswith("invalid YAML: ")
    assert issue.line is not None and issue.line >= line_of(text, "max_body_mb")


def test_yaml_bad_indentation_points_at_the_line():
    text = "version: 1\nbackends:\n  a:\n    kind: openai\n   model: m\n"
    issue = only_issue(text)
    assert issue.message.startswith("invalid YAML: ")
    assert issue.line == 5


def test_yaml_tab_indentation():
    issue = only_issue("version: 1\nbackends:\n\ta: 1\n")
    assert issue.line == 3 and "invalid YAML" in issue.message


def test_yaml_unsafe_tag_is_rejected():
    text = BASE + "    description: !!python/name:os.system ''\n"
    issue = only_issue(text)
    assert issue.message.startswith("invalid YAML: ")
    assert "python/name:os.system" in issue.message
    assert issue.line == line_of(text, "description")


def test_two_documents_rejected():
    issue = only_issue(BASE + "---\n" + BASE)
    assert "invalid YAML" in issue.message and "single document" in issue.message


def test_duplicate_yaml_key():
    text = BASE.replace("    model: gpt-4o-mini\n", "    model: gpt-4o-mini\n    model: gpt-4o\n")
    issue = only_issue(text)
    assert issue.message == "duplicate key 'model'"
    assert issue.path == "backends.a.model"
    assert issue.line == line_of(text, "model: gpt-4o", 1) == 6


def test_duplicate_top_level_key():
    text = BASE + "models:\n  other:\n    targets: [a]\n"
    issues = issues_of(text)
    dup = [i for i in issues if i.message == "duplicate key 'models'"]
    assert len(dup) == 1 and dup[0].line == line_of(text, "models:", 1) and dup[0].path == "models"


def test_duplicate_alias_key_in_flow_mapping():
    text = BASE.replace("  a:\n    kind: openai\n    model: gpt-4o-mini\n",
                        "  a: {kind: openai, model: x, kind: anthropic}\n")
    issue = only_issue(text)
    assert (issue.line, issue.path, issue.message) == (3, "backends.a.kind", "duplicate key 'kind'")


# -- anchors and merge keys ----------------------------------------------------------------

ANCHORS = dedent("""\
    version: 1
    backends:
      vllm-a: &gpu
        kind: vllm
        base_url: http://gpu-1:8000/v1
        model: llama
        timeouts: &fast {connect_s: 1, first_token_s: 5}
      vllm-b:
        <<: *gpu
      vllm-c:
        <<: *gpu
        base_url: http://gpu-3:8000/v1
    models:
      chat:
        targets: &pool [vllm-a, vllm-b]
      chat-again:
        targets: *pool
    """)


def test_anchor_without_override_and_alias_lists():
    text = ANCHORS.replace("  vllm-c:\n    <<: *gpu\n    base_url: http://gpu-3:8000/v1\n", "")
    assert "vllm-c" not in text
    loaded = load(text)
    a, b = loaded.policy.backends["vllm-a"], loaded.policy.backends["vllm-b"]
    assert a == b
    assert b.timeouts.connect_s == 1 and b.timeouts.first_token_s == 5
    assert loaded.policy.models["chat-again"].targets == ["vllm-a", "vllm-b"]
    # lines of merged values resolve (to where they are written: the anchor)
    assert loaded.lines[("backends", "vllm-b", "kind")] == line_of(text, "kind: vllm")
    assert loaded.lines[("models", "chat-again", "targets")] in (line_of(text, "&pool"),
                                                                line_of(text, "targets: *pool"))
    assert loaded.issue(("models", "chat-again", "targets", 1), "x").line == line_of(text, "&pool")
    assert loaded.issue(("backends", "vllm-b", "timeouts", "connect_s"), "x").line == line_of(text, "&fast")


def test_anchor_merge_error_is_located():
    text = dedent("""\
        version: 1
        x-defaults: &d
          kind: openai
        backends:
          a:
            <<: *d
            model: m
            bogus: 1
        models:
          chat: {targets: [a]}
        """)
    issues = issues_of(text)
    assert [(i.line, i.path, i.message) for i in issues] == [
        (2, "x-defaults", "unknown key 'x-defaults'"),
        (8, "backends.a.bogus", "unknown key 'bogus'"),
    ]


def test_merge_key_can_be_overridden():
    loaded = load(ANCHORS)
    assert str(loaded.policy.backends["vllm-c"].base_url) == "http://gpu-3:8000/v1"
    assert loaded.policy.backends["vllm-c"].model == "llama"


# -- schema problems -----------------------------------------------------------------------


def test_unknown_key_top_level():
    text = BASE + "foo: 1\n"
    issue = only_issue(text)
    assert str(issue) == f"p.yaml:{line_of(text, 'foo:')} foo: unknown key 'foo'"


def test_unknown_key_nested():
    text = BASE.replace("    kind: openai\n", "    kind: openai\n    foo: bar\n")
    issue = only_issue(text)
    assert (issue.line, issue.path, issue.message) == (5, "backends.a.foo", "unknown key 'foo'")


def test_unknown_key_in_timeouts_flow_mapping():
    text = BASE + "    description: d\n"
    text = text.replace("model: gpt-4o-mini", "model: gpt-4o-mini\n    timeouts: {connect_s: 1, conect_s: 2}")
    issue = only_issue(text)
    assert (issue.line, issue.path, issue.message) == (
        line_of(text, "conect_s"), "backends.a.timeouts.conect_s", "unknown key 'conect_s'")


def test_unknown_key_with_block_value_points_at_the_key():
    text = BASE.replace("    kind: openai\n", "    kind: openai\n    extras:\n      retries: 3\n")
    issue = only_issue(text)
    assert (issue.line, issue.path) == (line_of(text, "extras:"), "backends.a.extras")


def test_all_disabled_warning_with_block_targets_points_at_targets_key():
    text = BASE.replace("model: gpt-4o-mini", "model: gpt-4o-mini\n    api_key: ''").replace(
        "targets: [a]", "targets:\n      - a")
    (warning,) = [w for w in load(text).warnings if w.path == "models.chat.targets"]
    assert warning.line == line_of(text, "targets:")


def test_backend_level_error_points_at_backend_name():
    text = BASE.replace("kind: openai", "kind: vllm")
    assert only_issue(text).line == line_of(text, "  a:")


def test_telemetry_reference_must_be_a_backend():
    text = BASE + "telemetry:\n  reference_backend: nope\n"
    issue = only_issue(text)
    assert (issue.path, issue.line) == ("telemetry.reference_backend", line_of(text, "reference_backend"))
    assert "unknown backend 'nope'" in issue.message


def test_telemetry_accepted_when_null():
    assert load(BASE + "telemetry:\n").policy.telemetry.record_content is False


def test_empty_rules_and_sensitivity_mean_the_defaults():
    loaded = load(BASE + "rules:\nsensitivity:\n")
    assert loaded.policy.rules == [] and loaded.policy.sensitivity.closed_max == "internal"


def test_version_2_rejected():
    text = BASE.replace("version: 1", "version: 2")
    issue = only_issue(text)
    assert (issue.line, issue.path) == (1, "version")
    assert "1" in issue.message


def test_version_defaults_to_1():
    assert load(BASE.replace("version: 1\n", "")).policy.version == 1


@pytest.mark.parametrize("missing", ["backends", "models"])
def test_required_top_level_key_missing(missing: str):
    data = yaml.safe_load(BASE)
    del data[missing]
    issues = issues_of(yaml.safe_dump(data, sort_keys=False))
    assert [(i.path, i.message) for i in issues] == [(missing, "required key is missing")]
    assert issues[0].line == 1  # falls back to the document


def test_required_backend_field_missing():
    text = BASE.replace("    model: gpt-4o-mini\n", "")
    issue = only_issue(text)
    assert (issue.path, issue.message) == ("backends.a.model", "required key is missing")
    assert issue.line is not None and issue.line in (3, 4)


def test_empty_backends_and_models():
    issues = issues_of("version: 1\nbackends: {}\nmodels: {}\n")
    assert [(i.line, i.path) for i in issues] == [(2, "backends"), (3, "models")]


@pytest.mark.parametrize(
    ("old", "new", "path", "needle"),
    [
        ("model: gpt-4o-mini", "model: [x]", "backends.a.model", "model:"),
        ("model: gpt-4o-mini", "model: ''", "backends.a.model", "model:"),
        ("kind: openai", "kind: 12", "backends.a.kind", "kind:"),
        ("targets: [a]", "targets: a", "models.chat.targets", "targets:"),
        ("targets: [a]", "targets: []", "models.chat.targets", "targets:"),
        ("targets: [a]", "targets: [a, 3]", "models.chat.targets[1]", "targets:"),
        ("version: 1", "version: one", "version", "version"),
    ],
)
def test_wrong_types(old: str, new: str, path: str, needle: str):
    text = BASE.replace(old, new)
    assert text != BASE
    issue = only_issue(text)
    assert issue.path == path
    assert issue.line == line_of(text, needle)
    assert issue.message and not issue.message.startswith("Value error")


@pytest.mark.parametrize(
    ("extra", "path"),
    [
        ("    self_hosted: maybe\n", "backends.a.self_hosted"),
        ("    headers: {x-team: [1]}\n", "backends.a.headers.x-team"),
        ("    headers: [a]\n", "backends.a.headers"),
        ("    timeouts: 5\n", "backends.a.timeouts"),
        ("    price: {input_per_mtok_usd: cheap}\n", "backends.a.price.input_per_mtok_usd"),
        ("    price: {output_per_mtok_usd: -1}\n", "backends.a.price.output_per_mtok_usd"),
        ("    price: {gpu_hour_usd: 1, tokens_per_s: 0}\n", "backends.a.price.tokens_per_s"),
        ("    base_url: not a url\n", "backends.a.base_url"),
        ("    base_url: ftp://x/y\n", "backends.a.base_url"),
    ],
)
def test_backend_field_errors(extra: str, path: str):
    text = BASE.replace("    model: gpt-4o-mini\n", "    model: gpt-4o-mini\n" + extra)
    issue = only_issue(text)
    assert issue.path == path
    assert issue.line == 6


@pytest.mark.parametrize("field", ["connect_s", "first_token_s", "idle_s", "total_s"])
@pytest.mark.parametrize("value", ["-1", "0", "-0.5"])
def test_non_positive_timeouts(field: str, value: str):
    text = BASE.replace("model: gpt-4o-mini", f"model: gpt-4o-mini\n    timeouts:\n      {field}: {value}")
    issue = only_issue(text)
    assert issue.path == f"backends.a.timeouts.{field}"
    assert issue.line == line_of(text, field)
    assert "greater than 0" in issue.message


@pytest.mark.parametrize(("value", "ok"), [("0", False), ("-3", False), ("1025", False), ("0.5", True),
                                           ("1024", True)])
def test_max_body_mb_bounds(value: str, ok: bool):
    text = BASE + f"settings:\n  max_body_mb: {value}\n"
    if ok:
        assert load(text).policy.settings.max_body_mb == float(value)
    else:
        assert only_issue(text).path == "settings.max_body_mb"


def test_self_hosted_kind_without_base_url():
    text = BASE.replace("kind: openai", "kind: vllm")
    issue = only_issue(text)
    assert issue.path == "backends.a"
    assert issue.message == "base_url is required for self-hosted kind 'vllm'"
    assert issue.line in (3, 4)


def test_self_hosted_false_on_a_direct_kind_is_treated_as_closed():
    text = BASE.replace("kind: openai", "kind: tgi\n    base_url: http://h/v1\n    self_hosted: false")
    policy = load(text).policy
    assert policy.max_level("a") == policy.sensitivity.closed_max


def test_bad_kind_shape():
    text = BASE.replace("kind: openai", "kind: OpenAI")
    issue = only_issue(text)
    assert (issue.path, issue.line) == ("backends.a.kind", 4)
    assert issue.message.startswith("kind 'OpenAI' must be lower_snake_case")


def test_gpu_hour_without_tokens_per_s():
    text = BASE.replace("model: gpt-4o-mini", "model: gpt-4o-mini\n    price:\n      gpu_hour_usd: 2.4")
    issue = only_issue(text)
    assert issue.path == "backends.a.price"
    assert issue.message == "gpu_hour_usd needs tokens_per_s to turn hours into a per-token price"
    assert issue.line in (line_of(text, "price:"), line_of(text, "gpu_hour_usd"))


def test_duplicate_targets():
    text = BASE.replace("  a:\n", "  b: {kind: openai, model: m}\n  a:\n").replace(
        "targets: [a]", "targets: [a, b, a, b, a]")
    issue = only_issue(text)
    assert issue.path == "models.chat.targets"
    assert issue.message == "duplicate targets: ['a', 'b']"
    assert issue.line == line_of(text, "targets:")


@pytest.mark.parametrize("name", ["bad name", "-leading-dash", ".dot", "slash/name", "ümlaut", "a b"])
def test_bad_backend_names(name: str):
    text = BASE.replace("  a:\n", f"  '{name}':\n").replace("targets: [a]", f"targets: ['{name}']")
    issue = only_issue(text)
    assert issue.path == "backends"
    assert issue.message.startswith(f"invalid names [{name!r}]")
    assert issue.line in (2, 3)  # `backends:` or the offending name (its first key today)


def test_bad_alias_name():
    text = BASE.replace("  chat:\n", "  'chat default':\n")
    issue = only_issue(text)
    assert issue.path == "models" and "invalid names ['chat default']" in issue.message


@pytest.mark.parametrize("name", ["a", "A1", "gpt-4o.mini", "ns:model", "under_score", "9lives"])
def test_good_names(name: str):
    text = BASE.replace("  a:\n", f"  '{name}':\n").replace("targets: [a]", f"targets: ['{name}']")
    assert list(load(text).policy.backends) == [name]


def test_numeric_key_is_read_as_a_name():
    text = BASE.replace("  a:\n", "  1:\n").replace("targets: [a]", "targets: ['1']")
    assert "1" in load(text).policy.backends


def test_non_scalar_key_reported_not_crashed():
    issues = issues_of(BASE.replace("  a:\n", "  ? [a, b]\n  :\n"))
    assert any("keys must be strings" in i.message for i in issues)


def test_unhashable_key_is_a_policy_error():
    with pytest.raises(PolicyError):
        load(BASE + "? [x, y]\n: 1\n")


# -- cross references ----------------------------------------------------------------------

FLEET = dedent("""\
    version: 1
    backends:
      vllm-a:
        kind: vllm
        base_url: http://gpu-1:8000/v1
        model: llama
      openai:
        kind: openai
        model: gpt-4o-mini
    models:
      chat:
        targets: [vllm-a, tgi-b, openai]
    """)


def test_unknown_backend_in_flow_list():
    issue = only_issue(FLEET)
    assert str(issue) == ("p.yaml:12 models.chat.targets[1]: unknown backend 'tgi-b' "
                          "(backends: openai, vllm-a)")


def test_unknown_backend_in_block_list_has_its_own_line():
    text = FLEET.replace("    targets: [vllm-a, tgi-b, openai]\n",
                         "    targets:\n      - vllm-a\n      - tgi-b\n      - openai\n")
    issue = only_issue(text)
    assert issue.path == "models.chat.targets[1]"
    assert issue.line == line_of(text, "- tgi-b") == 14
    assert issue.message.startswith("unknown backend 'tgi-b'")


def test_unknown_backend_in_multiline_flow_list():
    text = FLEET.replace("    targets: [vllm-a, tgi-b, openai]\n",
                         "    targets: [\n      vllm-a,\n      tgi-b,\n      openai]\n")
    issue = only_issue(text)
    assert (issue.path, issue.line) == ("models.chat.targets[1]", line_of(text, "tgi-b"))


def test_several_unknown_backends_all_reported_in_order():
    text = FLEET.replace("[vllm-a, tgi-b, openai]", "[nope-1, vllm-a, nope-2]") + \
        "  other:\n    targets:\n      - nope-3\n"
    issues = issues_of(text)
    assert [(i.path, i.line) for i in issues] == [
        ("models.chat.targets[0]", 12), ("models.chat.targets[2]", 12), ("models.other.targets[0]", 15)]


def test_default_alias_must_exist():
    text = BASE + "settings:\n  default_alias: chatt\n"
    issue = only_issue(text)
    assert str(issue) == f"p.yaml:{line_of(text, 'default_alias')} settings.default_alias: unknown model alias 'chatt'"


def test_default_alias_ok():
    assert load(BASE + "settings:\n  default_alias: chat\n").policy.settings.default_alias == "chat"


# -- several problems at once --------------------------------------------------------------


def test_env_and_pydantic_errors_reported_together_sorted_by_line():
    text = dedent("""\
        version: 2
        backends:
          a:
            kind: openai
            model: m
            api_key: ${MISSING_KEY}
            timeouts: {connect_s: -1}
            colour: blue
        models:
          chat:
            targets: [a]
        """)
    issues = issues_of(text)
    assert [(i.line, i.path) for i in issues] == [
        (1, "version"),
        (6, "backends.a.api_key"),
        (7, "backends.a.timeouts.connect_s"),
        (8, "backends.a.colour"),
    ]
    assert "MISSING_KEY is not set" in issues[1].message
    assert issues[3].message == "unknown key 'colour'"


def test_reference_and_field_errors_reported_together():
    text = FLEET.replace("model: llama", "model: llama\n    timeouts: {connect_s: -1}")
    issues = issues_of(text)
    assert [(i.line, i.path) for i in issues] == [
        (7, "backends.vllm-a.timeouts.connect_s"), (13, "models.chat.targets[1]")]


def test_env_and_reference_errors_reported_together():
    text = FLEET.replace("model: gpt-4o-mini", "model: gpt-4o-mini\n    api_key: ${K}")
    issues = issues_of(text)
    assert [(i.line, i.path) for i in issues] == [(10, "backends.openai.api_key"), (13, "models.chat.targets[1]")]


# -- LoadedPolicy --------------------------------------------------------------------------


def test_loaded_policy_issue_locates_lines():
    loaded = load(FLEET.replace(", tgi-b", ""))
    issue = loaded.issue(("models", "chat", "targets", 1), "later check")
    assert issue == PolicyIssue(FILE, 12, "models.chat.targets[1]", "later check")
    assert str(issue) == "p.yaml:12 models.chat.targets[1]: later check"
    # an unknown leaf falls back to the nearest known parent
    assert loaded.issue(("backends", "openai", "model", "deeper", 3), "m").line == 9
    assert loaded.issue(("backends", "vllm-a", "base_url"), "m").line == 5
    assert loaded.issue(("nowhere",), "m").line == 1
    assert loaded.issue((), "m") == PolicyIssue(FILE, 1, "", "m")


def test_loaded_policy_is_frozen_and_keeps_source():
    loaded = load(BASE)
    assert loaded.source == FILE
    with pytest.raises(AttributeError):
        loaded.source = "x"  # type: ignore[misc]
    assert "lines" not in repr(loaded)


def test_warnings_for_disabled_backend_and_all_disabled_alias():
    text = dedent("""\
        version: 1
        backends:
          local:
            kind: ollama
            base_url: http://localhost:11434/v1
            model: llama3
          gpt:
            kind: openai
            model: gpt-4o
            api_key: ${OPENAI_API_KEY:-}
          claude:
            kind: anthropic
            model: claude
            api_key: ""
        models:
          mixed:
            targets: [local, gpt]
          closed:
            targets: [gpt, claude]
        """)
    loaded = load(text)
    assert [str(w) for w in loaded.warnings] == [
        "p.yaml:10 backends.gpt.api_key: no API key: this backend is disabled until one is set",
        "p.yaml:14 backends.claude.api_key: no API key: this backend is disabled until one is set",
        "p.yaml:19 models.closed.targets: every target is disabled: requests for this alias will get 503",
    ]
    loaded = load(text, {"OPENAI_API_KEY": "sk-x"})
    assert [w.path for w in loaded.warnings] == ["backends.claude.api_key"]


def test_no_warnings_for_credential_chain_backend():
    text = BASE  # closed backend without api_key: provider credential chain
    loaded = load(text)
    assert loaded.warnings == ()
    assert loaded.policy.backends["a"].has_credentials
