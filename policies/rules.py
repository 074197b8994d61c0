"""Rules compiled for serving: each rule's ``when`` turned into a ``Condition``, and every
name a rule mentions checked against the policy (backends, aliases, detectors).

Pure. Must not import ``router`` or ``backends``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from policies.conditions import Condition, ConditionError, compile_when
from policies.errors import PolicyIssue
from policies.models import BUILTIN_DETECTORS, Policy, Rule

__all__ = ["CompiledRule", "compile_rules"]

Loc = tuple[str | int, ...]
Locate = Callable[[Loc, str], PolicyIssue]


@dataclass(frozen=True, slots=True)
class CompiledRule:
    index: int
    rule: Rule
    condition: Condition

    @property
    def name(self) -> str:
        return self.rule.name


def compile_rules(policy: Policy, locate: Locate) -> tuple[tuple[CompiledRule, ...], list[PolicyIssue]]:
    compiled, issues = [], []
    for i, rule in enumerate(policy.rules):
        loc: Loc = ("rules", i)
        try:
            compiled.append(CompiledRule(i, rule, compile_when(rule.when, loc + ("when",))))
        except ConditionError as exc:
            issues.append(locate(exc.loc, exc.message))
        issues += _references(policy, rule, loc, locate)
    return tuple(compiled), issues


def _references(policy: Policy, rule: Rule, loc: Loc, locate: Locate) -> list[PolicyIssue]:
    issues, route = [], rule.route
    for j, target in enumerate(route.targets or ()):
        if target not in policy.backends:
            issues.append(locate(loc + ("route", "targets", j), f"unknown backend {target!r}"))
    for name in route.weights or {}:
        if name not in policy.backends:
            issues.append(locate(loc + ("route", "weights", name), f"unknown backend {name!r}"))
    detectors = set(BUILTIN_DETECTORS) | {d.name for d in policy.sensitivity.custom}
    for j, name in enumerate(route.redact or ()):
        if name not in detectors:
            issues.append(locate(loc + ("route", "redact", j), f"unknown detector {name!r}"))
    issues += _alias_names(policy, rule, loc, locate)
    return issues


def _alias_names(policy: Policy, rule: Rule, loc: Loc, locate: Locate) -> list[PolicyIssue]:
    """``model: chat-defualt`` would silently never match: name only aliases that exist."""
    spec = rule.when.get("model")
    values: list[object] = []
    if isinstance(spec, str):
        values = [spec]
    elif isinstance(spec, list):
        values = list(spec)
    elif isinstance(spec, dict):
        for op in ("eq", "ne", "in", "not_in"):
            v = spec.get(op)
            values += v if isinstance(v, list) else ([v] if v is not None else [])
    return [locate(loc + ("when", "model"), f"unknown model alias {v!r} (aliases: {', '.join(policy.models)})")
            for v in values if isinstance(v, str) and v not in policy.models]
