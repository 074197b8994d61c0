"""``policies.planner``: alias → ordered targets, disabled backends skipped with a reason,
plans precomputed. Includes a hypothesis property over generated policies. Pure unit tests."""

from __future__ import annotations

from textwrap import dedent

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies import Planner, RequestFacts, UnknownAlias, load_policy_text
from policies.pricing import cost
from router.runtime import KIND_TABLE

POLICY = dedent("""\
    version: 1
    backends:
      local:
        kind: llamacpp
        base_url: http://127.0.0.1:8080/v1
        model: gemma
      gpt:
        kind: openai
        model: gpt-4o-mini
        api_key: ${OPENAI_API_KEY:-}
      claude:
        kind: anthropic
        model: claude
        api_key: ${ANTHROPIC_API_KEY:-}
      bedrock:
        kind: bedrock
        model: anthropic.claude-v2
    models:
      chat-default:
        targets: [local, gpt, claude, bedrock]
      closed:
        targets: [claude, gpt]
      local-only:
        targets: [local]
    """)


def planner(env: dict[str, str] | None = None) -> Planner:
    return Planner(load_policy_text(POLICY, env or {}, kinds=KIND_TABLE))


def facts(model: str, endpoint: str = "chat", stream: bool = False) -> RequestFacts:
    return RequestFacts(model=model, endpoint=endpoint, stream=stream)  # type: ignore[arg-type]


def test_plan_with_every_key_keeps_declared_order():
    p = planner({"OPENAI_API_KEY": "sk-1", "ANTHROPIC_API_KEY": "sk-2"}).plan(facts("chat-default"))
    assert (p.alias, p.route, p.rule) == ("chat-default", "chat-default", "default")
    assert p.targets == ("local", "gpt", "claude", "bedrock") and p.skipped == ()
    assert p.allowed == frozenset(p.targets)


def test_plan_order_is_the_alias_order_not_backend_order():
    p = planner({"OPENAI_API_KEY": "sk-1", "ANTHROPIC_API_KEY": "sk-2"}).plan(facts("closed"))
    assert p.targets == ("claude", "gpt")


def test_plan_skips_disabled_closed_backends_with_reason():
    p = planner().plan(facts("chat-default"))
    assert p.targets == ("local", "bedrock")  # bedrock: no api_key → credential chain, kept
    assert p.skipped == (("gpt", "disabled: no API key"), ("claude", "disabled: no API key"))


def test_plan_with_only_some_keys():
    p = planner({"ANTHROPIC_API_KEY": "sk-2"}).plan(facts("closed"))
    assert p.targets == ("claude",)
    assert p.skipped == (("gpt", "disabled: no API key"),)


def test_plan_with_every_target_disabled_is_empty():
    p = planner().plan(facts("closed"))
    assert p.targets == ()
    assert [name for name, _ in p.skipped] == ["claude", "gpt"]


def test_plan_does_not_depend_on_endpoint_or_stream():
    pl = planner()
    base = pl.plan(facts("local-only"))
    assert base.targets == ("local",)
    for endpoint in ("chat", "completions", "embeddings"):
        for stream in (False, True):
            assert pl.plan(facts("local-only", endpoint, stream)) == base


def test_plans_are_deterministic():
    pl = planner()
    first = pl.plan(facts("chat-default"))
    assert pl.plan(facts("chat-default")) == first
    assert pl.plan(facts("closed")) != first


def test_plan_is_frozen():
    p = planner().plan(facts("local-only"))
    with pytest.raises(AttributeError):
        p.targets = ()  # type: ignore[misc]


def test_unknown_alias_lists_available_in_policy_order():
    pl = planner()
    assert pl.aliases == ("chat-default", "closed", "local-only")
    with pytest.raises(UnknownAlias) as info:
        pl.plan(facts("gpt-4o"))
    assert info.value.name == "gpt-4o"
    assert info.value.available == ("chat-default", "closed", "local-only")
    assert str(info.value) == ("model 'gpt-4o' does not exist; available models: "
                               "chat-default, closed, local-only")
    assert info.value.__cause__ is None


@pytest.mark.parametrize("name", ["", "Chat-Default", "chat-default ", "local"])
def test_unknown_alias_is_exact_match(name: str):
    with pytest.raises(UnknownAlias):
        planner().plan(facts(name))


# -- property: generated valid policies ----------------------------------------------------

_NAME = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,12}", fullmatch=True)
# kind of backend: self-hosted, closed with key, closed with empty key, closed with no key
_BACKEND_KIND = st.sampled_from(["self", "closed-key", "closed-empty", "closed-chain"])


@st.composite
def policies(draw: st.DrawFn) -> tuple[str, dict[str, str], dict[str, list[str]]]:
    backend_names = draw(st.lists(_NAME, min_size=1, max_size=6, unique=True))
    kinds = {n: draw(_BACKEND_KIND) for n in backend_names}
    backends: dict[str, dict[str, object]] = {}
    for n, k in kinds.items():
        if k == "self":
            backends[n] = {"kind": draw(st.sampled_from(["vllm", "tgi", "llamacpp", "ollama",
                                                         "openai_compatible"])),
                           "base_url": "http://gpu:8000/v1", "model": "m"}
        else:
            backends[n] = {"kind": draw(st.sampled_from(["openai", "anthropic", "gemini"])), "model": "m"}
            if k == "closed-key":
                backends[n]["api_key"] = "sk-test"
            elif k == "closed-empty":
                backends[n]["api_key"] = ""
    alias_names = draw(st.lists(_NAME, min_size=1, max_size=5, unique=True))
    models = {a: draw(st.permutations(backend_names).flatmap(
        lambda p: st.integers(1, len(p)).map(lambda k, p=p: list(p[:k])))) for a in alias_names}
    data = {"version": 1, "backends": backends,
            "models": {a: {"targets": t} for a, t in models.items()}}
    text = yaml.safe_dump(data, sort_keys=False, default_flow_style=draw(st.sampled_from([None, False, True])))
    return text, kinds, models


@settings(derandomize=True, max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policies())
def test_property_generated_policy_loads_and_plans_are_ordered_subsets(
        generated: tuple[str, dict[str, str], dict[str, list[str]]]):
    text, kinds, models = generated
    loaded = load_policy_text(text, {}, kinds=KIND_TABLE, file="gen.yaml")
    assert list(loaded.policy.models) == list(models)
    assert list(loaded.policy.backends) == list(kinds)
    pl = Planner(loaded)
    assert pl.aliases == tuple(models)
    disabled = {n for n, k in kinds.items() if k == "closed-empty"}
    for alias, targets in models.items():
        plan = pl.plan(RequestFacts(model=alias, endpoint="chat"))
        assert plan.alias == plan.route == alias
        # targets ⊆ alias targets, same order; skipped are exactly the disabled ones
        assert list(plan.targets) == [t for t in targets if t not in disabled]
        assert [n for n, _ in plan.skipped] == [t for t in targets if t in disabled]
        assert all(reason == "disabled: no API key" for _, reason in plan.skipped)
        assert pl.plan(RequestFacts(model=alias, endpoint="completions")) == plan
    warned_backends = {w.path for w in loaded.warnings if w.path.startswith("backends.")}
    assert warned_backends == {f"backends.{n}.api_key" for n in disabled}
    warned_aliases = {w.path for w in loaded.warnings if w.path.startswith("models.")}
    assert warned_aliases == {f"models.{a}.targets" for a, t in models.items() if set(t) <= disabled}
    for w in loaded.warnings:
        assert w.line is not None and w.file == "gen.yaml"


@settings(derandomize=True, max_examples=60, deadline=None)
@given(known=st.lists(_NAME, min_size=1, max_size=4, unique=True), asked=_NAME)
def test_property_unknown_alias_never_planned(known: list[str], asked: str):
    data = {"backends": {"b": {"kind": "openai", "model": "m"}},
            "models": {a: {"targets": ["b"]} for a in known}}
    pl = Planner(load_policy_text(yaml.safe_dump(data), {}, kinds=KIND_TABLE))
    if asked in known:
        assert pl.plan(RequestFacts(model=asked, endpoint="chat")).targets == ("b",)
    else:
        with pytest.raises(UnknownAlias) as info:
            pl.plan(RequestFacts(model=asked, endpoint="chat"))
        assert info.value.available == tuple(sorted(known)) == pl.aliases  # safe_dump sorts keys


def test_a_backend_whose_metrics_fail_moves_to_the_end():
    from policies import BackendLoad

    pl = planner({"OPENAI_API_KEY": "sk-1", "ANTHROPIC_API_KEY": "sk-2"})
    plan = pl.plan(facts("chat-default"), {"local": BackendLoad(scrape_ok=False)})
    assert plan.targets[-1] == "local" and plan.targets[0] != "local"
    assert any(c.backend == "local" and "cannot be read" in c.reason for c in plan.candidates)


def test_estimates_scale_with_the_answers_asked_for():
    """Issue 11: ``n`` (``RequestFacts.choices``) multiplies the output estimate, not the input."""
    priced = dedent("""\
        version: 1
        backends:
          gpt: {kind: openai, model: gpt-x, api_key: sk-1, price: {input_per_mtok_usd: 1, output_per_mtok_usd: 4}}
        models:
          chat: {targets: [gpt]}
        """)
    p = Planner(load_policy_text(priced, {}, kinds=KIND_TABLE))
    one = p.plan(RequestFacts(model="chat", input_tokens=100, max_tokens=50)).estimates["gpt"]
    four = p.plan(RequestFacts(model="chat", input_tokens=100, max_tokens=50, choices=4)).estimates["gpt"]
    default = p.plan(RequestFacts(model="chat", input_tokens=100, choices=4)).estimates["gpt"]
    assert one == pytest.approx(cost(p.prices["gpt"], 100, 50)) == pytest.approx((100 + 4 * 50) / 1e6)
    assert four == pytest.approx((100 + 4 * 200) / 1e6)
    assert default == pytest.approx((100 + 4 * 4 * 512) / 1e6)  # settings.estimate_max_tokens per answer
