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
from router.state.store import Budget, Store, StoreUnavailable

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
    def __init__(self, policy: Policy, store: Store) -> None:
        self._teams = {t: spec.budget for t, spec in policy.teams.items()
                       if spec.budget.daily_usd or spec.budget.monthly_usd}
        self._store = store
        self._fail_open = policy.settings.on_store_error == "fail_open"

    def applies(self, team: str | None) -> bool:
        return team is not None and team in self._teams

    async def remaining(self, team: str | None, now: datetime | None = None) -> float | None:
        """The fraction left of the team's tightest budget window (``None``: no budget / unknown)."""
        if not self.applies(team):
            return None
        windows = _windows(team, self._teams[team], now or datetime.now(UTC), 0)  # type: ignore[index]
        try:
            spent = await self._store.read([w.key for w in windows])
        except StoreUnavailable:
            return None
        return max(0.0, min(1 - s / w.limit for s, w in zip(spent, windows, strict=True)))

    async def reserve(self, team: str | None, usd: float, now: datetime | None = None) -> Reservation | None:
        if not self.applies(team):
            return None
        assert team is not None
        windows = _windows(team, self._teams[team], now or datetime.now(UTC), max(0, round(usd * NANO)))
        try:
            ok, values = await self._store.reserve(windows)
        except StoreUnavailable as exc:
            if self._fail_open:
                log.warning("budget store unavailable (%s): serving team %s unmetered (on_store_error: fail_open)",
                            exc, team)
                return None
            raise BudgetStoreUnavailable(f"cannot check the budget of team {team!r} now ({exc}); "
                                         "on_store_error: fail_closed") from None
        if not ok:
            window = next(w for w, v in zip(windows, values, strict=True) if v + w.amount > w.limit)
            period = window.key.rsplit(":", 2)[-2]
            raise BudgetExceeded(f"budget exhausted for team {team!r}: {_usd(window.limit)} USD per {period} "
                                 f"({_usd(values[windows.index(window)])} spent or reserved)")
        return Reservation(team, tuple(windows))

    async def settle(self, reservation: Reservation | None, actual_usd: float | None) -> None:
        """Correct the reservation to the actual cost (``None``: keep the reserved amount)."""
        if reservation is None or actual_usd is None:
            return
        delta = round(actual_usd * NANO) - reservation.amount
        await self._adjust(reservation, delta)

    async def release(self, reservation: Reservation | None) -> None:
        if reservation is not None:
            await self._adjust(reservation, -reservation.amount)

    async def spent(self, team: str, period: str, now: datetime | None = None) -> tuple[float, float | None]:
        """(USD spent in the current ``period`` — day or month —, its limit)."""
        spec = self._teams.get(team)
        limit = (spec.daily_usd if period == "day" else spec.monthly_usd) if spec else None
        key = _key(team, period, now or datetime.now(UTC))
        value = (await self._store.read([key]))[0]
        return value / NANO, limit

    async def _adjust(self, reservation: Reservation, delta: int) -> None:
        if delta == 0:
            return
        try:
            await self._store.adjust([Budget(c.key, delta, c.limit, c.ttl_s) for c in reservation.counters])
        except StoreUnavailable as exc:
            log.error("budget settle for team %s lost (%s): %+d nano-USD not recorded", reservation.team, exc, delta)


def _key(team: str, period: str, now: datetime) -> str:
    stamp = now.strftime("%Y-%m-%d") if period == "day" else now.strftime("%Y-%m")
    return f"{{{team}}}:budget:{period}:{stamp}"


def _windows(team: str, spec: BudgetSpec, now: datetime, amount: int) -> list[Budget]:
    out = []
    for period, usd in (("day", spec.daily_usd), ("month", spec.monthly_usd)):
        if usd:
            out.append(Budget(_key(team, period, now), amount, round(usd * NANO), _TTL[period]))
    return out


def _usd(nano: int) -> str:
    return f"{nano / NANO:.6f}".rstrip("0").rstrip(".")
