"""Pure policy code: the policy file's models, loading, and the routing decision.

Must not import ``router`` or ``backends`` (checked by import-linter in CI).
"""

from __future__ import annotations

from policies.errors import PolicyError, PolicyIssue, UnknownAlias
from policies.facts import Endpoint, RequestFacts
from policies.loader import LoadedPolicy, load_policy, load_policy_text
from policies.models import (
    PREFILL_KINDS,
    SELF_HOSTED_KINDS,
    BackendSpec,
    CircuitSpec,
    ModelAlias,
    Policy,
    Price,
    RetrySpec,
    Settings,
    Timeouts,
)
from policies.planner import Plan, Planner

__all__ = [
    "PREFILL_KINDS",
    "SELF_HOSTED_KINDS",
    "BackendSpec",
    "CircuitSpec",
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
    "Settings",
    "Timeouts",
    "UnknownAlias",
    "load_policy",
    "load_policy_text",
]
