"""``policies.models`` and ``policies.errors``: field rules, derived properties, secrets,
and the exact text of issues. Pure unit tests."""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from policies import (
    BackendSpec,
    ModelAlias,
    Policy,
    PolicyError,
    PolicyIssue,
    PolicySettings,
    Price,
    RequestFacts,
    SensitivitySpec,
    TelemetrySpec,
    Timeouts,
    UnknownAlias,
    load_policy_text,
)
from policies.loader import dotted
from router.runtime import KIND_TABLE

#: The kinds the table handed to policy marks self-hosted.
SELF_HOSTED_KINDS = frozenset(kind for kind, info in KIND_TABLE.listed.items() if info.self_hosted)


def backend(**fields: object) -> BackendSpec:
    """A ``BackendSpec`` validated as the loader does it: with the kind table."""
    return BackendSpec.model_validate(fields, context=KIND_TABLE)

# -- PolicyIssue / PolicyError / UnknownAlias ----------------------------------------------


def test_issue_str_with_line_and_path():
    issue = PolicyIssue("policies/x.yaml", 14, "models.chat.targets[1]", "unknown backend 'tgi-b'")
    assert str(issue) == "policies/x.yaml:14 models.chat.targets[1]: unknown backend 'tgi-b'"


def test_issue_str_without_path():
    assert str(PolicyIssue("p.yaml", 3, "", "invalid YAML: x")) == "p.yaml:3: invalid YAML: x"


def test_issue_str_without_line():
    assert str(PolicyIssue("p.yaml", None, "", "policy file is empty")) == "p.yaml: policy file is empty"
    assert str(PolicyIssue("p.yaml", None, "a.b", "m")) == "p.yaml a.b: m"


def test_issue_is_frozen_and_hashable():
    issue = PolicyIssue("f", 1, "p", "m")
    with pytest.raises(AttributeError):
        issue.line = 2  # type: ignore[misc]
    assert {issue, PolicyIssue("f", 1, "p", "m")} == {issue}


def test_policy_error_joins_issues():
    issues = [PolicyIssue("f", 1, "a", "one"), PolicyIssue("f", 2, "b", "two")]
    err = PolicyError(issues)
    assert err.issues == tuple(issues)
    assert str(err) == "f:1 a: one\nf:2 b: two"


def test_unknown_alias_message_lists_available_in_order():
    err = UnknownAlias("gpt-5", ("chat", "embed", "big"))
    assert isinstance(err, LookupError)
    assert (err.name, err.available) == ("gpt-5", ("chat", "embed", "big"))
    assert str(err) == "model 'gpt-5' does not exist; available models: chat, embed, big"


@pytest.mark.parametrize(
    ("loc", "expected"),
    [
        ((), ""),
        (("version",), "version"),
        (("models", "chat", "targets", 1), "models.chat.targets[1]"),
        (("backends", "gpt-4o.mini", "timeouts", "idle_s"), "backends.gpt-4o.mini.timeouts.idle_s"),
        (("a", 0, 1, "b"), "a[0][1].b"),
    ],
)
def test_dotted(loc: tuple[str | int, ...], expected: str):
    assert dotted(loc) == expected


# -- BackendSpec ---------------------------------------------------------------------------


def test_api_key_is_a_secret_not_in_repr():
    spec = backend(kind="openai", model="gpt-4o", api_key="sk-very-secret")
    assert isinstance(spec.api_key, SecretStr)
    assert spec.api_key.get_secret_value() == "sk-very-secret"
    assert "sk-very-secret" not in repr(spec)
    assert "sk-very-secret" not in str(spec)
    assert "sk-very-secret" not in spec.model_dump_json()


def test_api_key_secret_through_the_loader():
    text = "backends:\n  a: {kind: openai, model: m, api_key: '${K}'}\nmodels:\n  c: {targets: [a]}\n"
    loaded = load_policy_text(text, {"K": "sk-from-env-123"}, kinds=KIND_TABLE)
    assert "sk-from-env-123" not in repr(loaded)
    assert "sk-from-env-123" not in repr(loaded.policy)
    assert loaded.policy.backends["a"].api_key.get_secret_value() == "sk-from-env-123"


@pytest.mark.parametrize("kind", sorted(SELF_HOSTED_KINDS))
def test_self_hosted_kinds(kind: str):
    spec = backend(kind=kind, model="m", base_url="http://h:1/v1")
    assert spec.is_self_hosted and spec.direct
    assert spec.has_credentials
    # a self-hosted backend is enabled whatever its key
    assert backend(kind=kind, model="m", base_url="http://h:1/v1", api_key="").has_credentials
    assert backend(kind=kind, model="m", base_url="http://h:1/v1", api_key="k").has_credentials


def test_self_hosted_kinds_are_the_documented_ones():
    assert {"openai_compatible", "vllm", "tgi", "llamacpp", "ollama"} == SELF_HOSTED_KINDS


@pytest.mark.parametrize("kind", ["openai", "anthropic", "gemini", "bedrock", "azure", "mistral"])
def test_closed_kinds(kind: str):
    spec = backend(kind=kind, model="m")
    assert not spec.is_self_hosted and not spec.direct
    assert spec.base_url is None


def test_has_credentials_closed_backend():
    assert backend(kind="openai", model="m").has_credentials  # provider credential chain
    assert not backend(kind="openai", model="m", api_key="").has_credentials
    assert backend(kind="openai", model="m", api_key="sk-1").has_credentials


def test_self_hosted_flag_overrides_kind_for_unknown_kinds():
    spec = backend(kind="my_server", model="m", self_hosted=True, base_url="http://h/v1")
    assert spec.is_self_hosted
    assert not spec.direct  # not one of the direct HTTP kinds


def test_self_hosted_true_on_self_hosted_kind_ok():
    assert backend(kind="vllm", model="m", base_url="http://h/v1", self_hosted=True).is_self_hosted


def test_self_hosted_kind_needs_base_url():
    with pytest.raises(ValidationError, match="base_url is required for self-hosted kind 'ollama'"):
        backend(kind="ollama", model="m")


def test_third_party_compatible_server_is_not_self_hosted():
    spec = backend(kind="openai_compatible", model="m", base_url="http://h/v1", self_hosted=False)
    assert spec.direct and not spec.is_self_hosted


@pytest.mark.parametrize(("kind", "prefill"), [("vllm", True), ("llamacpp", True), ("anthropic", True),
                                               ("tgi", False), ("openai", False), ("gemini", False)])
def test_prefill_resolved_from_the_kind_table(kind: str, prefill: bool):
    spec = backend(kind=kind, model="m", base_url="http://h/v1")
    assert spec.can_prefill is prefill
    assert backend(kind=kind, model="m", base_url="http://h/v1", supports_prefill=not prefill).can_prefill is not prefill


def test_backend_without_the_kind_table_is_a_programming_error():
    with pytest.raises(TypeError, match="kind table"):
        BackendSpec(kind="openai", model="m")
    with pytest.raises(TypeError, match="kind table"):
        BackendSpec.model_validate({"kind": "vllm", "model": "m", "base_url": "http://h/v1"})


def test_closed_backend_may_have_base_url():
    spec = backend(kind="azure", model="dep", base_url="https://x.openai.azure.com")
    assert str(spec.base_url).startswith("https://x.openai.azure.com")


@pytest.mark.parametrize("kind", ["OpenAI", "open-ai", "1openai", "", "open ai", "_x"])
def test_kind_must_be_lower_snake(kind: str):
    with pytest.raises(ValidationError, match="lower_snake_case"):
        backend(kind=kind, model="m")


def test_model_must_be_non_empty():
    with pytest.raises(ValidationError):
        backend(kind="openai", model="")


def test_backend_defaults():
    spec = backend(kind="openai", model="m")
    assert spec.timeouts == Timeouts()
    assert (spec.timeouts.connect_s, spec.timeouts.first_token_s, spec.timeouts.idle_s,
            spec.timeouts.total_s) == (5.0, 30.0, 30.0, 600.0)
    assert spec.price is None and spec.headers == {} and spec.self_hosted is None


def test_backend_is_frozen_and_forbids_extra():
    spec = backend(kind="openai", model="m")
    with pytest.raises(ValidationError):
        spec.model = "other"  # type: ignore[misc]
    with pytest.raises(ValidationError, match="extra"):
        backend(kind="openai", model="m", colour="blue")


# -- Timeouts / Price / PolicySettings -----------------------------------------------------


@pytest.mark.parametrize("field", ["connect_s", "first_token_s", "idle_s", "total_s"])
@pytest.mark.parametrize("value", [0, -1, -0.001])
def test_timeouts_must_be_positive(field: str, value: float):
    with pytest.raises(ValidationError, match="greater than 0"):
        Timeouts(**{field: value})


def test_timeouts_accept_positive_fractions():
    assert Timeouts(connect_s=0.25).connect_s == 0.25


def test_price_gpu_needs_tokens_per_s():
    with pytest.raises(ValidationError, match="gpu_hour_usd needs tokens_per_s"):
        Price(gpu_hour_usd=2.0)
    assert Price(gpu_hour_usd=2.0, tokens_per_s=1000).tokens_per_s == 1000
    assert Price(tokens_per_s=10).gpu_hour_usd is None  # throughput alone is fine


@pytest.mark.parametrize("field", ["input_per_mtok_usd", "output_per_mtok_usd", "cached_input_per_mtok_usd",
                                   "gpu_hour_usd"])
def test_prices_may_be_zero_but_not_negative(field: str):
    extra = {"tokens_per_s": 1} if field == "gpu_hour_usd" else {}
    assert getattr(Price(**{field: 0}, **extra), field) == 0
    with pytest.raises(ValidationError):
        Price(**{field: -0.01}, **extra)


def test_tokens_per_s_must_be_positive():
    with pytest.raises(ValidationError):
        Price(gpu_hour_usd=1, tokens_per_s=0)


def test_settings_defaults_and_bounds():
    assert PolicySettings() == PolicySettings(max_body_mb=10.0, default_alias=None)
    assert PolicySettings(max_body_mb=1024).max_body_mb == 1024
    for bad in (0, -1, 1024.5):
        with pytest.raises(ValidationError):
            PolicySettings(max_body_mb=bad)


def test_settings_max_n_and_estimate_max_tokens_bounds():
    """Issue 11: ``max_n`` caps n / best_of (default 8, at most 128); no estimate can overflow."""
    assert PolicySettings().max_n == 8 and PolicySettings(max_n=128).max_n == 128
    for field, bad in (("max_n", 0), ("max_n", 129), ("estimate_max_tokens", 2**31), ("estimate_max_tokens", 0)):
        with pytest.raises(ValidationError):
            PolicySettings(**{field: bad})


# -- ModelAlias / Policy -------------------------------------------------------------------


def test_alias_targets_non_empty():
    with pytest.raises(ValidationError):
        ModelAlias(targets=[])


def test_alias_duplicate_targets_listed_sorted_once():
    with pytest.raises(ValidationError, match=r"duplicate targets: \['a', 'b'\]"):
        ModelAlias(targets=["b", "a", "b", "a", "c"])


def test_alias_keeps_target_order():
    assert ModelAlias(targets=["z", "a", "m"]).targets == ["z", "a", "m"]


def _policy(**kw: object) -> Policy:
    data: dict[str, object] = {
        "backends": {"a": {"kind": "openai", "model": "m"}},
        "models": {"chat": {"targets": ["a"]}},
    }
    data.update(kw)
    return Policy.model_validate(data, context=KIND_TABLE)


def test_policy_minimal():
    p = _policy()
    assert p.version == 1 and p.settings == PolicySettings()
    assert (p.teams, p.cache.mode, p.telemetry) == ({}, "off", TelemetrySpec())
    assert p.rules == [] and p.sensitivity == SensitivitySpec()


@pytest.mark.parametrize("value", [{"x": 1}, [1], "on", True, {"record_content": "maybe"}])
def test_policy_telemetry_is_validated(value: object):
    with pytest.raises(ValidationError):
        _policy(telemetry=value)


def test_policy_telemetry_settings():
    p = _policy(telemetry={"reference_backend": "a", "record_content": True})
    assert p.telemetry == TelemetrySpec(reference_backend="a", record_content=True)
    assert _policy(telemetry=None).telemetry == TelemetrySpec()


def test_policy_version_must_be_1():
    with pytest.raises(ValidationError):
        _policy(version=2)


def test_policy_unknown_top_level_key():
    with pytest.raises(ValidationError, match="extra"):
        _policy(routes={})


def test_policy_bad_names_listed():
    with pytest.raises(ValidationError, match=r"invalid names \['has space', '-x'\]"):
        _policy(backends={"ok": {"kind": "openai", "model": "m"}, "has space": {"kind": "openai", "model": "m"},
                          "-x": {"kind": "openai", "model": "m"}})


def test_policy_keeps_declaration_order():
    p = _policy(models={"z": {"targets": ["a"]}, "a": {"targets": ["a"]}, "m": {"targets": ["a"]}})
    assert list(p.models) == ["z", "a", "m"]


def test_request_facts_defaults_and_frozen():
    facts = RequestFacts(model="chat", endpoint="chat")
    assert facts.stream is False
    with pytest.raises(AttributeError):
        facts.model = "x"  # type: ignore[misc]
