"""The answer to "why did this request go there?": facts, every rule with why it matched or
not, the decision, and every candidate with its standing (allowed or not and why, circuit,
load, estimated cost). Built from a plan made with ``explain=True``; calls no backend.

Whose request: the caller's team by default; another team's (``?team=``) only for the admin
key, or while the gateway is open (``explain_team``) — a team's rules are its own business."""

from __future__ import annotations

from collections.abc import Mapping

from policies import BackendLoad, Plan, RequestFacts
from policies.sensitivity import Scan
from router.errors import Forbidden
from router.facts import facts_json

__all__ = ["explain_json", "explain_team"]


def explain_team(asked: str | None, caller_team: str | None, *, admin: bool, open_gateway: bool) -> str | None:
    """The team to explain for: ``asked`` (``?team=``) when it is the caller's own, or the
    caller holds the admin key, or the gateway is open; else ``Forbidden``. Default: the caller's."""
    if asked is None or asked == caller_team:
        return caller_team if asked is None else asked
    if admin or open_gateway:
        return asked
    raise Forbidden("explaining another team's request needs the admin key (Authorization: Bearer <admin key>); "
                    "leave out ?team= to explain your own", param="team")


def explain_json(facts: RequestFacts, scan: Scan, plan: Plan, circuits: Mapping[str, Mapping[str, object]],
                 load: Mapping[str, BackendLoad]) -> dict[str, object]:
    return {
        "facts": facts_json(facts, scan),
        "rules": [{"rule": t.rule, "matched": t.matched, "why": t.why} for t in plan.trace],
        "decision": {
            "rule": plan.rule, "strategy": plan.strategy, "denied": plan.denied, "unavailable": plan.unavailable,
            "targets": list(plan.targets), "allowed": sorted(plan.allowed), "spilling": sorted(plan.spilling),
            "redact": sorted(plan.redact),
            "slo": None if plan.slo is None else plan.slo.model_dump(exclude_none=True),
            "hedge": None if plan.hedge is None else plan.hedge.model_dump(),
            "late": dict(plan.late),
        },
        "candidates": [{**_candidate(c.backend, c.allowed, c.reason, c.estimated_cost_usd, c.self_hosted,
                                     circuits.get(c.backend), load.get(c.backend)),
                        "prediction": p.as_dict() if (p := plan.predictions.get(c.backend)) else None}
                       for c in plan.candidates],
    }


def _candidate(backend: str, allowed: bool, reason: str, cost: float | None, self_hosted: bool,
               circuit: Mapping[str, object] | None, load: BackendLoad | None) -> dict[str, object]:
    state = circuit.get("state") if circuit else None
    if allowed and state == "open":
        reason += "; circuit open: skipped until its probe"
    return {"backend": backend, "allowed": allowed, "reason": reason, "self_hosted": self_hosted,
            "estimated_cost_usd": cost, "circuit": state,
            "load": None if load is None else {"queue": load.queue, "running": load.running,
                                               "kv_cache": load.kv_cache, "in_flight": load.in_flight,
                                               "busy": load.busy, "scrape_ok": load.scrape_ok}}
