"""Rate limits: requests and tokens per minute, per team and per key, counted in the
shared store so they hold across replicas. The counting itself is part of the admission
script (``Gatekeeper``, ``router/state/admission.py``): this module says which windows a
request counts against and turns the store's answer into a decision and headers.

Redis trouble: the limits fall back to per-process counting (``MemoryStore``) while the
shared store does not answer — a replica then enforces the full limit on its own, so the
global rate can reach N × the limit with N replicas until Redis is back (documented).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from policies import Policy, RateLimits
from router.state.keys import Principal
from router.state.memory_store import MemoryStore
from router.state.store import CounterStore, StoreUnavailable, Window, WindowResult

__all__ = ["RateDecision", "RateLimiter"]

log = logging.getLogger("switchyard.limits")
WINDOW_S = 60.0


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    headers: dict[str, str]
    retry_after_s: float = 0.0
    message: str = ""
    degraded: bool = False  # counted per process: the shared store did not answer


class RateLimiter:
    def __init__(self, policy: Policy, store: CounterStore) -> None:
        self._teams = policy.teams
        self._store = store  # never called here: ``Store.admit`` (the Gatekeeper) counts the shared windows
        self._fallback: CounterStore = MemoryStore()
        self.degraded_since: float | None = None

    async def fallback(self, who: Principal, windows: list[tuple[Window, str]],
                       exc: StoreUnavailable) -> RateDecision:
        """The shared store did not answer: count in this process instead."""
        self._degraded(exc)
        results = await self._fallback.hit([w for w, _ in windows], WINDOW_S, time.time())
        return _decision(who, windows, results, True)

    def decide(self, who: Principal, windows: list[tuple[Window, str]], results: list[WindowResult]) -> RateDecision:
        """The decision for windows the shared store counted (it answered: not degraded)."""
        self._recovered()
        return _decision(who, windows, results, False)

    def windows(self, who: Principal, tokens: int) -> list[tuple[Window, str]]:
        """The team's and the key's windows for a request of ``tokens``, with their labels."""
        spec = self._teams.get(who.team)
        if spec is None:
            return []
        tag = f"{{{who.team}}}"  # one Redis Cluster slot per team: the script touches one slot
        out = []
        for scope, limits, key in (("team", spec.limits, f"{tag}:team"),
                                   ("key", spec.key_limits, f"{tag}:key:{who.key_id}")):
            out += _limit_windows(scope, limits, key, tokens)
        return out

    def _degraded(self, exc: StoreUnavailable) -> None:
        if self.degraded_since is None:
            self.degraded_since = time.time()
            log.warning("rate limits: shared store unavailable (%s); counting per process until it is back", exc)

    def _recovered(self) -> None:
        if self.degraded_since is not None:
            log.info("rate limits: shared store is back")
            self.degraded_since = None


def _limit_windows(scope: str, limits: RateLimits, key: str, tokens: int) -> list[tuple[Window, str]]:
    out = []
    if limits.rpm is not None:
        out.append((Window(f"{key}:rpm", 1, limits.rpm), f"{scope}:requests"))
    if limits.tpm is not None:
        out.append((Window(f"{key}:tpm", max(tokens, 1), limits.tpm), f"{scope}:tokens"))
    return out


def _decision(who: Principal, windows: list[tuple[Window, str]], results: list[WindowResult],
              degraded: bool) -> RateDecision:
    headers: dict[str, str] = {}
    for kind in ("requests", "tokens"):
        pairs = [r for (_, label), r in zip(windows, results, strict=True) if label.endswith(kind)]
        if pairs:
            tightest = min(pairs, key=lambda r: r.remaining)
            headers[f"x-ratelimit-limit-{kind}"] = str(tightest.limit)
            headers[f"x-ratelimit-remaining-{kind}"] = str(tightest.remaining)
    denied = [(label, r) for (_, label), r in zip(windows, results, strict=True) if not r.allowed]
    if not denied:
        return RateDecision(True, headers, degraded=degraded)
    label, worst = max(denied, key=lambda d: d[1].retry_after_s)
    scope, kind = label.split(":")
    whom = f"team {who.team!r}" if scope == "team" else f"key {who.key_id} of team {who.team!r}"
    message = f"rate limit reached for {whom}: {worst.limit} {kind} per minute"
    return RateDecision(False, headers, worst.retry_after_s, message, degraded)
