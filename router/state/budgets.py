"""Budgets: USD per team per UTC day and month, held under concurrency and across replicas.

Reserve-then-settle: before dispatch, atomically reserve the request's maximum cost (the
planner's highest estimate among the allowed targets: prompt estimate + max_tokens at that
target's price) in every window of the team; after the answer, settle to the actual cost
(positive or negative correction); on failure, release the reservation. Counters are
integer nano-USD in the store (one Lua script per step in Redis). Exhausted → 429
``budget_exceeded`` naming the team and the window.

When the store cannot be reached: ``settings.on_store_error`` — ``fail_closed`` (default)
refuses requests of teams with a budget (503); ``fail_open`` serves them unmetered (logged).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from policies import BudgetSpec, Policy
from router.errors import BudgetExceeded, BudgetStoreUnavailable
from router.state.keys import Principal
from router.state.store import Budget, CounterStore, StoreUnavailable

__all__ = ["Budgets", "Reservation"]

log = logging.getLogger("switchyard.budgets")
NANO = 1_000_000_000
_TTL = {"day": 2 * 86400, "month": 35 * 86400}


@dataclass(frozen=True, slots=True)
class Reservation:
    team: str
    counters: tuple[Budget, ...]  # what was added (amount = the reserved nano-USD)

    @property
    def amount(self) -> int:
        return self.counters[0].amount if self.counters else 0


class Budgets:
    def __init__(self, policy: Policy, store: CounterStore) -> None:
        self._teams = {t: spec.budget for t, spec in policy.teams.items() if _set(spec.budget)}
        self._key_budgets = {t: spec.key_budget for t, spec in policy.teams.items() if _set(spec.key_budget)}
        self._store = store
        self._fail_open = policy.settings.on_store_error == "fail_open"

    def applies(self, who: Principal | None) -> bool:
        return who is not None and bool(self._windows(who, datetime.now(UTC), 0))

    def _windows(self, who: Principal, now: datetime, amount: int) -> list[Budget]:
        """The team's windows, then the key's (team-wide key_budget, or the key's own)."""
        out = _windows(f"{{{who.team}}}:budget", self._teams.get(who.team), now, amount)
        own = BudgetSpec(monthly_usd=who.budget_monthly_usd) if who.budget_monthly_usd else None
        return out + _windows(f"{{{who.team}}}:kbudget:{who.key_id}", own or self._key_budgets.get(who.team),
                              now, amount)

    async def remaining(self, who: Principal | None, now: datetime | None = None) -> float | None:
        """The fraction left of the tightest budget window (``None``: no budget / unknown)."""
        windows = self._windows(who, now or datetime.now(UTC), 0) if who is not None else []
        if not windows:
            return None
        try:
            spent = await self._store.read([w.key for w in windows])
        except StoreUnavailable:
            return None
        return max(0.0, min(1 - s / w.limit for s, w in zip(spent, windows, strict=True)))

    async def reserve(self, who: Principal | None, usd: float, now: datetime | None = None) -> Reservation | None:
        windows = self.windows(who, usd, now) if who is not None else []
        if who is None or not windows:
            return None
        try:
            ok, values = await self._store.reserve(windows)
        except StoreUnavailable as exc:
            self.unavailable(who, exc)  # raises unless fail_open
            return None
        return self.outcome(who, windows, ok, values)

    def windows(self, who: Principal, usd: float, now: datetime | None = None) -> list[Budget]:
        """The counters a request of at most ``usd`` reserves in (``[]``: no budget applies)."""
        return self._windows(who, now or datetime.now(UTC), max(0, round(usd * NANO)))

    def unavailable(self, who: Principal, exc: StoreUnavailable) -> None:
        """The store did not answer a reservation: ``fail_open`` serves unmetered, else refuse."""
        if self._fail_open:
            log.warning("budget store unavailable (%s): serving team %s unmetered (on_store_error: fail_open)",
                        exc, who.team)
            return
        raise BudgetStoreUnavailable(f"cannot check the budget of team {who.team!r} now ({exc}); "
                                     "on_store_error: fail_closed") from None

    @staticmethod
    def outcome(who: Principal, windows: list[Budget], ok: bool, values: list[int]) -> Reservation:
        """The reservation made, or ``BudgetExceeded`` naming the window that is full."""
        if not ok:
            window = next(w for w, v in zip(windows, values, strict=True) if v + w.amount > w.limit)
            scope, period = _describe(window.key, who)
            raise BudgetExceeded(f"budget exhausted for {scope}: {_usd(window.limit)} USD per {period} "
                                 f"({_usd(values[windows.index(window)])} spent or reserved)")
        return Reservation(who.team, tuple(windows))

    async def settle(self, reservation: Reservation | None, actual_usd: float | None,
                     blob: tuple[str, bytes, int] | None = None) -> None:
        """Correct the reservation to the actual cost (``None``: keep the reserved amount). With
        ``blob`` (a cache entry in the team's slot), store it in the same round trip."""
        delta = 0 if reservation is None or actual_usd is None else round(actual_usd * NANO) - reservation.amount
        counters = [Budget(c.key, delta, c.limit, c.ttl_s) for c in reservation.counters] if reservation else []
        counters = counters if delta else []
        if not counters and blob is None:
            return
        try:
            await self._store.adjust(counters, blob)
        except StoreUnavailable as exc:
            log.error("budget settle for team %s lost (%s): %+d nano-USD not recorded%s",
                      reservation.team if reservation else "-", exc, delta, " (nor the cache entry)" if blob else "")

    async def release(self, reservation: Reservation | None) -> None:
        if reservation is not None:
            await self.settle(reservation, 0.0)

    async def left(self, now: datetime | None = None) -> dict[tuple[str, str], float]:
        """USD left in every team budget window now: {(team, day|month): usd} — one store read."""
        now = now or datetime.now(UTC)
        windows = [(team, period, usd) for team, spec in self._teams.items()
                   for period, usd in (("day", spec.daily_usd), ("month", spec.monthly_usd)) if usd]
        values = await self._store.read([_key(f"{{{team}}}:budget", period, now) for team, period, _ in windows])
        return {(team, period): max(0.0, usd - v / NANO)
                for (team, period, usd), v in zip(windows, values, strict=True)}

    async def spent(self, team: str, period: str, now: datetime | None = None) -> tuple[float, float | None]:
        """(USD the team spent in the current ``period`` — day or month —, its limit)."""
        spec = self._teams.get(team)
        limit = (spec.daily_usd if period == "day" else spec.monthly_usd) if spec else None
        key = _key(f"{{{team}}}:budget", period, now or datetime.now(UTC))
        value = (await self._store.read([key]))[0]
        return value / NANO, limit


def _set(spec: BudgetSpec) -> bool:
    return bool(spec.daily_usd or spec.monthly_usd)


def _key(base: str, period: str, now: datetime) -> str:
    stamp = now.strftime("%Y-%m-%d") if period == "day" else now.strftime("%Y-%m")
    return f"{base}:{period}:{stamp}"


def _windows(base: str, spec: BudgetSpec | None, now: datetime, amount: int) -> list[Budget]:
    out = []
    for period, usd in (("day", spec.daily_usd if spec else None), ("month", spec.monthly_usd if spec else None)):
        if usd:
            out.append(Budget(_key(base, period, now), amount, round(usd * NANO), _TTL[period]))
    return out


def _describe(key: str, who: Principal) -> tuple[str, str]:
    period = key.rsplit(":", 2)[-2]
    scope = f"key {who.key_id} of team {who.team!r}" if ":kbudget:" in key else f"team {who.team!r}"
    return scope, period


def _usd(nano: int) -> str:
    return f"{nano / NANO:.6f}".rstrip("0").rstrip(".")
