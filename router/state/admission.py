"""Admission: the shared-state checks a request passes before dispatch — rate limits, the
response cache lookup and the budget reservation — in one store round trip.

``Store.admit`` runs them as one atomic step (one Lua script in Redis): the team's and key's
rate-limit windows are counted (all or nothing); if they fit, the cached answer is read; if
there is none, the request's maximum cost is reserved in the team's and key's budget
windows. Every key is tagged ``{team}`` (one Redis Cluster slot). A ``scope: global`` cache
entry lives in another slot: it is read concurrently, in a second command.

When the store does not answer, each part degrades as on its own: rate limits are counted
per process, the cache is a miss, budgets follow ``on_store_error``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from router.errors import BudgetExceeded, RateLimited
from router.state.budgets import Budgets, Reservation
from router.state.cache import CachedAnswer, ResponseCache
from router.state.keys import Principal
from router.state.limits import WINDOW_S, RateLimiter
from router.state.store import Budget, Store, StoreUnavailable, Window

__all__ = ["Admitted", "Gatekeeper"]


@dataclass(frozen=True, slots=True)
class Admitted:
    headers: dict[str, str] = field(default_factory=dict)  # x-ratelimit-* for the answer
    reservation: Reservation | None = None
    hit: CachedAnswer | None = None  # served as is: costs nothing, reserves nothing
    #: asked to coalesce: True — this request holds the entry's lock (it must store or unlock);
    #: False — another request (maybe on another replica) is producing the entry
    leader: bool | None = None


_NOTHING = Admitted()


async def _nothing() -> None:
    return None


class Gatekeeper:
    def __init__(self, store: Store, limits: RateLimiter, budgets: Budgets, cache: ResponseCache) -> None:
        self._store, self._limits, self._budgets, self._cache = store, limits, budgets, cache

    async def admit(self, who: Principal | None, tokens: int, max_usd: float, cache_key: str | None,
                    allowed: frozenset[str], coalesce: bool = False) -> Admitted:
        """``coalesce``: on a miss, take the entry's lock (team scope only; see ``Admitted.leader``).
        Raises ``RateLimited``, ``BudgetExceeded`` or ``BudgetStoreUnavailable``."""
        windows = self._limits.windows(who, tokens) if who is not None else []
        budgets = self._budgets.windows(who, max_usd) if who is not None else []
        lock_ms = round(self._cache.spec.coalesce_s * 1000) if coalesce else 0
        if who is None or not (windows or budgets):
            return await self._cache_only(cache_key, allowed, lock_ms)
        together = cache_key is not None and cache_key.startswith(f"{{{who.team}}}:")
        step = self._store.admit([w for w, _ in windows], WINDOW_S, time.time(), budgets,
                                 cache_key if together else None, lock_ms if together else 0)
        hit: CachedAnswer | None = None
        try:
            if cache_key is None or together:
                admission = await step
            else:  # a global entry: another slot, read concurrently
                admission, hit = await asyncio.gather(step, self._cache.get(cache_key, allowed))
        except StoreUnavailable as exc:
            return await self._degraded(who, windows, budgets, exc)
        decision = self._limits.decide(who, windows, admission.windows) if windows else None
        headers = decision.headers if decision is not None else {}
        if decision is not None and not decision.allowed:
            raise RateLimited(decision.message, decision.retry_after_s, decision.headers)
        hit = hit or self._cache.accept(admission.blob, allowed)
        if hit is not None:  # a hit is free: served even when the budget is spent
            if admission.reserved:  # the global entry answered while the reservation was made
                await self._budgets.release(Reservation(who.team, tuple(budgets)))
            return Admitted(headers, None, hit)
        leader = admission.leader
        if not budgets:
            return Admitted(headers, leader=leader)
        if admission.reserved is None:  # an entry was found that this request may not be served
            return Admitted(headers, await self._budgets.reserve(who, max_usd))
        try:
            return Admitted(headers, self._budgets.outcome(who, budgets, admission.reserved, admission.values),
                            leader=leader)
        except BudgetExceeded:
            if leader:
                await self._cache.unlock(cache_key)  # type: ignore[arg-type]
            raise

    async def _cache_only(self, cache_key: str | None, allowed: frozenset[str], lock_ms: int) -> Admitted:
        """No limits, no budget (or no caller): only the cache lookup, with the lock when asked."""
        if cache_key is None:
            return _NOTHING
        if not lock_ms or self._cache.spec.scope != "team":
            alone = await self._cache.get(cache_key, allowed)
            return Admitted(hit=alone) if alone is not None else _NOTHING
        try:
            found = await self._store.admit([], WINDOW_S, time.time(), [], cache_key, lock_ms)
        except StoreUnavailable:
            return _NOTHING
        alone = self._cache.accept(found.blob, allowed)
        return Admitted(hit=alone) if alone is not None else Admitted(leader=found.leader)

    async def finish(self, reservation: Reservation | None, actual_usd: float | None, cache_key: str | None,
                     answer: CachedAnswer | None) -> bool:
        """After a fresh answer: settle the reservation and fill the cache — one round trip
        when the entry shares the team's slot (``scope: team``), else two at once. Returns
        whether an entry was written (storing it releases its coalescing lock)."""
        entry = self._cache.entry(cache_key, answer) if cache_key is not None and answer is not None else None
        if entry is None or reservation is None or not entry[0].startswith(f"{{{reservation.team}}}:"):
            put = self._cache.put(entry[0], answer) if entry is not None and answer is not None else _nothing()
            await asyncio.gather(self._budgets.settle(reservation, actual_usd), put)
        else:
            await self._budgets.settle(reservation, actual_usd, entry)
        return entry is not None

    async def _degraded(self, who: Principal, windows: list[tuple[Window, str]], budgets: list[Budget],
                        failure: StoreUnavailable) -> Admitted:
        """The store did not answer: per-process rate limits, a cache miss, ``on_store_error``."""
        headers: dict[str, str] = {}
        if windows:
            decision = await self._limits.fallback(who, windows, failure)
            if not decision.allowed:
                raise RateLimited(decision.message, decision.retry_after_s, decision.headers)
            headers = decision.headers
        if budgets:
            self._budgets.unavailable(who, failure)  # raises unless fail_open
        return Admitted(headers)
