"""``MemoryStore``: the embedded ``Store`` for one process (plain dicts, no I/O), and the
sliding-window arithmetic both stores share (``RedisStore`` imports it from here so the two
cannot drift apart).

Sliding window (two-bucket counter, Cloudflare's approximation): for a window of
``window_s`` seconds, bucket ``b = floor(now / window_s)`` and the elapsed fraction
``f = (now mod window_s) / window_s``; ``used = prev * (1 - f) + cur``. A request of
``cost`` fits iff ``used + cost <= limit``. ``hit`` is all-or-nothing: when every window
fits, each cost is added to its current bucket and ``used`` includes it; otherwise nothing
is counted, the windows over their limit say ``allowed=False`` with a ``retry_after_s``
> 0, and the others say ``allowed=True`` although they were *not* counted (their ``used``
excludes the cost). ``now`` always comes from the caller: no clock is read here.

Concurrency: every method runs without an ``await`` between reading and writing, so
asyncio tasks cannot interleave inside it (no lock needed). Memory stays bounded: a
window's buckets older than the previous one are dropped when it is written, and each
``hit`` sweeps at most ``_SWEEP_BATCH`` windows not written for ``2 × window_s``
(windows are kept in last-write order, so the expired ones are at the front). Cached
answers are capped both in number (``_MAX_BLOBS``) and in bytes (``max_blob_bytes``, from the
policy's ``cache.max_memory_mb``): each entry counts its key, its value and a fixed overhead
for the objects around them, and the least recently used go first.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from router.state.store import Admission, Budget, KeyRecord, Window, WindowResult

__all__ = ["BLOB_OVERHEAD", "DEFAULT_BLOB_BYTES", "MemoryStore", "blob_cost", "sliding_position", "window_fits",
           "window_results"]

_SWEEP_BATCH = 32  # expired windows dropped per hit, at most
_MIN_RETRY_S = 0.001  # a denied window never says "retry in 0 s"


def sliding_position(now: float, window_s: float) -> tuple[int, float]:
    """``(b, f)``: the current bucket index and the elapsed fraction of it, ``0 <= f < 1``."""
    if window_s <= 0:
        raise ValueError(f"window_s must be > 0, got {window_s!r}")
    quotient, rem = divmod(now, window_s)
    return int(quotient), min(max(rem / window_s, 0.0), math.nextafter(1.0, 0.0))


def window_fits(cur: int, prev: int, cost: int, limit: int, f: float) -> bool:
    """The admission test. ``RedisStore``'s Lua script computes exactly this, in this order
    (``prev * (1 - f) + cur + cost <= limit`` in IEEE doubles), so both stores agree."""
    return prev * (1.0 - f) + cur + cost <= limit


def window_results(windows: Sequence[Window], counts: Sequence[tuple[int, int]], fits: Sequence[bool],
                   f: float, window_s: float) -> list[WindowResult]:
    """Results for ``windows`` given their ``(cur, prev)`` bucket counts *before* this hit and
    whether each fits; the hit was counted iff all fit."""
    counted = all(fits)
    out = []
    for window, (cur, prev), ok in zip(windows, counts, fits, strict=True):
        used = prev * (1.0 - f) + cur
        if counted:
            out.append(WindowResult(True, used + window.cost, window.limit, 0.0))
        elif ok:
            out.append(WindowResult(True, used, window.limit, 0.0))
        else:
            wait = _retry_after(used, window.cost, window.limit, prev, f, window_s)
            out.append(WindowResult(False, used, window.limit, wait))
    return out


def _retry_after(used: float, cost: int, limit: int, prev: int, f: float, window_s: float) -> float:
    """When a denied request could first fit (a lower bound: retrying sooner is pointless).
    Within the current bucket only the previous bucket decays, freeing ``prev / window_s``
    per second; past the bucket's end we stop estimating and say "at the end"."""
    if cost > limit:
        return window_s
    to_bucket_end = window_s * (1.0 - f)
    if prev > 0:
        wait = min((used + cost - limit) * window_s / prev, to_bucket_end)
    else:
        wait = to_bucket_end
    return max(wait, _MIN_RETRY_S)


@dataclass(slots=True)
class _Counter:
    buckets: dict[int, int]  # bucket index -> count (only the current and previous are kept)
    expires_at: float  # in the caller's ``now`` time: last write + 2 × window_s


_MAX_STATS = 5_000  # stats buckets held before expired ones are swept (minute + hour buckets)
_MAX_BLOBS = 10_000  # cached responses kept by one process (least recently used go first)
#: What one cached entry costs beyond its key and value: the tuple, the float, the str and
#: bytes object headers and its slot in the ordered dict (measured: ~230 bytes on CPython 3.11).
BLOB_OVERHEAD = 256
DEFAULT_BLOB_BYTES = 256 * 1024 * 1024


def blob_cost(key: str, value: bytes) -> int:
    """The bytes one cached entry is counted for against ``max_blob_bytes``."""
    return len(key) + len(value) + BLOB_OVERHEAD


class MemoryStore:
    """The ``Store`` for a single process (every role: keys, counters, blobs, stats, lifecycle,
    and ``admit``): state lives and dies with the process."""

    kind = "memory"
    on_announcement: Callable[[str], None] | None = None  # one process: nothing to hear from others

    def announce(self, message: str) -> None:
        """One process: no other process to tell."""

    def __init__(self, max_blob_bytes: int = DEFAULT_BLOB_BYTES) -> None:
        self._max_blob_bytes = max_blob_bytes
        self._blob_bytes = 0  # the sum of ``blob_cost`` over ``_blobs``
        self._counters: OrderedDict[str, _Counter] = OrderedDict()  # in last-write order
        self._keys: dict[str, KeyRecord] = {}
        self._spend: dict[str, int] = {}  # budget counters (no expiry needed in one process's life)
        self._blobs: OrderedDict[str, tuple[bytes, float]] = OrderedDict()  # cached responses, LRU
        self._stats: dict[str, tuple[dict[str, float], float]] = {}  # stats buckets: (fields, expires at)
        self._locks: OrderedDict[str, float] = OrderedDict()  # blob locks: key -> held until, oldest first

    @property
    def max_blob_bytes(self) -> int:
        return self._max_blob_bytes

    @max_blob_bytes.setter
    def max_blob_bytes(self, value: int) -> None:
        """A new cap applies at once: the least recently used entries over it go now."""
        self._max_blob_bytes = value
        self._trim_blobs()

    @property
    def blob_bytes(self) -> int:
        """What the cached answers held now are counted for (always <= ``max_blob_bytes``)."""
        return self._blob_bytes

    @property
    def tracked_windows(self) -> int:
        """How many windows have live buckets (for tests and diagnostics)."""
        return len(self._counters)

    async def hit(self, windows: Sequence[Window], window_s: float, now: float) -> list[WindowResult]:
        b, f = sliding_position(now, window_s)
        self._sweep(now)
        counts = [self._counts(w.key, b, now) for w in windows]
        fits = [window_fits(cur, prev, w.cost, w.limit, f) for w, (cur, prev) in zip(windows, counts, strict=True)]
        if all(fits):
            for w in windows:
                self._add(w.key, b, w.cost, now + 2 * window_s)
        return window_results(windows, counts, fits, f, window_s)

    def _counts(self, key: str, b: int, now: float) -> tuple[int, int]:
        counter = self._counters.get(key)
        if counter is None:
            return 0, 0
        if counter.expires_at <= now:
            del self._counters[key]
            return 0, 0
        return counter.buckets.get(b, 0), counter.buckets.get(b - 1, 0)

    def _add(self, key: str, b: int, cost: int, expires_at: float) -> None:
        counter = self._counters.pop(key, None)
        buckets = {i: n for i, n in counter.buckets.items() if i >= b - 1} if counter else {}
        buckets[b] = buckets.get(b, 0) + cost
        self._counters[key] = _Counter(buckets, expires_at)  # re-inserted last: most recently written

    def _sweep(self, now: float) -> None:
        for _ in range(_SWEEP_BATCH):
            oldest = next(iter(self._counters.values()), None)
            if oldest is None or oldest.expires_at > now:
                return
            self._counters.popitem(last=False)

    async def admit(self, windows: Sequence[Window], window_s: float, now: float, budgets: Sequence[Budget],
                    blob_key: str | None, lock_ms: int = 0) -> Admission:
        results = await self.hit(windows, window_s, now) if windows else []
        if not all(r.allowed for r in results):
            return Admission(results, None, [], None)
        blob = await self.get_blob(blob_key) if blob_key is not None else None
        leader = None
        if blob is None and blob_key is not None and lock_ms > 0:
            leader = self._lock(blob_key, lock_ms)
        if blob is not None or not budgets:
            return Admission(results, None, [], blob, leader)
        reserved, values = await self.reserve(budgets)
        return Admission(results, reserved, values, None, leader)

    def _lock(self, key: str, lock_ms: int) -> bool:
        now = time.monotonic()
        held = self._locks.get(key)
        if held is not None and held > now:
            return False
        # locks are released when their request ends; the oldest go first (expired, or over the cap)
        while self._locks and (len(self._locks) >= _MAX_BLOBS or next(iter(self._locks.values())) <= now):
            self._locks.popitem(last=False)
        self._locks.pop(key, None)
        self._locks[key] = now + lock_ms / 1000
        return True

    async def probe(self, blob_key: str) -> tuple[bytes | None, bool]:
        held = self._locks.get(blob_key)
        return await self.get_blob(blob_key), held is not None and held > time.monotonic()

    async def unlock(self, blob_key: str) -> None:
        self._locks.pop(blob_key, None)

    async def reserve(self, budgets: Sequence[Budget]) -> tuple[bool, list[int]]:
        current = [self._spend.get(b.key, 0) for b in budgets]
        if any(c + b.amount > b.limit for c, b in zip(current, budgets, strict=True)):
            return False, current
        await self.adjust(budgets)
        return True, [self._spend[b.key] for b in budgets]

    async def adjust(self, budgets: Sequence[Budget], blob: tuple[str, bytes, int] | None = None) -> None:
        for b in budgets:
            self._spend[b.key] = self._spend.get(b.key, 0) + b.amount
        if blob is not None:
            await self.set_blob(*blob)
    async def read(self, keys: Sequence[str]) -> list[int]:
        return [self._spend.get(k, 0) for k in keys]

    async def add_stats(self, entries: Sequence[tuple[str, Mapping[str, float], int]]) -> None:
        now = time.monotonic()
        for key, fields, ttl_s in entries:
            held = self._stats.get(key)
            if held is None or held[1] <= now:
                held = self._stats[key] = ({}, 0.0)
            values = held[0]
            for name, amount in fields.items():
                values[name] = values.get(name, 0.0) + amount
            self._stats[key] = (values, now + ttl_s)
        if len(self._stats) > _MAX_STATS:  # expired buckets go first
            for key in [k for k, (_, until) in self._stats.items() if until <= now]:
                del self._stats[key]

    async def read_stats(self, keys: Sequence[str]) -> list[dict[str, float]]:
        now = time.monotonic()
        out = []
        for key in keys:
            held = self._stats.get(key)
            out.append(dict(held[0]) if held is not None and held[1] > now else {})
        return out

    async def put_key(self, record: KeyRecord) -> None:
        self._keys[record.key_hash] = record

    async def get_key(self, key_hash: str) -> KeyRecord | None:
        return self._keys.get(key_hash)

    async def get_blob(self, key: str) -> bytes | None:
        entry = self._blobs.get(key)
        if entry is None:
            return None
        if entry[1] <= time.monotonic():
            self._drop_blob(key)
            return None
        self._blobs.move_to_end(key)
        return entry[0]

    async def set_blob(self, key: str, value: bytes, ttl_s: int) -> None:
        self._locks.pop(key, None)
        self._drop_blob(key)
        cost = blob_cost(key, value)
        if cost > self._max_blob_bytes:
            return  # larger than the whole cache: not stored
        # a copy of its own size: serialisers (orjson) hand out bytes that sit in a buffer sized
        # for the worst case (up to 16x for a 256 KB answer), which would stay allocated here
        self._blobs[key] = (memoryview(value).tobytes(), time.monotonic() + ttl_s)
        self._blob_bytes += cost
        self._trim_blobs()

    def _drop_blob(self, key: str) -> None:
        entry = self._blobs.pop(key, None)
        if entry is not None:
            self._blob_bytes -= blob_cost(key, entry[0])

    def _trim_blobs(self) -> None:
        """Evict the least recently used entries until both caps hold."""
        blobs = self._blobs
        while blobs and (len(blobs) > _MAX_BLOBS or self._blob_bytes > self._max_blob_bytes):
            key, (value, _) = blobs.popitem(last=False)
            self._blob_bytes -= blob_cost(key, value)

    async def revoke_key(self, key_hash: str) -> bool:
        record = self._keys.get(key_hash)
        if record is None:
            return False
        self._keys[key_hash] = dataclasses.replace(record, revoked=True)
        return True

    async def list_keys(self, team: str | None = None) -> list[KeyRecord]:
        records = [r for r in self._keys.values() if team is None or r.team == team]
        return sorted(records, key=lambda r: (r.created_at, r.key_hash))

    async def ping(self) -> None:
        return None

    async def warm(self) -> None:
        return None

    async def close(self) -> None:
        return None
