"""Admission: the shared-state checks a request passes before dispatch — rate limits, the
response cache lookup and the budget reservation — in one store round trip, and the
``Hold`` an admitted request keeps until it is settled.

``Store.admit`` runs the checks as one atomic step (one Lua script in Redis): the team's and
key's rate-limit windows are counted (all or nothing); if they fit, the cached answer is
read; if there is none, the request's maximum cost is reserved in the team's and key's
budget windows. Every key is tagged ``{team}`` (one Redis Cluster slot). A ``scope: global``
cache entry lives in another slot: it is read concurrently, in a second command.
``Gatekeeper.admit`` takes the store's answer through small steps (limits → hit →
reservation) to an ``Admitted`` decision record.

A ``Hold`` owns what an admitted request must give back — its budget reservation and, when
it leads a coalesced miss, the cache entry's lock — and gives it back exactly once, on every
path: ``settle`` (actual cost, cache fill), or release when its ``async with`` block ends
any other way (errors, cancellation, cache hits). ``hand_over`` moves it to a stream that
outlives the block.

When the store does not answer, each part degrades as on its own: rate limits are counted
per process, the cache is a miss, budgets follow ``on_store_error``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from types import TracebackType

from router.errors import BudgetExceeded, RateLimited
from router.state.budgets import Budgets, Reservation
from router.state.cache import CachedAnswer, ResponseCache
from router.state.keys import Principal
from router.state.limits import WINDOW_S, RateLimiter
from router.state.store import Admission, Budget, Store, StoreUnavailable, Window

__all__ = ["Admitted", "Gatekeeper", "Hold"]


@dataclass(frozen=True, slots=True)
class Admitted:
    headers: dict[str, str] = field(default_factory=dict)  # x-ratelimit-* for the answer
    reservation: Reservation | None = None
    hit: CachedAnswer | None = None  # served as is: costs nothing, reserves nothing
    #: asked to coalesce: True — this request holds the entry's lock (it must store or unlock);
    #: False — another request (maybe on another replica) is producing the entry
    leader: bool | None = None


_NOTHING = Admitted()


class Gatekeeper:
    def __init__(self, store: Store, limits: RateLimiter, budgets: Budgets, cache: ResponseCache) -> None:
        self._store, self._limits, self._budgets, self._cache = store, limits, budgets, cache

    async def limit(self, who: Principal | None, tokens: int) -> dict[str, str]:
        """Only the rate-limit windows (one round trip): the cheap check that runs before an
        expensive scan. Returns the ``x-ratelimit-*`` headers; raises ``RateLimited``."""
        windows = self._limits.windows(who, tokens) if who is not None else []
        if who is None or not windows:
            return {}
        try:
            admission = await self._store.admit([w for w, _ in windows], WINDOW_S, time.time(), [], None)
        except StoreUnavailable as exc:
            return (await self._degraded(who, windows, [], exc)).headers
        return self._limited(who, windows, admission)

    async def admit(self, who: Principal | None, tokens: int, max_usd: float, cache_key: str | None,
                    allowed: frozenset[str], coalesce: bool = False, counted: bool = False) -> Admitted:
        """``coalesce``: on a miss, take the entry's lock (team scope only; see ``Admitted.leader``).
        ``counted``: the rate-limit windows were already counted (``limit``). Raises
        ``RateLimited``, ``BudgetExceeded`` or ``BudgetStoreUnavailable``."""
        windows = self._limits.windows(who, tokens) if who is not None and not counted else []
        budgets = self._budgets.windows(who, max_usd) if who is not None else []
        lock_ms = round(self._cache.spec.coalesce_s * 1000) if coalesce else 0
        if who is None or not (windows or budgets):
            return await self._cache_only(cache_key, allowed, lock_ms)
        try:
            admission, hit = await self._count(who, windows, budgets, cache_key, allowed, lock_ms)
        except StoreUnavailable as exc:
            return await self._degraded(who, windows, budgets, exc)
        headers = self._limited(who, windows, admission)
        hit = hit or self._cache.accept(admission.blob, allowed)
        if hit is not None:
            return await self._served(who, budgets, admission, headers, hit)
        return await self._reserved(who, max_usd, budgets, admission, headers, cache_key)

    async def _count(self, who: Principal, windows: list[tuple[Window, str]], budgets: list[Budget],
                     cache_key: str | None, allowed: frozenset[str], lock_ms: int
                     ) -> tuple[Admission, CachedAnswer | None]:
        """The store's one atomic step (and, for a global entry in another slot, its read)."""
        together = cache_key is not None and cache_key.startswith(f"{{{who.team}}}:")
        step = self._store.admit([w for w, _ in windows], WINDOW_S, time.time(), budgets,
                                 cache_key if together else None, lock_ms if together else 0)
        if cache_key is None or together:
            return await step, None
        return await asyncio.gather(step, self._cache.get(cache_key, allowed))

    def _limited(self, who: Principal, windows: list[tuple[Window, str]], admission: Admission) -> dict[str, str]:
        """The rate-limit headers; raises ``RateLimited`` when a window is full."""
        if not windows:
            return {}
        decision = self._limits.decide(who, windows, admission.windows)
        if not decision.allowed:
            raise RateLimited(decision.message, decision.retry_after_s, decision.headers)
        return decision.headers

    async def _served(self, who: Principal, budgets: list[Budget], admission: Admission, headers: dict[str, str],
                      hit: CachedAnswer) -> Admitted:
        """A hit is free: served even when the budget is spent."""
        if admission.reserved:  # the global entry answered while the reservation was made
            await self._budgets.release(Reservation(who.team, tuple(budgets)))
        return Admitted(headers, None, hit)

    async def _reserved(self, who: Principal, max_usd: float, budgets: list[Budget], admission: Admission,
                        headers: dict[str, str], cache_key: str | None) -> Admitted:
        """A miss: the reservation the script made (or refused), or one made now when the
        script found an entry this request may not be served."""
        leader = admission.leader
        if not budgets:
            return Admitted(headers, leader=leader)
        if admission.reserved is None:
            return Admitted(headers, await self._budgets.reserve(who, max_usd))
        try:
            return Admitted(headers, self._budgets.outcome(who, budgets, admission.reserved, admission.values),
                            leader=leader)
        except BudgetExceeded:
            if leader and cache_key is not None:
                await self._cache.unlock(cache_key)
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
        if entry is None or answer is None:
            if reservation is not None:  # nothing to store: no second step to run beside it
                await self._budgets.settle(reservation, actual_usd)
        elif reservation is None or not entry[0].startswith(f"{{{reservation.team}}}:"):
            await asyncio.gather(self._budgets.settle(reservation, actual_usd), self._cache.put(entry[0], answer))
        else:
            await self._budgets.settle(reservation, actual_usd, entry)
        return entry is not None

    async def release(self, reservation: Reservation | None, locked: str | None) -> None:
        """Give back a reservation unused and a coalescing lock unfilled (the waiters ask the upstream)."""
        await self._budgets.release(reservation)
        if locked is not None:
            await self._cache.unlock(locked)

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


class Hold:
    """What one admitted request must give back, given back exactly once. Use as
    ``async with``: leaving the block without ``settle`` or ``hand_over`` releases."""

    __slots__ = ("_gatekeeper", "_reservation", "_cache_key", "_locked", "_done")

    def __init__(self, gatekeeper: Gatekeeper, reservation: Reservation | None, cache_key: str | None,
                 leader: bool | None) -> None:
        """``cache_key``: where a fresh answer is stored (``None``: not cached); ``leader``:
        this request holds that entry's coalescing lock."""
        self._gatekeeper, self._reservation, self._cache_key = gatekeeper, reservation, cache_key
        self._locked = cache_key if leader else None
        self._done = False

    async def __aenter__(self) -> Hold:
        return self

    @property
    def empty(self) -> bool:
        """Nothing to give back or store: no reservation, no cache entry, no lock (an open
        gateway's request). Settling it does no I/O and never waits."""
        return self._reservation is None and self._cache_key is None and self._locked is None

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if not self._done:
            self._done = True  # failed attempts are never billed
            await self._gatekeeper.release(self._reservation, self._locked)

    async def settle(self, actual_usd: float | None, answer: CachedAnswer | None = None) -> bool:
        """Settle to the actual cost (``None``: keep the reservation) and store ``answer`` in
        the cache (when cached); returns whether it was stored."""
        if self._done:
            raise RuntimeError("this hold was already settled, released or handed over")
        self._done = True
        key = self._cache_key if answer is not None else None
        stored = await self._gatekeeper.finish(self._reservation, actual_usd, key, answer)
        if self._locked is not None and not stored:
            await self._gatekeeper.release(None, self._locked)
        return stored

    def hand_over(self) -> Hold:
        """Move what this hold owns to a new one (a stream's, settled when it ends); this one
        then gives nothing back."""
        if self._done:
            raise RuntimeError("this hold was already settled, released or handed over")
        self._done = True
        return Hold(self._gatekeeper, self._reservation, self._cache_key, self._locked is not None)
