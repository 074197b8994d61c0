"""``RedisStore``: the ``Store`` shared by every replica, in Redis. This is the only module of
the project that imports the Redis client (``redis.asyncio``).

Connecting — one URL (``SWITCHYARD_REDIS_URL``), its scheme picks the deployment:

- ``redis://[user:password@]host:6379/0``, ``rediss://…`` (TLS), ``unix:///path.sock?db=0``:
  one Redis server (``redis.asyncio.from_url``).
- ``redis+sentinel://[user:password@]sentinel1:26379,sentinel2:26379/<service>[/<db>]``:
  Sentinel; the master of ``<service>`` is looked up through the sentinels and followed on
  failover. ``user:password`` authenticate to the master (the sentinels get none; no TLS).
- ``redis+cluster://[user:password@]host:6379`` (``rediss+cluster://`` for TLS): Redis
  Cluster (``redis.asyncio.cluster.RedisCluster``); any node works as the startup node.

Key layout (``prefix`` defaults to ``switchyard``; it must not contain ``{`` or ``}``):

- ``{prefix}:rl:{window.key}:{bucket}`` — rate-limit buckets (integers, ``PEXPIRE`` 2 × window).
  ``window.key`` carries the caller's Cluster hash tag (``{team}``), so all the buckets one
  ``hit`` touches share a slot and the Lua script is Cluster-safe — provided the caller
  puts one tag in every window of a call (``RateLimiter`` does).
- ``{prefix}:cache:{tag}:{sha256}`` — cached answers (``tag`` is the team, or ``global``).
- ``{prefix}:spend:{team}:…`` — budget counters (integer nano-USD).
- ``{prefix}:stats:{m|h}:{epoch bucket}`` — the dashboard's counters per minute / hour (hashes
  of floats, ``HINCRBYFLOAT``; kept 2 days / 90 days).
- ``{prefix}:keys:changed`` — the pub/sub channel announcing key creations and revocations
  (``get_key`` caches records while subscribed; see ``_listen``).
- ``{prefix}:key:{key_hash}`` — a virtual key record (hash: team, name, created_at,
  expires_at ("" for none), revoked ("0"/"1")); looked up by hash alone.
- ``{prefix}:team-keys:{team}`` — set of the key hashes of a team, for listing.
  Record and set are single-key commands, so they may live in different slots.

The request path's commands — the admission and settlement scripts, cache reads and locks,
budget reads — go through a ``Lane`` (``router/state/redis_lane.py``): one pipelined
connection of their own, opened by the client's connection class (so the same address, TLS,
AUTH and database) and then driven without the client's per-command machinery, which cost
about twice the round trip itself. The scripts are sent by SHA (``EVALSHA``), and in full
(``EVAL``) when Redis answers ``NOSCRIPT``. Cluster and Sentinel clients keep the client's
own path for every command (slot routing, failover).

Failure: every Redis error or timeout becomes ``StoreUnavailable`` (short message). Each
call gives up after ``timeout_s`` (socket timeouts plus an overall deadline; ``list_keys``:
per round trip); a connection error is retried once, immediately (a stale pooled connection
after a Redis restart), a timeout never. A call that times out retires the lane's connection
(the next call opens another; the calls already waiting on it keep their own deadlines).
The pool and the lane reconnect by themselves: the next call after Redis is back works.
``close()`` closes both.

Sliding-window semantics are ``memory_store``'s (shared helpers): the Lua script only reads
the buckets, makes the all-or-nothing decision (the same arithmetic as ``window_fits``) and
counts; used values and ``retry_after_s`` are computed here from the counts it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import unquote, urlsplit

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError

from router.state.memory_store import sliding_position, window_results
from router.state.redis_lane import Lane
from router.state.store import Admission, Budget, KeyRecord, StoreUnavailable, Window, WindowResult

__all__ = ["RedisStore"]

_HEALTH_CHECK_INTERVAL_S = 30  # PING a pooled connection idle this long before using it
_LIST_LIMIT = 10_000  # list_keys() returns at most this many records
_SCAN_COUNT = 500
_EXACT = 2**53  # a limit above this (9 million USD in nano-USD) is "no limit": Lua's doubles stay exact
_KEY_CACHE_MAX = 100_000  # key records cached per process (emptied when full)
_LISTEN_POLL_S = 5.0
_RESUBSCRIBE_S = 1.0
log = logging.getLogger("switchyard.store")

# The one admission script (``hit``, ``reserve`` and ``admit`` all run it).
# KEYS: per window its current then previous bucket; then the budget counters; then the blob
# key, if any (and then its lock key). ARGV, one number each (1-based): [1] n_windows,
# [2] n_budgets, [3] has_blob (0/1), [4] f, then (cost, limit) per window, the bucket ttl in
# ms, then (amount, limit, ttl_s) per budget, then the lock's ttl in ms (0: no lock). Counts
# and nano-USD amounts stay below 2^53, exact in Lua's doubles; counters are read with one
# MGET per group (windows, budgets).
# Returns {all_fit, reserved (-1 not tried, 0 refused, 1 done), blob ('' if none or not read),
# leader (-1 no lock asked or a blob found, 0 another request holds the lock, 1 this one took
# it), then per window: fits, cur, prev (counts *before* this hit), then per budget its value}.
# The window test is memory_store.window_fits, operation for operation.
_ADMIT_LUA = """
local nw, nb = tonumber(ARGV[1]), tonumber(ARGV[2])
local keep = 1 - tonumber(ARGV[4])
local out = {1, -1, '', -1}
if nw > 0 then
  local counts = redis.call('MGET', unpack(KEYS, 1, 2 * nw))
  for i = 1, nw do
    local cur = tonumber(counts[2 * i - 1] or '0')
    local prev = tonumber(counts[2 * i] or '0')
    local fits = 0
    if prev * keep + cur + tonumber(ARGV[3 + 2 * i]) <= tonumber(ARGV[4 + 2 * i]) then fits = 1 end
    if fits == 0 then out[1] = 0 end
    out[#out + 1] = fits
    out[#out + 1] = cur
    out[#out + 1] = prev
  end
  if out[1] == 0 then return out end
  local ttl_ms = ARGV[5 + 2 * nw]
  for i = 1, nw do
    redis.call('INCRBY', KEYS[2 * i - 1], ARGV[3 + 2 * i])
    redis.call('PEXPIRE', KEYS[2 * i - 1], ttl_ms)
  end
end
if ARGV[3] == '1' then
  local blob = redis.call('GET', KEYS[2 * nw + nb + 1])
  if blob then
    out[3] = blob
    return out
  end
  local lock_ms = ARGV[6 + 2 * nw + 3 * nb]
  if tonumber(lock_ms) > 0 then
    out[4] = 0
    if redis.call('SET', KEYS[2 * nw + nb + 2], '1', 'NX', 'PX', lock_ms) then out[4] = 1 end
  end
end
if nb == 0 then return out end
local b = 5 + 2 * nw
local values = redis.call('MGET', unpack(KEYS, 2 * nw + 1, 2 * nw + nb))
local ok = 1
for i = 1, nb do
  if tonumber(values[i] or '0') + tonumber(ARGV[b + 3 * i - 2]) > tonumber(ARGV[b + 3 * i - 1]) then ok = 0 end
end
out[2] = ok
for i = 1, nb do
  local key = KEYS[2 * nw + i]
  if ok == 1 then
    out[#out + 1] = redis.call('INCRBY', key, ARGV[b + 3 * i - 2])
    redis.call('EXPIRE', key, ARGV[b + 3 * i])
  else
    out[#out + 1] = tonumber(values[i] or '0')
  end
end
return out
"""

#: Unconditional adjustment (settle / release). KEYS: the counters, then (with a blob) the blob
#: key and its lock key. ARGV: [1] the number of counters n, then (delta, ttl_s) per counter,
#: then (with a blob) its ttl_s and its value. Storing the blob releases its lock (identical
#: requests waiting on other replicas then find the blob).
_ADJUST_LUA = """
local n = tonumber(ARGV[1])
for i = 1, n do
  redis.call('INCRBY', KEYS[i], ARGV[2 * i])
  redis.call('EXPIRE', KEYS[i], ARGV[2 * i + 1])
end
if #KEYS > n then
  redis.call('SET', KEYS[n + 1], ARGV[2 * n + 3], 'EX', ARGV[2 * n + 2])
  redis.call('DEL', KEYS[n + 2])
end
return 1
"""

#: KEYS: a blob and its lock key → {the blob or '', 1 while the lock is held}.
_PROBE_LUA = """
return {redis.call('GET', KEYS[1]) or '', redis.call('EXISTS', KEYS[2])}
"""

#: KEYS[1]: a key record. Sets revoked=1 only if the record exists (never creates a stub).
_REVOKE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'revoked', '1')
return 1
"""


class RedisStore:
    """The shared ``Store`` in Redis, every role: keys, counters (windows and budgets), blobs
    and their locks, stats, lifecycle, and ``admit`` (see the module doc for the key layout)."""

    kind = "redis"

    def __init__(self, url: str, *, timeout_s: float = 0.25, prefix: str = "switchyard") -> None:
        if "{" in prefix or "}" in prefix:
            raise ValueError(f"prefix must not contain '{{' or '}}' (Cluster hash tags): {prefix!r}")
        self._timeout_s = timeout_s
        self._prefix = prefix
        client, helpers = _client(url, timeout_s)
        self._redis: Any = client  # Redis or RedisCluster: the same commands
        self._helpers: list[Any] = helpers  # closed with it
        self._cluster = isinstance(client, RedisCluster)
        #: the request path's commands (admit, settle, cache reads) on one pipelined connection
        #: of its own; one server only (Cluster routes by slot, Sentinel follows failovers:
        #: both keep the client's own path)
        self._lane = Lane(self._open_lane, timeout_s) if not (self._cluster or helpers) else None
        self._admit_script = self._redis.register_script(_ADMIT_LUA)
        self._keys_channel = f"{prefix}:keys:changed"
        self._announce_channel = f"{prefix}:announce"
        self.on_announcement: Callable[[str], None] | None = None
        self._announcing: set[asyncio.Task[None]] = set()
        self._key_cache: dict[str, KeyRecord] = {}
        self._key_cache_live = False  # True while subscribed to key changes
        self._key_generation = 0  # bumped by every change announced (and every (un)subscribe)
        self._listener: asyncio.Task[None] | None = None
        self._subscription: Any = None  # the listener's PubSub
        self._pubsub_ok = not self._cluster  # no pub/sub client for Cluster here
        self._revoke_script = self._redis.register_script(_REVOKE_LUA)
        self._probe_script = self._redis.register_script(_PROBE_LUA)
        self._adjust_script = self._redis.register_script(_ADJUST_LUA)

    @asynccontextmanager
    async def _guard(self, what: str) -> AsyncIterator[None]:
        """Bound one operation by ``timeout_s`` and turn every Redis failure into ``StoreUnavailable``."""
        try:
            async with asyncio.timeout(self._timeout_s):
                yield
        except TimeoutError:
            raise StoreUnavailable(f"redis {what}: no answer within {self._timeout_s:g} s") from None
        except (RedisError, RedisClusterException, OSError) as exc:
            raise StoreUnavailable(f"redis {what}: {_short(exc)}") from None

    async def _open_lane(self) -> asyncio.StreamWriter:
        """A new connection of the client's own class (address, TLS, AUTH, SELECT, client name
        as configured), connected and handed over to the lane: the connection object lets go
        of its streams (the lane keeps the writer for its transport)."""
        connection = self._redis.connection_pool.make_connection()
        await connection.connect()
        writer = getattr(connection, "_writer", None)
        if not isinstance(writer, asyncio.StreamWriter):
            raise RedisConnectionError("connected without a stream")
        connection._reader = connection._writer = None  # the lane owns the connection now
        return writer

    async def _call(self, what: str, command: tuple[Any, ...], fallback: tuple[Any, ...] | None = None) -> Any:
        """One command on the lane, by one deadline; ``fallback`` is sent when the first reply
        is ``NOSCRIPT`` (a restarted Redis: EVAL loads the script again). Failures as ``_guard``."""
        lane = self._lane
        assert lane is not None
        try:
            deadline = lane.deadline()
            try:
                return await lane.call(hiredis.pack_command(command), deadline)
            except hiredis.ReplyError as exc:
                if fallback is None or not str(exc).startswith("NOSCRIPT"):
                    raise
            return await lane.call(hiredis.pack_command(fallback), deadline)
        except TimeoutError:
            raise StoreUnavailable(f"redis {what}: no answer within {self._timeout_s:g} s") from None
        except hiredis.ReplyError as exc:
            raise StoreUnavailable(f"redis {what}: {_short(exc, 'ResponseError')}") from None
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis {what}: {_short(exc)}") from None

    async def _run(self, script: Any, keys: Sequence[str], args: Sequence[bytes | str | int | float],
                   what: str) -> Any:
        """Run a script (the client's registered ``Script``): on the lane by its SHA (EVALSHA,
        then EVAL with its source if Redis lost it), else through the client."""
        if self._lane is None:
            async with self._guard(what):
                return await script(keys=keys, args=args)
        tail = (len(keys), *keys, *args)
        return await self._call(what, (b"EVALSHA", script.sha, *tail), (b"EVAL", script.script, *tail))

    # -- rate limits ----------------------------------------------------------------------

    async def hit(self, windows: Sequence[Window], window_s: float, now: float) -> list[WindowResult]:
        if not windows:
            return []
        return (await self._admit(windows, window_s, now, (), None, "rate-limit hit")).windows

    async def admit(self, windows: Sequence[Window], window_s: float, now: float, budgets: Sequence[Budget],
                    blob_key: str | None, lock_ms: int = 0) -> Admission:
        return await self._admit(windows, window_s, now, budgets, blob_key, "admit", lock_ms)

    async def _admit(self, windows: Sequence[Window], window_s: float, now: float, budgets: Sequence[Budget],
                     blob_key: str | None, what: str, lock_ms: int = 0) -> Admission:
        b, f = sliding_position(now, window_s)
        keys = [k for w in windows for k in (self._bucket(w.key, b), self._bucket(w.key, b - 1))]
        keys += [self._spend(x.key) for x in budgets]
        if blob_key is not None:
            keys += [self._blob(blob_key), self._lock(blob_key)]
        args = [len(windows), len(budgets), int(blob_key is not None), f,
                *(v for w in windows for v in (w.cost, w.limit)), math.ceil(2000 * window_s),
                *(v for x in budgets for v in (x.amount, min(x.limit, _EXACT), x.ttl_s)),
                lock_ms if blob_key is not None else 0]
        reply = await self._run(self._admit_script, keys, args, what)
        end = 4 + 3 * len(windows)
        per_window = [reply[i:i + 3] for i in range(4, end, 3)]
        fits = [bool(ok) for ok, _, _ in per_window]
        counts = [(int(cur), int(prev)) for _, cur, prev in per_window]
        reserved = None if int(reply[1]) < 0 else bool(reply[1])
        blob = _bytes(reply[2]) or None
        leader = None if int(reply[3]) < 0 else bool(reply[3])
        return Admission(window_results(windows, counts, fits, f, window_s), reserved,
                         [int(v) for v in reply[end:]], blob, leader)

    def _bucket(self, window_key: str, b: int) -> str:
        return f"{self._prefix}:rl:{window_key}:{b}"

    # -- virtual keys ---------------------------------------------------------------------

    def _record_key(self, key_hash: str) -> str:
        return f"{self._prefix}:key:{key_hash}"

    def _team_key(self, team: str) -> str:
        return f"{self._prefix}:team-keys:{team}"

    # -- budgets ---------------------------------------------------------------------------

    def _blob(self, key: str) -> str:
        return f"{self._prefix}:cache:{key}"

    def _lock(self, key: str) -> str:
        return f"{self._prefix}:cache:{key}:lock"

    def _spend(self, key: str) -> str:
        return f"{self._prefix}:spend:{key}"

    async def reserve(self, budgets: Sequence[Budget]) -> tuple[bool, list[int]]:
        if not budgets:
            return True, []
        admission = await self._admit((), 60.0, 0.0, budgets, None, "budget reserve")
        return bool(admission.reserved), admission.values

    async def adjust(self, budgets: Sequence[Budget], blob: tuple[str, bytes, int] | None = None) -> None:
        if not budgets and blob is None:
            return
        keys = [self._spend(b.key) for b in budgets]
        args: list[int | bytes] = [len(budgets), *(v for b in budgets for v in (b.amount, b.ttl_s))]
        if blob is not None:
            keys += [self._blob(blob[0]), self._lock(blob[0])]
            args += [blob[2], blob[1]]
        await self._run(self._adjust_script, keys, args, "budget settle")

    async def read(self, keys: Sequence[str]) -> list[int]:
        if not keys:
            return []
        names = [self._spend(k) for k in keys]
        if self._lane is not None:
            values = await self._call("budget read", (b"MGET", *names))
            return [int(v) if v is not None else 0 for v in values]
        async with self._guard("budget read"):  # keys of several teams span Cluster slots
            values = await (self._redis.mget_nonatomic(names) if self._cluster else self._redis.mget(names))
        return [int(v) if v is not None else 0 for v in values]

    async def put_key(self, record: KeyRecord) -> None:
        """Write (or overwrite) the record, then its team set. Not atomic across the two (they
        may sit in different Cluster slots); ``list_keys`` checks each record's own team."""
        name = self._record_key(record.key_hash)
        async with self._guard("put key"):
            old_team = await self._redis.hget(name, "team")
            await self._redis.hset(name, mapping=_fields(record))
            await self._redis.sadd(self._team_key(record.team), record.key_hash)
            if old_team is not None and old_team != record.team:
                await self._redis.srem(self._team_key(old_team), record.key_hash)
            await self._redis.publish(self._keys_channel, record.key_hash)

    async def get_key(self, key_hash: str) -> KeyRecord | None:
        """From this process's key cache while it is kept fresh (see ``_listen``), else Redis."""
        if self._key_cache_live:
            cached = self._key_cache.get(key_hash)
            if cached is not None:
                return cached
        elif self._listener is None and self._pubsub_ok:
            self._listener = asyncio.get_running_loop().create_task(self._listen())
        generation = self._key_generation
        async with self._guard("get key"):
            fields = await self._redis.hgetall(self._record_key(key_hash))
        record = _record(key_hash, fields) if fields else None
        if record is not None and self._key_cache_live and generation == self._key_generation:
            if len(self._key_cache) >= _KEY_CACHE_MAX:
                self._key_cache.clear()
            self._key_cache[key_hash] = record  # no change was announced while it was read
        return record

    async def _listen(self) -> None:
        """Keep the key cache fresh: every ``put_key`` / ``revoke_key`` (on any replica)
        publishes the key's hash on ``{prefix}:keys:changed``; this process drops that entry
        when the message arrives. The cache is used only while subscribed: it is emptied
        and switched off when the subscription breaks, and emptied again on (re)connect,
        since announcements may have been missed in between. Reconnects every second."""
        while True:
            pubsub = self._subscription = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._keys_channel, self._announce_channel)
                pubsub.connection.register_connect_callback(self._resubscribed)
                self._forget_keys(live=True)
                while True:
                    message = await pubsub.get_message(timeout=_LISTEN_POLL_S)
                    if message is None or message.get("type") != "message":
                        continue
                    if str(message.get("channel")) == self._announce_channel:
                        self._heard(str(message["data"]))
                    else:
                        self._key_generation += 1
                        self._key_cache.pop(str(message["data"]), None)
            except (RedisError, OSError) as exc:
                log.info("key cache off until the key-change subscription is back: %s", _short(exc))
            finally:
                self._forget_keys(live=False)
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()
            await asyncio.sleep(_RESUBSCRIBE_S)

    def _heard(self, message: str) -> None:
        hook = self.on_announcement
        if hook is None:
            return
        try:
            hook(message)
        except Exception:  # a bad message or a bug in the hook must not stop the listener
            log.warning("announcement %r not applied", message[:200], exc_info=True)

    def announce(self, message: str) -> None:
        """Publish ``message`` to every process's listener in the background (see
        ``Announcements``); a failure is logged at debug level and forgotten."""
        if not self._pubsub_ok:
            return
        task = asyncio.get_running_loop().create_task(self._publish(message))
        self._announcing.add(task)
        task.add_done_callback(self._announcing.discard)

    async def _publish(self, message: str) -> None:
        try:
            async with self._guard("announce"):
                await self._redis.publish(self._announce_channel, message)
        except StoreUnavailable as exc:
            log.debug("announcement not sent: %s", exc)

    async def _resubscribed(self, connection: object) -> None:
        self._forget_keys(live=True)  # the client reconnected by itself: announcements may be lost

    def _forget_keys(self, live: bool) -> None:
        self._key_generation += 1
        self._key_cache.clear()
        self._key_cache_live = live

    async def get_blob(self, key: str) -> bytes | None:
        if self._lane is not None:
            return _bytes(await self._call("cache get", (b"GET", self._blob(key))))
        async with self._guard("cache get"):
            value = await self._redis.get(self._blob(key))
        return _bytes(value)

    async def set_blob(self, key: str, value: bytes, ttl_s: int) -> None:
        """Store the blob (and release its lock: see ``admit``)."""
        await self.adjust((), (key, value, ttl_s))

    async def probe(self, key: str) -> tuple[bytes | None, bool]:
        value, locked = await self._run(self._probe_script, (self._blob(key), self._lock(key)), (), "cache probe")
        return _bytes(value) or None, bool(locked)

    async def unlock(self, key: str) -> None:
        if self._lane is not None:
            await self._call("cache unlock", (b"DEL", self._lock(key)))
            return
        async with self._guard("cache unlock"):
            await self._redis.delete(self._lock(key))

    def _stats(self, key: str) -> str:
        return f"{self._prefix}:stats:{key}"

    async def add_stats(self, entries: Sequence[tuple[str, Mapping[str, float], int]]) -> None:
        """One pipeline (not a transaction: the buckets may sit in different Cluster slots)."""
        if not entries:
            return
        async with self._guard("stats add"):
            pipe = self._redis.pipeline(transaction=False)
            for key, fields, ttl_s in entries:
                name = self._stats(key)
                for field, amount in fields.items():
                    pipe.hincrbyfloat(name, field, amount)
                pipe.expire(name, ttl_s)
            await pipe.execute()

    async def read_stats(self, keys: Sequence[str]) -> list[dict[str, float]]:
        if not keys:
            return []
        async with self._guard("stats read"):
            pipe = self._redis.pipeline(transaction=False)
            for key in keys:
                pipe.hgetall(self._stats(key))
            replies = await pipe.execute()
        return [{k: float(v) for k, v in reply.items()} for reply in replies]

    async def revoke_key(self, key_hash: str) -> bool:
        async with self._guard("revoke key"):
            revoked = bool(await self._revoke_script(keys=[self._record_key(key_hash)]))
            await self._redis.publish(self._keys_channel, key_hash)
        return revoked

    async def list_keys(self, team: str | None = None) -> list[KeyRecord]:
        """Records of ``team`` (from its set) or of every team (``SCAN``; an admin call, at most
        ``_LIST_LIMIT`` records), oldest first. Each Redis round trip has its own deadline."""
        hashes = await (self._team_hashes(team) if team is not None else self._scan_hashes())
        records = await self._load(hashes[:_LIST_LIMIT])
        if team is not None:
            records = [r for r in records if r.team == team]  # the set may lag a team change
        return sorted(records, key=lambda r: (r.created_at, r.key_hash))

    async def _team_hashes(self, team: str) -> list[str]:
        async with self._guard("list keys"):
            return sorted(await self._redis.smembers(self._team_key(team)))

    async def _scan_hashes(self) -> list[str]:
        start = f"{self._prefix}:key:"
        found = self._redis.scan_iter(match=_glob_escape(start) + "*", count=_SCAN_COUNT)
        hashes: list[str] = []
        try:
            while len(hashes) < _LIST_LIMIT:
                async with self._guard("list keys"):
                    name = await anext(found, None)
                if name is None:
                    break
                hashes.append(name[len(start):])
        finally:
            await found.aclose()
        return hashes

    async def _load(self, hashes: list[str]) -> list[KeyRecord]:
        out: list[KeyRecord] = []
        for start in range(0, len(hashes), _SCAN_COUNT):
            chunk = hashes[start:start + _SCAN_COUNT]
            async with self._guard("list keys"):
                pipe = self._redis.pipeline(transaction=False)
                for key_hash in chunk:
                    pipe.hgetall(self._record_key(key_hash))
                replies = await pipe.execute()
            out += [_record(h, fields) for h, fields in zip(chunk, replies, strict=True) if fields]
        return out

    # -- lifecycle ------------------------------------------------------------------------

    async def ping(self) -> None:
        async with self._guard("ping"):
            await self._redis.ping()

    async def warm(self, timeout_s: float = 2.0) -> None:
        """Before serving: connect (a Cluster learns its slots), load the scripts on every
        primary, subscribe to key changes — so first requests do not pay for it inside their
        short deadline. Raises ``StoreUnavailable`` (the gateway starts anyway, degraded)."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._redis.ping()
                for script in (_ADMIT_LUA, _ADJUST_LUA, _PROBE_LUA, _REVOKE_LUA):
                    await self._redis.script_load(script)
        except TimeoutError:
            raise StoreUnavailable(f"redis warm-up: no answer within {timeout_s:g} s") from None
        except (RedisError, RedisClusterException, OSError) as exc:
            raise StoreUnavailable(f"redis warm-up: {_short(exc)}") from None
        if self._lane is not None:
            await self._call("warm-up", (b"PING",))
        if self._listener is None and self._pubsub_ok:
            self._listener = asyncio.get_running_loop().create_task(self._listen())

    async def close(self) -> None:
        """Stop the key-change listener and close the connection pool (idempotent; errors
        while closing are ignored)."""
        listener, self._listener, self._pubsub_ok = self._listener, None, False
        if listener is not None:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                async with asyncio.timeout(1.0):
                    await listener
        self._forget_keys(live=False)
        if self._lane is not None:
            await self._lane.close()
        for client in (self._redis, *self._helpers):
            try:
                await client.aclose()
            except (RedisError, RedisClusterException, OSError):
                pass


def _bytes(value: bytes | str | None) -> bytes | None:
    """A value as bytes: the lane's replies are bytes, the client's (``decode_responses``) str."""
    return value.encode() if isinstance(value, str) else value


def _client(url: str, timeout_s: float) -> tuple[Any, list[Any]]:
    """A ``redis.asyncio`` client for ``url`` (scheme: see the module doc), and the helper
    clients to close with it (the sentinels')."""
    options: dict[str, Any] = {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "health_check_interval": _HEALTH_CHECK_INTERVAL_S,
        # one immediate retry on a broken connection (stale after a restart), none on timeouts
        "retry": Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        "decode_responses": True,
    }
    scheme, _, rest = url.partition("://")
    if scheme == "redis+sentinel":
        return _sentinel_client(rest, options)
    if scheme in ("redis+cluster", "rediss+cluster"):
        return RedisCluster.from_url(f"{scheme.partition('+')[0]}://{rest}", **options), []
    return aioredis.from_url(url, **options), []


def _sentinel_client(rest: str, options: dict[str, Any]) -> tuple[Any, list[Any]]:
    """``[user:password@]h1:p1,h2:p2/service[/db]`` → the master client of ``service``."""
    userinfo, _, hostlist = rest.rpartition("@")
    hostlist, _, path = hostlist.partition("/")
    service, _, db = path.partition("/")
    if not service:
        raise ValueError("redis+sentinel:// URL needs the service name: redis+sentinel://host:26379/mymaster")
    sentinels = [_host_port(h) for h in hostlist.split(",") if h]
    sentinel = Sentinel(sentinels, sentinel_kwargs=_socket_options(options), **options)  # type: ignore[no-untyped-call]
    user, _, password = userinfo.partition(":")
    master = sentinel.master_for(unquote(service), db=int(db or 0),
                                 username=unquote(user) or None, password=unquote(password) or None)
    return master, list(sentinel.sentinels)


def _socket_options(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if k.startswith("socket_") or k == "retry"}


def _host_port(text: str) -> tuple[str, int]:
    parts = urlsplit(f"//{text}")
    return parts.hostname or "localhost", parts.port or 26379


def _fields(record: KeyRecord) -> dict[str, str]:
    return {
        "team": record.team,
        "name": record.name,
        "created_at": repr(record.created_at),
        "expires_at": "" if record.expires_at is None else repr(record.expires_at),
        "revoked": "1" if record.revoked else "0",
        "budget_monthly_usd": "" if record.budget_monthly_usd is None else repr(record.budget_monthly_usd),
    }


def _record(key_hash: str, fields: dict[str, str]) -> KeyRecord:
    expires, budget = fields.get("expires_at", ""), fields.get("budget_monthly_usd", "")
    return KeyRecord(key_hash=key_hash, team=fields.get("team", ""), name=fields.get("name", ""),
                     created_at=float(fields.get("created_at") or 0.0),
                     expires_at=float(expires) if expires else None,
                     revoked=fields.get("revoked") == "1",
                     budget_monthly_usd=float(budget) if budget else None)


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def _short(exc: BaseException, kind: str | None = None) -> str:
    """``Type: first line`` of an error, without the client repr some errors append (``kind``:
    the type name to show instead)."""
    lines = str(exc).strip().splitlines()
    text = lines[0].split(" : <", 1)[0][:160] if lines else ""
    kind = kind or type(exc).__name__
    return f"{kind}: {text}" if text else kind
