"""Pure policy code: the policy file's models, loading, conditions, sensitivity,
pricing and the routing decision.

Must not import ``router`` or ``backends`` (checked by import-linter in CI).
"""

from __future__ import annotations

from policies.conditions import Condition, ConditionError, Context, compile_when
from policies.errors import PolicyError, PolicyIssue, UnknownAlias
from policies.facts import BackendLoad, Endpoint, RequestFacts
from policies.loader import LoadedPolicy, load_policy, load_policy_text
from policies.models import (
    BUILTIN_DETECTORS,
    LEVELS,
    PREFILL_KINDS,
    SELF_HOSTED_KINDS,
    BackendSpec,
    BudgetSpec,
    CacheSpec,
    CircuitSpec,
    CustomDetector,
    Limits,
    ModelAlias,
    Policy,
    Price,
    RetrySpec,
    Route,
    Rule,
    SensitivitySpec,
    Settings,
    Spillover,
    TeamSpec,
    TelemetrySpec,
    Timeouts,
    level_rank,
)
from policies.planner import Candidate, Plan, Planner, RuleTrace
from policies.pricing import TokenPrice, cost, resolve_prices
from policies.rules import CompiledRule, compile_rules

__all__ = [
    "BUILTIN_DETECTORS",
    "LEVELS",
    "Limits",
    "PREFILL_KINDS",
    "SELF_HOSTED_KINDS",
    "BackendLoad",
    "BackendSpec",
    "BudgetSpec",
    "CacheSpec",
    "TelemetrySpec",
    "Candidate",
    "CircuitSpec",
    "CompiledRule",
    "Condition",
    "ConditionError",
    "Context",
    "CustomDetector",
    "Endpoint",
    "LoadedPolicy",
    "ModelAlias",
    "Plan",
    "Planner",
    "Policy",
    "PolicyError",
    "PolicyIssue",
    "Price",
    "RequestFacts",
    "RetrySpec",
    "Route",
    "Rule",
    "RuleTrace",
    "SensitivitySpec",
    "Settings",
    "Spillover",
    "TeamSpec",
    "Timeouts",
    "TokenPrice",
    "UnknownAlias",
    "compile_rules",
    "compile_when",
    "cost",
    "level_rank",
    "load_policy",
    "load_policy_text",
    "resolve_prices",
]
