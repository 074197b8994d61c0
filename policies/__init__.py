"""Pure policy code: the policy file's models, loading, conditions, sensitivity,
pricing and the routing decision.

Must not import ``router`` or ``backends`` (checked by import-linter in CI).
"""

from __future__ import annotations

from policies.conditions import Condition, ConditionError, Context, compile_when
from policies.errors import PolicyError, PolicyIssue, UnknownAlias
from policies.facts import BackendLoad, Endpoint, RequestFacts
from policies.kinds import KindInfo, KindTable
from policies.loader import LoadedPolicy, load_policy, load_policy_text, read_yaml
from policies.models import (
    BUILTIN_DETECTORS,
    LEVELS,
    BackendSpec,
    BudgetSpec,
    CacheSpec,
    CircuitSpec,
    CustomDetector,
    ModelAlias,
    Policy,
    PolicySettings,
    Price,
    RateLimits,
    RetrySpec,
    Route,
    Rule,
    SensitivitySpec,
    Spillover,
    TeamSpec,
    TelemetrySpec,
    Timeouts,
    level_rank,
)
from policies.planner import Candidate, Plan, Planner, RuleTrace
from policies.pricing import GpuEconomics, TokenPrice, cost, gpu_economics, resolve_prices
from policies.rules import CompiledRule, compile_rules
from policies.schema import policy_schema, policy_schema_json

__all__ = [
    "BUILTIN_DETECTORS",
    "LEVELS",
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
    "KindInfo",
    "KindTable",
    "LoadedPolicy",
    "ModelAlias",
    "Plan",
    "Planner",
    "Policy",
    "PolicyError",
    "PolicyIssue",
    "PolicySettings",
    "Price",
    "RateLimits",
    "RequestFacts",
    "RetrySpec",
    "Route",
    "Rule",
    "RuleTrace",
    "SensitivitySpec",
    "Spillover",
    "TeamSpec",
    "Timeouts",
    "TokenPrice",
    "GpuEconomics",
    "gpu_economics",
    "UnknownAlias",
    "compile_rules",
    "compile_when",
    "cost",
    "level_rank",
    "load_policy",
    "load_policy_text",
    "policy_schema",
    "policy_schema_json",
    "read_yaml",
    "resolve_prices",
]
