"""The routing decision: ``Planner(loaded, prices).plan(facts, load, spilling, rng) → Plan``.

Pure and synchronous: no I/O, no clock, no global randomness (``rng`` is passed in).
Steps, all recorded for ``explain``:

1. the first rule whose ``when`` matches (else the alias's own targets, rule ``default``);
2. ``deny`` → a denial; otherwise the route's targets (default: the alias's);
3. the **allowed set**: targets whose credentials are present and whose
   ``max_sensitivity`` admits the request's level. Computed once; the router never
   leaves it (retries, fallbacks, spillover, recovery). Empty → unavailable (503);
4. spillover: self-hosted targets over their load threshold (with hysteresis) go last;
5. the latency objective (``slo``) and reserved slots, for a request that may leave (its
   allowed set has a closed target): a self-hosted target *predicted* to miss the objective
   (``policies.latency``), or whose unreserved slots are all busy, goes behind the closed
   targets; a request that must stay home keeps it and waits;
6. order by strategy (priority, cheapest, least_loaded, lowest_latency, weighted);
   ``fallback: none`` keeps only the first.

Must not import ``router`` or ``backends``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from policies.conditions import Context
from policies.errors import UnknownAlias
from policies.facts import BackendLoad, RequestFacts
from policies.latency import Prediction, predict
from policies.loader import LoadedPolicy
from policies.models import Hedge, Route, Slo, Spillover, level_rank
from policies.pricing import TokenPrice, cost, resolve_prices
from policies.rules import CompiledRule

__all__ = ["Candidate", "Plan", "Planner", "RuleTrace"]

_NO_LOAD: Mapping[str, BackendLoad] = {}
_NONE: Mapping[str, Any] = MappingProxyType({})  # plans without predictions share it (read-only)
_OK = BackendLoad()
_INF = float("inf")


@dataclass(frozen=True, slots=True)
class RuleTrace:
    rule: str
    matched: bool
    why: str


@dataclass(frozen=True, slots=True)
class Candidate:
    backend: str
    allowed: bool
    reason: str  # why it is where it is, or why it was left out
    estimated_cost_usd: float | None = None
    self_hosted: bool = False


@dataclass(frozen=True, slots=True)
class Plan:
    """Where a request may go. ``targets`` is the attempt order and is ⊆ ``allowed``."""

    alias: str
    rule: str
    targets: tuple[str, ...]
    allowed: frozenset[str] = frozenset()
    skipped: tuple[tuple[str, str], ...] = ()
    strategy: str = "priority"
    denied: str | None = None  # the rule denies the request (403)
    unavailable: str | None = None  # nothing is allowed (503)
    spilling: frozenset[str] = frozenset()
    spill_checked: frozenset[str] = frozenset()  # self-hosted targets whose spillover was evaluated
    redact: frozenset[str] = frozenset()
    estimates: Mapping[str, float] = field(default_factory=dict)
    candidates: tuple[Candidate, ...] = ()
    trace: tuple[RuleTrace, ...] = ()
    slo: Slo | None = None
    hedge: Hedge | None = None  # only for a request that may leave
    #: predicted TTFT/latency per allowed target (when the route has an objective, a target
    #: reserves slots, or for explain)
    predictions: Mapping[str, Prediction] = field(default_factory=dict)
    late: Mapping[str, str] = field(default_factory=dict)  # self-hosted targets moved behind, and why
    input_tokens: int = 0  # the request's estimate (what a cancelled hedge is billed for)

    @property
    def route(self) -> str:
        return self.alias


class Planner:
    def __init__(self, loaded: LoadedPolicy, table: Mapping[str, TokenPrice] | None = None) -> None:
        self.loaded = loaded
        self.policy = loaded.policy
        self.aliases: tuple[str, ...] = tuple(self.policy.models)
        self.prices = resolve_prices(self.policy, table or {})
        self._default_route = Route()
        self._self_hosted = {n: s.is_self_hosted for n, s in self.policy.backends.items()}
        self._max_rank = {n: level_rank(self.policy.max_level(n)) for n in self.policy.backends}
        self._reserving = frozenset(n for n, s in self.policy.backends.items()
                                    if s.capacity is not None and s.capacity.reserved_slots > 0)
        self._sized = frozenset(n for n, s in self.policy.backends.items() if s.capacity is not None)

    def plan(self, facts: RequestFacts, load: Mapping[str, BackendLoad] = _NO_LOAD,
             spilling: frozenset[str] = frozenset(), rng: random.Random | None = None,
             explain: bool = False) -> Plan:
        alias = self.policy.models.get(facts.model)
        if alias is None:
            raise UnknownAlias(facts.model, self.aliases)
        rule, trace = self._match(Context(facts, load), explain)
        route = rule.rule.route if rule else self._default_route
        name = rule.name if rule else "default"
        if route.deny is not None:
            return Plan(facts.model, name, (), denied=route.deny, trace=trace)
        allowed, skipped, candidates = self._allowed(route.targets or alias.targets, facts)
        if not allowed:
            why = "; ".join(f"{b} ({r})" for b, r in skipped) or "no targets"
            return Plan(facts.model, name, (), skipped=tuple(skipped), strategy=route.strategy, trace=trace,
                        unavailable=f"no backend may serve this request under rule {name!r}: {why}",
                        candidates=tuple(candidates))
        estimates = self._estimates(allowed, facts)
        spilled = _spilling(route.spillover, allowed, load, spilling, self._self_hosted)
        slo, hedge = route.slo or alias.slo, route.hedge or alias.hedge
        predictions: Mapping[str, Prediction] = _NONE
        late: Mapping[str, str] = _NONE
        if slo is not None or hedge is not None or explain or self._reserving or \
                (route.strategy == "cheapest" and self._sized):  # else (most policies) none of this runs
            may_leave = not all(self._self_hosted[b] for b in allowed)
            hedge = hedge if may_leave else None
            if slo is not None or explain or (may_leave and any(b in self._reserving for b in allowed)) or \
                    (route.strategy == "cheapest" and any(b in self._sized for b in allowed)):
                predictions, late = self._predict(allowed, facts, load, slo, may_leave)
        order = self._order(route, allowed, estimates, load, spilled | set(late) if late else spilled, rng,
                            predictions)
        if route.fallback == "none":
            skipped += [(b, "fallback: none") for b in order[1:]]
            order = order[:1]
        candidates += [self._candidate(b, estimates, spilled, late, route.strategy, load) for b in order]
        checked = frozenset(b for b in allowed if self._self_hosted[b]) if route.spillover else frozenset()
        return Plan(facts.model, name, tuple(order), frozenset(allowed), tuple(skipped), route.strategy,
                    spilling=frozenset(spilled), spill_checked=checked, redact=frozenset(route.redact or ()),
                    estimates=estimates, candidates=tuple(candidates), trace=trace, slo=slo,
                    hedge=hedge, predictions=predictions, late=late,
                    input_tokens=facts.input_tokens)

    def _predict(self, allowed: list[str], facts: RequestFacts, load: Mapping[str, BackendLoad],
                 slo: Slo | None, may_leave: bool) -> tuple[dict[str, Prediction], dict[str, str]]:
        """Each allowed target's predicted TTFT and latency, and the self-hosted ones a request
        that may leave should not wait for: predicted to miss ``slo``, or every unreserved slot busy."""
        out_tokens = facts.max_tokens or load_mean_output(load, allowed) or self.policy.settings.estimate_max_tokens
        predictions: dict[str, Prediction] = {}
        late: dict[str, str] = {}
        for b in allowed:
            p = predict(self.policy.backends[b], load.get(b), facts.input_tokens, out_tokens * facts.choices,
                        may_leave=may_leave)
            if p is None:
                continue
            predictions[b] = p
            if not may_leave or not self._self_hosted[b]:
                continue
            why = p.misses(slo) if slo is not None else None
            if why is None and b in self._reserving and p.ahead > 0:
                why = f"its {p.slots} unreserved slots are busy ({p.busy:g} requests in it)"
            if why is not None:
                late[b] = why
        return predictions, late

    def _match(self, ctx: Context, explain: bool) -> tuple[CompiledRule | None, tuple[RuleTrace, ...]]:
        if not explain:
            return next((r for r in self.loaded.rules if r.condition.match(ctx)), None), ()
        trace, chosen = [], None
        for r in self.loaded.rules:
            matched = chosen is None and r.condition.match(ctx)
            why = r.condition.why(ctx) if chosen is None else "not evaluated: an earlier rule matched"
            trace.append(RuleTrace(r.name, matched, why))
            chosen = r if matched else chosen
        return chosen, tuple(trace)

    def _allowed(self, targets: list[str], facts: RequestFacts
                 ) -> tuple[list[str], list[tuple[str, str]], list[Candidate]]:
        allowed, skipped, candidates = [], [], []
        rank = level_rank(facts.sensitivity)
        for b in targets:
            spec = self.policy.backends[b]
            if not spec.has_credentials:
                reason = "disabled: no API key"
            elif rank > self._max_rank[b]:
                reason = f"not allowed at sensitivity {facts.sensitivity} (max {self.policy.max_level(b)})"
            else:
                allowed.append(b)
                continue
            skipped.append((b, reason))
            candidates.append(Candidate(b, False, reason, self_hosted=self._self_hosted[b]))
        return allowed, skipped, candidates

    def _estimates(self, allowed: list[str], facts: RequestFacts) -> dict[str, float]:
        out_tokens = (facts.max_tokens or self.policy.settings.estimate_max_tokens) * facts.choices
        return {b: cost(self.prices[b], facts.input_tokens, out_tokens) for b in allowed
                if self.prices[b].source != "unknown"}

    def _order(self, route: Route, allowed: list[str], estimates: Mapping[str, float],
               load: Mapping[str, BackendLoad], spilled: set[str], rng: random.Random | None,
               predictions: Mapping[str, Prediction]) -> list[str]:
        strategy = route.strategy
        if strategy == "weighted":
            order = _weighted(allowed, route.weights or {}, rng or random.Random(0))
        elif strategy == "cheapest":  # by marginal cost: owned capacity with a free slot is ~free
            order = sorted(allowed, key=lambda b: self._marginal(b, estimates, predictions))
        elif strategy == "least_loaded":
            order = sorted(allowed, key=lambda b: (load.get(b) or BackendLoad()).pressure)
        elif strategy == "lowest_latency":
            order = sorted(allowed, key=lambda b: _ttft(load.get(b)))
        else:
            order = list(allowed)
        # Spilled targets, then those whose own metrics cannot be read (scrape failing), go last.
        return sorted(order, key=lambda b: (b in spilled, not (load.get(b) or _OK).scrape_ok))

    def _marginal(self, b: str, estimates: Mapping[str, float], predictions: Mapping[str, Prediction]
                  ) -> tuple[int, float]:
        """What one more request costs on ``b``: a self-hosted target with a free slot (or whose
        slots are not known) ~0, first; one the request would have to queue for, its amortised
        price, among the closed targets by estimate; unpriced closed targets last."""
        if self._self_hosted[b]:
            p = predictions.get(b)
            if p is None or p.ahead == 0:
                return 0, 0.0
        return 1, estimates.get(b, _INF)

    def _candidate(self, b: str, estimates: Mapping[str, float], spilled: set[str], late: Mapping[str, str],
                   strategy: str, load: Mapping[str, BackendLoad]) -> Candidate:
        if b in spilled:
            reason = "over its load threshold: spilled to the end"
        elif b in late:
            reason = f"{late[b]}: behind the closed targets"
        elif not (load.get(b) or _OK).scrape_ok:
            reason = "its /metrics cannot be read: moved to the end"
        else:
            reason = f"ordered by {strategy}"
        return Candidate(b, True, reason, estimates.get(b), self._self_hosted[b])


def load_mean_output(load: Mapping[str, BackendLoad], allowed: list[str]) -> int | None:
    """The typical answer length the allowed self-hosted targets have seen (for a request
    without ``max_tokens``)."""
    seen = [s.mean_output_tokens for b in allowed if (s := load.get(b)) is not None and s.mean_output_tokens]
    return round(max(seen)) if seen else None


def _ttft(load: BackendLoad | None) -> float:
    return load.ttft_ewma_s if load is not None and load.ttft_ewma_s is not None else _INF


def _weighted(allowed: list[str], weights: Mapping[str, float], rng: random.Random) -> list[str]:
    """A weighted random order (sampling without replacement); weight 0 or unlisted go last."""
    pool = [(b, weights.get(b, 0.0)) for b in allowed]
    order = []
    while pool and any(w > 0 for _, w in pool):
        pick = rng.uniform(0, sum(w for _, w in pool))
        for i, (b, w) in enumerate(pool):
            pick -= w
            if pick <= 0 and w > 0:
                order.append(b)
                pool.pop(i)
                break
        else:  # float rounding: take the last positive one
            i = max(i for i, (_, w) in enumerate(pool) if w > 0)
            order.append(pool.pop(i)[0])
    return order + [b for b, _ in pool]


def _spilling(spill: Spillover | None, allowed: list[str], load: Mapping[str, BackendLoad],
              before: frozenset[str], self_hosted: Mapping[str, bool]) -> set[str]:
    """Self-hosted targets over a threshold; one already spilling stays so until its load is
    below ``resume_below`` × the threshold (hysteresis)."""
    if spill is None:
        return set()
    out = set()
    for b in allowed:
        sample = load.get(b)
        if not self_hosted[b] or sample is None:
            continue
        factor = spill.resume_below if b in before else 1.0
        queue_over = spill.queue_over is not None and sample.queue is not None and \
            sample.queue > spill.queue_over * factor
        kv_over = spill.kv_cache_over is not None and sample.kv_cache is not None and \
            sample.kv_cache > spill.kv_cache_over * factor
        if queue_over or kv_over:
            out.add(b)
    return out
