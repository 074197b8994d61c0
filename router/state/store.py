"""The store protocols for shared state — one per role its callers play — and their data
types. Two implementations, each satisfying every role (``Store``): ``MemoryStore`` (the
embedded default for one process) and ``RedisStore`` (shared by every replica; the only
module that imports the Redis client). This module imports nothing from the project.

Roles, and who holds each (a caller annotates the narrowest one it uses)::

    Store                     the composite: every role below, plus ``admit``
    ├── KeyStore              put_key · get_key · revoke_key · list_keys   keys.py (KeyRing, create_key, find_key)
    ├── CounterStore          hit · reserve · adjust · read                budgets.py (Budgets), limits.py (RateLimiter)
    ├── BlobStore             get_blob · set_blob · probe · unlock         cache.py (ResponseCache)
    ├── StatsStore            add_stats · read_stats                       stats.py (Stats)
    ├── StoreLifecycle        kind · ping · warm · close                   whoever opens the store (app, health)
    └── admit                 windows + blob + lock + budget, atomically   admission.py (Gatekeeper)

Why ``admit`` is on the composite and in no role: a request's admission counts its
rate-limit windows (``CounterStore``), reads the cached answer and takes its lock
(``BlobStore``) and reserves its budget (``CounterStore``) in one atomic step — one round
trip, one Lua script in Redis, every key in one Cluster slot (the ``{team}`` tag). Built from
the role methods it would take several round trips and lose the all-or-nothing guarantee
(windows counted, then the budget refused), so a caller of ``admit`` holds the whole
``Store``. ``CounterStore.adjust`` crosses roles the same way on a smaller scale: with its
optional blob it settles the budget and stores the cache entry (releasing its lock) in one
round trip; the blob is opaque bytes to its caller (``Budgets.settle``).

Errors: a store that cannot answer (Redis down or slow) raises ``StoreUnavailable``;
callers degrade as documented (rate limits fall back to per-process limits, the cache
misses, budgets follow ``on_store_error``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "Admission", "Announcements", "BlobStore", "Budget", "CounterStore", "KeyRecord", "KeyStore", "StatsStore", "Store",
    "StoreLifecycle", "StoreUnavailable", "Window", "WindowResult",
]


class StoreUnavailable(Exception):
    """The shared store did not answer in time (or at all)."""


@dataclass(frozen=True, slots=True)
class Window:
    """One sliding window to count against: ``key`` (namespaced by the caller, with a Redis
    Cluster hash tag such as ``{team}``), this request's ``cost`` and the ``limit`` per window."""

    key: str
    cost: int
    limit: int


@dataclass(frozen=True, slots=True)
class WindowResult:
    allowed: bool
    used: float  # usage in the sliding window, including this request when allowed
    limit: int
    retry_after_s: float  # 0 when allowed

    @property
    def remaining(self) -> int:
        return max(0, int(self.limit - self.used))


@dataclass(frozen=True, slots=True)
class Budget:
    """One spend counter (e.g. a team's spend today), in integer nano-USD: ``amount`` to add
    now, ``limit`` it may not exceed, ``ttl_s`` for the counter (it outlives its window)."""

    key: str
    amount: int
    limit: int
    ttl_s: int


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A virtual key as stored: never the key itself, only its sha256."""

    key_hash: str
    team: str
    name: str = ""
    created_at: float = 0.0
    expires_at: float | None = None
    revoked: bool = False
    budget_monthly_usd: float | None = None  # this key's own budget per UTC month


@dataclass(frozen=True, slots=True)
class Admission:
    """What ``Store.admit`` did, in one atomic step."""

    windows: list[WindowResult]  # as ``hit`` returns them (counted iff all allowed)
    reserved: bool | None  # the budgets were reserved; False: one would pass its limit; None: not tried
    values: list[int]  # the budget counters after the reservation (or as they are, if refused); [] if not tried
    blob: bytes | None  # the value at ``blob_key`` (read only when the windows fit)
    #: with ``lock_ms`` and no blob: True when this request took the blob's lock (it produces
    #: the value), False when another holds it (wait for the value: ``probe``); else None
    leader: bool | None = None


class KeyStore(Protocol):
    """Virtual key records (``router/state/keys.py``): stored by hash, never the key itself."""

    async def put_key(self, record: KeyRecord) -> None: ...

    async def get_key(self, key_hash: str) -> KeyRecord | None: ...

    async def revoke_key(self, key_hash: str) -> bool:
        """Mark a key revoked (kept for audit); False if unknown."""
        ...

    async def list_keys(self, team: str | None = None) -> list[KeyRecord]: ...


class CounterStore(Protocol):
    """Integer counters: the rate-limit sliding windows (``hit``) and the budget counters
    (``reserve``, ``adjust``, ``read``) — ``router/state/limits.py`` and ``budgets.py``."""

    async def hit(self, windows: Sequence[Window], window_s: float, now: float) -> list[WindowResult]:
        """Check and count several sliding windows atomically: if any would go over its
        limit, none is counted and every result says so (``allowed`` False on those over)."""
        ...

    async def reserve(self, budgets: Sequence[Budget]) -> tuple[bool, list[int]]:
        """Atomically add every ``amount`` if no counter would pass its ``limit`` (else add
        nothing). Returns (reserved, the counters' values after — or as they are, if not)."""
        ...

    async def adjust(self, budgets: Sequence[Budget], blob: tuple[str, bytes, int] | None = None) -> None:
        """Add each ``amount`` (may be negative: settle to actual cost, or release) unconditionally;
        with ``blob`` = (key, value, ttl_s), also store it (``set_blob``) in the same round trip
        (in Redis it must share the counters' Cluster slot)."""
        ...

    async def read(self, keys: Sequence[str]) -> list[int]:
        """Current values of counters (0 when absent)."""
        ...


class BlobStore(Protocol):
    """Opaque values with a TTL and a lock each — the response cache (``router/state/cache.py``)."""

    async def get_blob(self, key: str) -> bytes | None:
        """A cached value, or ``None`` (absent or expired)."""
        ...

    async def set_blob(self, key: str, value: bytes, ttl_s: int) -> None: ...

    async def probe(self, blob_key: str) -> tuple[bytes | None, bool]:
        """(the blob or ``None``, whether its lock is still held): for a request waiting on
        another that holds the lock (taken by ``Store.admit``)."""
        ...

    async def unlock(self, blob_key: str) -> None:
        """Release a blob's lock without storing it (the request that held it has nothing to
        store). Storing the blob (``set_blob``, ``adjust`` with a blob) releases it too."""
        ...


class StatsStore(Protocol):
    """Hashes of float sums — the dashboard's counters (``router/state/stats.py``)."""

    async def add_stats(self, entries: Sequence[tuple[str, Mapping[str, float], int]]) -> None:
        """For each (hash key, {field: amount}, ttl_s): add every amount to its field (creating
        it at 0) and keep the hash ``ttl_s`` more seconds. Not atomic across entries."""
        ...

    async def read_stats(self, keys: Sequence[str]) -> list[dict[str, float]]:
        """The fields of each hash (``{}`` when absent)."""
        ...


class Announcements(Protocol):
    """Small, lossy messages to every gateway process sharing the store (Redis pub/sub): a
    replica pool's placements of new conversations. Nothing waits for them; a lost one costs a
    KV-cache miss, never a wrong answer. In one process (memory) they go nowhere."""

    #: called with each message from any process (this one included), when subscribed
    on_announcement: Callable[[str], None] | None

    def announce(self, message: str) -> None:
        """Send in the background; never raises."""
        ...


class StoreLifecycle(Protocol):
    """What the owner of a store does with it: name it, open it, check it, close it."""

    kind: str  # "memory" or "redis"

    async def ping(self) -> None:
        """Raise ``StoreUnavailable`` unless the store answers."""
        ...

    async def warm(self) -> None:
        """Get ready to serve (connect, load scripts); raises ``StoreUnavailable``."""
        ...

    async def close(self) -> None: ...


class Store(KeyStore, CounterStore, BlobStore, StatsStore, Announcements, StoreLifecycle, Protocol):
    """The whole store: every role, plus ``admit``, the one step that crosses them (see the
    module docstring). ``MemoryStore`` and ``RedisStore`` implement it."""

    async def admit(self, windows: Sequence[Window], window_s: float, now: float, budgets: Sequence[Budget],
                    blob_key: str | None, lock_ms: int = 0) -> Admission:
        """A request's whole admission in one atomic step (one round trip in Redis): count the
        rate-limit ``windows`` as ``hit`` does; if they fit, read ``blob_key`` (a cached answer);
        if there is none, take the blob's lock for ``lock_ms`` when asked (``leader``) and
        reserve ``budgets`` as ``reserve`` does. Nothing is reserved when the windows are full
        or a blob is found. In Redis every key of one call must share one Cluster slot (the
        callers tag them all with ``{team}``)."""
        ...
