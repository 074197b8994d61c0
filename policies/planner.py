"""The routing decision: ``Planner(policy).plan(facts) → Plan``.

Pure and synchronous (no I/O, no clock, no global randomness). The plan is the
complete list of backends a request may use, in order; the router never goes
outside it. For now an alias maps to its targets in fallback order; rules on
cost, sensitivity and load refine this later without changing the ``Plan`` shape.

Must not import ``router`` or ``backends``.
"""

from __future__ import annotations

from dataclasses import dataclass

from policies.errors import UnknownAlias
from policies.facts import RequestFacts
from policies.models import Policy

__all__ = ["Plan", "Planner"]


@dataclass(frozen=True, slots=True)
class Plan:
    """Where a request may go. ``targets`` is ordered; ``skipped`` says why others were left out."""

    alias: str
    route: str
    targets: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...] = ()


class Planner:
    """Precomputes one plan per alias so that planning a request is a dict lookup."""

    def __init__(self, policy: Policy) -> None:
        self.aliases: tuple[str, ...] = tuple(policy.models)
        self._plans = {alias: _alias_plan(policy, alias) for alias in policy.models}

    def plan(self, facts: RequestFacts) -> Plan:
        try:
            return self._plans[facts.model]
        except KeyError:
            raise UnknownAlias(facts.model, self.aliases) from None


def _alias_plan(policy: Policy, alias: str) -> Plan:
    targets, skipped = [], []
    for name in policy.models[alias].targets:
        if policy.backends[name].has_credentials:
            targets.append(name)
        else:
            skipped.append((name, "disabled: no API key"))
    return Plan(alias=alias, route=alias, targets=tuple(targets), skipped=tuple(skipped))
