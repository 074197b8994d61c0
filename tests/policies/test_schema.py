"""``policies.schema``: the JSON Schema editors check policy files against. It is committed in sync
with the models, accepts every shipped policy and what the loader accepts (``${ENV}`` references are
expanded before validation), and rejects unknown keys as the loader does. Pure unit tests, apart from
one that runs ``switchyard policy schema`` as users do."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft7Validator, Draft202012Validator, FormatChecker

from policies import PolicyError, load_policy_text, policy_schema, policy_schema_json
from policies.schema import ENV_REFERENCE_PATTERN, SCHEMA_DIALECT, SCHEMA_ID
from router.runtime import KIND_TABLE

ROOT = Path(__file__).resolve().parents[2]
POLICY_DIR = ROOT / "policies"
SCHEMA_FILE = POLICY_DIR / "policy.schema.json"
SHIPPED = sorted([*POLICY_DIR.glob("*.yaml"), *(POLICY_DIR / "examples").glob("*.yaml")])
REGENERATE = "switchyard policy schema --output policies/policy.schema.json"
MINIMAL = {"backends": {"b": {"kind": "openai", "model": "m"}}, "models": {"m": {"targets": ["b"]}}}
MODELINE = re.compile(r"# yaml-language-server: \$schema=(\S+)")


def _uri(value: object) -> bool:
    """Editors (yaml-language-server) want a scheme in a ``format: uri`` string; jsonschema alone skips it."""
    return not isinstance(value, str) or re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", value) is not None


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    formats = FormatChecker()
    formats.checks("uri")(_uri)
    return Draft202012Validator(policy_schema(), format_checker=formats)


def errors(validator: Draft202012Validator, document: object) -> list[str]:
    return sorted(f"{e.json_path}: {e.message}" for e in validator.iter_errors(document))


def with_value(path: tuple[str, ...], value: object) -> dict[str, object]:
    """``MINIMAL`` with ``value`` at ``path`` (mappings on the way are created)."""
    document = copy.deepcopy(MINIMAL)
    node: dict[str, object] = document
    for key in path[:-1]:
        node = node.setdefault(key, {})  # type: ignore[assignment]
    node[path[-1]] = value
    return document


# -- the committed file --------------------------------------------------------------------


def test_committed_schema_is_what_the_models_produce():
    assert SCHEMA_FILE.read_text(encoding="utf-8") == policy_schema_json(), (
        f"policies/policy.schema.json is out of date with policies/models.py: run `{REGENERATE}`")


def test_schema_is_deterministic_and_a_valid_schema_for_2020_12_and_draft_7():
    assert policy_schema_json() == policy_schema_json()
    schema = policy_schema()
    Draft202012Validator.check_schema(schema)
    Draft7Validator.check_schema(schema)  # yaml-language-server checks every schema against draft-07
    assert schema["$schema"] == SCHEMA_DIALECT and schema["$id"] == SCHEMA_ID
    assert schema["title"] == "Switchyard policy" and "switchyard policy schema" in str(schema["description"])


def test_cli_prints_the_schema_and_writes_it_with_output(tmp_path):
    out = subprocess.run([sys.executable, "-m", "router", "policy", "schema"], capture_output=True, text=True,
                         timeout=60, cwd=ROOT)
    assert out.returncode == 0 and out.stderr == "" and out.stdout == policy_schema_json()
    target = tmp_path / "policy.schema.json"
    out = subprocess.run([sys.executable, "-m", "router", "policy", "schema", "--output", str(target)],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0 and out.stdout == ""
    assert target.read_text(encoding="utf-8") == policy_schema_json()


# -- shipped policies ----------------------------------------------------------------------


def test_shipped_policies_are_found():
    names = {p.relative_to(POLICY_DIR).as_posix() for p in SHIPPED}
    assert "default.yaml" in names and len([n for n in names if n.startswith("examples/")]) >= 2


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.relative_to(POLICY_DIR).as_posix())
def test_shipped_policy_is_valid_against_the_schema(path: Path, validator: Draft202012Validator):
    assert errors(validator, yaml.safe_load(path.read_text(encoding="utf-8"))) == []


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.relative_to(POLICY_DIR).as_posix())
def test_shipped_policy_names_the_schema_on_its_first_line(path: Path):
    first = path.read_text(encoding="utf-8").splitlines()[0]
    match = MODELINE.fullmatch(first)
    assert match, f"{path}: the first line must be `# yaml-language-server: $schema=<path to policy.schema.json>`"
    assert match.group(1).startswith(("./", "../"))
    assert (path.parent / match.group(1)).resolve() == SCHEMA_FILE.resolve()


# -- the schema accepts what the loader accepts ----------------------------------------------

ACCEPTED = [
    (("backends", "b", "timeouts", "connect_s"), "${CONNECT_S:-2.5}", {}),
    (("backends", "b", "context_window"), "${CONTEXT_WINDOW}", {"CONTEXT_WINDOW": "4096"}),
    (("backends", "b", "self_hosted"), "${SELF_HOSTED}", {"SELF_HOSTED": "true"}),
    (("backends", "b", "base_url"), "${BASE_URL:-http://gpu-1:8000/v1}", {}),
    (("backends", "b", "base_url"), "http://${HOST}:8000/v1", {"HOST": "gpu-1"}),
    (("backends", "b", "max_sensitivity"), "${MAX_LEVEL:-internal}", {}),
    (("backends", "b", "api_key"), "${OPENAI_API_KEY:-}", {}),
    (("backends", "b", "api_key"), "sk-a-plain-secret", {}),
    (("backends", "b", "price", "input_per_mtok_usd"), "${PRICE_IN:-0.15}", {}),
    (("sensitivity", "closed_max"), "${CLOSED_MAX:-public}", {}),
    (("sensitivity", "detectors", "email"), "${EMAIL_LEVEL:-off}", {}),
    (("settings", "watch"), "${WATCH:-false}", {}),
    (("cache", "ttl_s"), "${CACHE_TTL:-60}", {}),
    (("rules",), [{"name": "${RULE:-r1}", "route": {"strategy": "${STRATEGY:-cheapest}"}}], {}),
    (("rules",), None, {}),  # `rules:` with nothing under it
    (("teams",), None, {}),
    (("settings",), None, {}),
]
REJECTED = [
    (("version",), "${VERSION:-1}", {}),  # a literal: the model takes no string for it
    (("version",), None, {}),
    (("backends", "b", "timeouts", "connect_s"), "soon", {}),
    (("backends", "b", "base_url"), "gpu-1/v1", {}),  # no scheme
    (("cache", "mode"), "fuzzy", {}),
]


@pytest.mark.parametrize(("path", "value", "env"), ACCEPTED, ids=lambda v: ".".join(v) if isinstance(v, tuple) else None)
def test_schema_accepts_what_the_loader_accepts(path, value, env, validator):
    document = with_value(path, value)
    load_policy_text(yaml.safe_dump(document), env, kinds=KIND_TABLE)  # raises if the loader does not accept it
    assert errors(validator, document) == []


@pytest.mark.parametrize(("path", "value", "env"), REJECTED, ids=lambda v: ".".join(v) if isinstance(v, tuple) else None)
def test_schema_rejects_what_the_loader_rejects(path, value, env, validator):
    document = with_value(path, value)
    with pytest.raises(PolicyError):
        load_policy_text(yaml.safe_dump(document), env, kinds=KIND_TABLE)
    assert errors(validator, document) != []


def test_env_reference_pattern_is_what_the_loader_expands():
    for reference in ("${A}", "${_A1}", "${A:-}", "${A:-x y}", "url ${A}/v1"):
        assert re.search(ENV_REFERENCE_PATTERN, reference), reference
        loaded = load_policy_text(yaml.safe_dump(with_value(("models", "m", "description"), reference)),
                                  {"A": "set", "_A1": "set"}, kinds=KIND_TABLE)
        assert "${" not in str(loaded.policy.models["m"].description), reference
    for text in ("$A", "${1A}", "{A}", "${A"):
        assert not re.search(ENV_REFERENCE_PATTERN, text), text


def test_secrets_are_plain_strings_in_the_schema():
    api_key = policy_schema()["$defs"]["BackendSpec"]["properties"]["api_key"]  # type: ignore[index]
    assert {"type": "string", "format": "password", "writeOnly": True} in api_key["anyOf"]


# -- unknown keys are rejected, as the loader does (extra="forbid") ---------------------------


def test_unknown_top_level_key_is_rejected(validator):
    document = {**MINIMAL, "routes": []}
    assert errors(validator, document) == ["$: Additional properties are not allowed ('routes' was unexpected)"]
    with pytest.raises(PolicyError, match="unknown key 'routes'"):
        load_policy_text(yaml.safe_dump(document), {}, kinds=KIND_TABLE)


def test_unknown_backend_key_is_rejected(validator):
    document = with_value(("backends", "b", "api_keys"), "${OPENAI_API_KEY:-}")
    assert errors(validator, document) == [
        "$.backends.b: Additional properties are not allowed ('api_keys' was unexpected)"]
    with pytest.raises(PolicyError, match="unknown key 'api_keys'"):
        load_policy_text(yaml.safe_dump(document), {}, kinds=KIND_TABLE)


def test_every_object_in_the_schema_forbids_unknown_keys():
    schema = policy_schema()
    objects = {"$": schema, **{f"$defs.{k}": v for k, v in schema["$defs"].items()}}  # type: ignore[attr-defined]
    open_ones = [name for name, sub in objects.items()
                 if sub.get("type") == "object" and "properties" in sub and sub.get("additionalProperties") is not False]
    assert open_ones == []
