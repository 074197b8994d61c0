"""``ReplicaPool``: one self-hosted backend served by several replicas of the same model
(a few llama.cpp boxes, vLLM pods), with prefix- and session-aware placement.

To the rest of the gateway a pool is *one* backend — one name in the policy, one allowed
set, one price and sensitivity ceiling — and the choice of a replica happens here, per
request. Each replica has its own small circuit (consecutive failures skip it for a
cool-down), its own in-flight count and its own scraped load.

Placement (``strategy: affinity``), in order:

1. **usable** replicas only: circuit closed (or its cool-down over: one probe request);
2. **session affinity**: with a session key (``x-session-id``, OpenAI ``prompt_cache_key``
   or ``user``, ``metadata.session_id``, Anthropic ``metadata.user_id``) the replicas are
   ranked by rendezvous hashing of the key — every gateway process ranks them alike,
   without a shared store;
3. **prefix affinity**: without one, by this process's index of which replica served the
   longest run of the prompt's leading blocks (hashes of fixed-size blocks of the canonical
   prompt: tools, then messages in order) — counted only past the blocks every conversation
   shares (tools, system prompt);
4. **conversation**: else where this conversation was placed before — the index also maps
   each conversation's head (tools, system and everything up to its first user turn: what
   every later turn of it starts with) to its replica; heads placed by *other* gateway
   processes arrive through ``learn`` (the router relays them over Redis pub/sub, no
   per-request round trip);
5. **a new conversation** goes to the least loaded usable replica, ties broken by
   rendezvous hashing of its head (so processes that share no placements still agree when
   the pool is idle, and conversations spread); its head is remembered and announced (``announce``);
6. **load**: a preferred replica that is *saturated* (its queue plus the gateway's in-flight
   requests to it at or over ``saturated_at``) yields to the least loaded one until it is
   back under ``resume_below`` × that (hysteresis).

``round_robin`` and ``least_loaded`` are there to compare against (``bench/pools.py``).
Pure placement logic is in ``Placement``; no I/O but the replicas' own.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import itertools
import logging
import socket
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import orjson

from backends.base import Backend
from backends.errors import BackendError, UpstreamConnectError
from backends.metrics import LoadSample
from backends.types import BackendRequest, BackendResponse, BackendStream, Health, stream_ready

__all__ = ["Discovery", "Placement", "PlacementSpec", "ReplicaPool", "conversation_head", "prefix_blocks", "resolve",
           "session_key", "session_of"]

log = logging.getLogger("switchyard.pool")

#: How many prompt-prefix block hashes the index remembers per pool (least recently used out).
INDEX_SIZE = 50_000
#: The index's key prefix for a conversation's head (block hashes are 8 bytes, heads 1 + 16).
HEAD = b"h"


@dataclass(frozen=True, slots=True)
class PlacementSpec:
    strategy: str = "affinity"  # affinity | least_loaded | round_robin
    block_chars: int = 1024  # prefix block size (characters of the canonical prompt)
    saturated_at: float = 4.0  # queue + in-flight at which a preferred replica yields
    resume_below: float = 0.5  # … and gets traffic back below this share of it
    failures: int = 3  # consecutive failures that take a replica out …
    cooldown_s: float = 10.0  # … for this long (then one probe request)


def session_key(request: BackendRequest) -> str | None:
    """The client's conversation key, if it gave one."""
    return session_of(request.session, request.body)


def session_of(header: str | None, body: Mapping[str, object]) -> str | None:
    """``x-session-id``, else OpenAI's ``prompt_cache_key`` or ``user``, else
    ``metadata.session_id``, else Anthropic's ``metadata.user_id``."""
    if header:
        return header
    for name in ("prompt_cache_key", "user"):
        value = body.get(name)
        if isinstance(value, str) and value:
            return value
    metadata = body.get("metadata")
    if isinstance(metadata, Mapping):
        for name in ("session_id", "user_id"):
            value = metadata.get(name)
            if isinstance(value, str) and value:
                return value
    return None


_PROMPT_FIELDS = ("tools", "system", "instructions", "messages", "input", "prompt")


def _canonical(body: Mapping[str, object], turns: int | None = None) -> bytes:
    """The prompt as one text: tools, system, then the turns (only the first ``turns``)."""
    parts = []
    for k in _PROMPT_FIELDS:
        if k in body:
            value = body[k]
            if turns is not None and k in ("messages", "input") and isinstance(value, list):
                value = value[:turns]
            parts.append(value)
    return orjson.dumps(parts)


def shared_blocks(body: Mapping[str, object], block_chars: int) -> int:
    """How many leading blocks come before the first user turn (tools, system prompt): blocks
    many conversations can share, which say nothing about which conversation this is."""
    turns = body.get("messages", body.get("input"))
    if not isinstance(turns, list):
        return 0
    first_user = next((i for i, t in enumerate(turns) if isinstance(t, Mapping) and t.get("role") == "user"), 0)
    return max(0, len(_canonical(body, first_user)) - 4) // block_chars  # less the closing brackets


def prefix_blocks(body: Mapping[str, object], block_chars: int) -> list[bytes]:
    """Chained hashes of the canonical prompt's fixed-size blocks: block *i*'s hash covers
    blocks 0..i, so equal hashes mean equal prefixes. Canonical prompt: the tools, then the
    messages (chat), the system, messages or input (agent APIs), or the prompt, serialised
    in order."""
    text = _canonical(body)
    out: list[bytes] = []
    previous = b""
    for start in range(0, len(text) - len(text) % block_chars, block_chars):  # whole blocks only
        previous = hashlib.blake2b(previous + text[start:start + block_chars], digest_size=8).digest()
        out.append(previous)
    return out


def conversation_head(body: Mapping[str, object]) -> bytes:
    """A key for the conversation a request belongs to: its tools and system prompt and the
    turns up to and including its first user turn — the same on every later turn."""
    turns = body.get("messages", body.get("input", body.get("prompt")))
    if isinstance(turns, list):
        end = next((i for i, t in enumerate(turns) if isinstance(t, Mapping) and t.get("role") == "user"),
                   len(turns) - 1)
        turns = turns[:end + 1]
    head = [body.get("tools"), body.get("system"), body.get("instructions"), turns]
    return hashlib.blake2b(orjson.dumps(head), digest_size=16).digest()


def _rank(key: bytes, urls: Sequence[str]) -> list[int]:
    """Replica indexes by rendezvous (highest random weight) hashing of ``key``."""
    weights = [hashlib.blake2b(key + url.encode(), digest_size=8).digest() for url in urls]
    return sorted(range(len(urls)), key=lambda i: weights[i], reverse=True)


@dataclass(slots=True)
class _Replica:
    url: str
    backend: Backend
    in_flight: int = 0
    failures: int = 0
    out_until: float = 0.0
    queue: float | None = None  # scraped
    saturated: bool = False
    draining: bool = False  # gone from discovery: no new requests; dropped once idle

    def load(self) -> float:
        return (self.queue or 0.0) + self.in_flight


@dataclass(frozen=True, slots=True)
class Choice:
    """Where a request goes and why (for explain and the request record)."""

    replica: int
    url: str
    why: str
    matched_blocks: int = 0
    new: bool = False  # a conversation not placed before (its head is announced to other processes)


@dataclass(slots=True)
class Placement:
    """The pure decision: which replica serves a request."""

    urls: list[str]
    spec: PlacementSpec = PlacementSpec()
    #: what rendezvous hashing ranks by: a listed replica's place in the policy's list (the same
    #: in every gateway process and whatever port or address it has), a discovered one's URL
    ids: list[str] | None = None
    index: OrderedDict[bytes, str] = field(default_factory=OrderedDict)  # prefix block → replica URL
    _turn: itertools.count[int] = field(default_factory=itertools.count)

    def choose(self, replicas: Sequence[_Replica], request: BackendRequest, now: float) -> tuple[Choice, list[bytes]]:
        live = [i for i, r in enumerate(replicas) if not r.draining]
        usable = [i for i in live if replicas[i].out_until <= now] or live
        strategy = self.spec.strategy
        if strategy == "round_robin":
            i = usable[next(self._turn) % len(usable)]
            return Choice(i, self.urls[i], "round robin"), []
        if strategy == "least_loaded":
            i = min(usable, key=lambda j: (replicas[j].load(), j))
            return Choice(i, self.urls[i], "least loaded"), []
        blocks = prefix_blocks(request.body, self.spec.block_chars)
        position = {url: i for i, url in enumerate(self.urls)}
        known = next(((n, position[self.index[h]]) for n, h in
                      zip(range(len(blocks), 0, -1), reversed(blocks), strict=True)
                      if h in self.index and self.index[h] in position), None)
        if known is not None and known[0] <= shared_blocks(request.body, self.spec.block_chars):
            known = None  # only the shared system prompt matched: not this conversation's cache
        matched = known[0] if known is not None else 0
        head = HEAD + conversation_head(request.body)
        blocks.append(head)  # remembered with the blocks once served: where this conversation lives
        key = session_key(request)
        if key is not None:
            order, why = _rank(b"s:" + key.encode(), self.ids or self.urls), "session"
        else:
            ranked = _rank(head, self.ids or self.urls)
            placed = known[1] if known is not None else position.get(self.index.get(head, ""))
            if placed is None:  # a new conversation: the least loaded replica, rendezvous order on ties
                order = [i for i in ranked if i in usable]
                i = min(order, key=lambda j: replicas[j].load())  # min keeps the first of equals
                why = "new conversation" + (": least loaded" if i != order[0] else "")
                return Choice(i, self.urls[i], why, 0, new=True), blocks
            order = [placed, *(j for j in ranked if j != placed)]
            why = "prefix" if known is not None else "conversation"
        order = [i for i in order if i in usable]
        preferred = order[0]
        replica = replicas[preferred]
        limit = self.spec.saturated_at
        replica.saturated = replica.load() >= (limit * self.spec.resume_below if replica.saturated else limit)
        if replica.saturated:
            lighter = min(order, key=lambda j: (replicas[j].load(), j))
            if replicas[lighter].load() < replica.load():
                return Choice(lighter, self.urls[lighter], f"{why}: {self.urls[preferred]} saturated, least loaded",
                              matched), blocks
        return Choice(preferred, self.urls[preferred], why, matched), blocks

    def served(self, replica: int, blocks: list[bytes]) -> None:
        """Remember that ``replica`` now holds these prefix blocks (its KV cache does)."""
        index, url = self.index, self.urls[replica]
        for h in blocks:
            index[h] = url
            index.move_to_end(h)
        while len(index) > INDEX_SIZE:
            index.popitem(last=False)

    def learn(self, head: bytes, replica_id: str) -> bool:
        """Another process placed the conversation with this head on ``replica_id`` (an id
        from ``ids``, else a URL). False when this pool has no such replica."""
        ids = self.ids or self.urls
        if replica_id not in ids:
            return False
        self.served(ids.index(replica_id), [HEAD + head])
        return True

    def replica_id(self, replica: int) -> str:
        return (self.ids or self.urls)[replica]


class _CountedStream:
    """A replica's stream that leaves its in-flight count when it is closed or ends."""

    __slots__ = ("_inner", "_events", "_pool", "_replica", "_done", "_over", "replica", "ready")

    def __init__(self, inner: BackendStream, pool: ReplicaPool, replica: _Replica, index: int) -> None:
        self._inner, self._pool, self._replica, self._done, self._over = inner, pool, replica, False, False
        self._events = aiter(inner)
        self.replica = index  # which replica (``x-switchyard-replica``)
        self.ready = stream_ready(inner)

    def __aiter__(self) -> _CountedStream:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await anext(self._events)
        except StopAsyncIteration:
            if not self._over:
                self._over = True
                self._pool.succeeded(self._replica)
            raise
        except BackendError:
            self._over = True
            self._pool.failed(self._replica)
            raise

    async def aclose(self) -> None:
        if not self._done:
            self._done = True
            self._replica.in_flight -= 1
        await self._inner.aclose()


async def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (A and AAAA records), sorted, without duplicates."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


@dataclass(frozen=True, slots=True)
class Discovery:
    """Replicas found in DNS: every address of ``host`` is a replica at
    ``scheme://address:port`` + ``path`` (a Kubernetes headless service), re-resolved every
    ``interval_s`` (when the pool's load is scraped, and before the first request)."""

    host: str
    port: int
    scheme: str = "http"
    path: str = "/v1"
    interval_s: float = 10.0

    def url(self, address: str) -> str:
        host = f"[{address}]" if ":" in address else address
        return f"{self.scheme}://{host}:{self.port}{self.path}"


class ReplicaPool:
    """A ``Backend`` over replicas of one model (see the module docstring). Its replicas are
    fixed, or found in DNS (``discovery``): a replica that leaves DNS drains — no new
    requests, dropped once its in-flight ones are done — and a new one joins at once."""

    def __init__(self, name: str, replicas: Sequence[tuple[str, Backend]], spec: PlacementSpec, *,
                 discovery: Discovery | None = None, make: Callable[[str], Backend] | None = None,
                 resolver: Callable[[str, int], Awaitable[list[str]]] = resolve) -> None:
        if not replicas and discovery is None:
            raise ValueError("a pool needs at least one replica")
        if discovery is not None and make is None:
            raise ValueError("a discovered pool needs a way to make its replicas")
        self.name = name
        self.self_hosted = True
        self.replicas = [_Replica(url, backend) for url, backend in replicas]
        listed = None if discovery is not None else [f"replica-{i}" for i in range(len(replicas))]
        self.placement = Placement([url for url, _ in replicas], spec, ids=listed)
        self._discovery, self._make, self._resolver = discovery, make, resolver
        self._resolved_at: float | None = None
        self._retired: list[Backend] = []
        #: called with (conversation head, replica id) when a new conversation is placed: the
        #: router tells the other gateway processes (``learn`` on their side)
        self.announce: Callable[[bytes, str], None] | None = None

    def learn(self, head: bytes, replica_id: str) -> bool:
        """Another gateway process placed the conversation with this head on ``replica_id``."""
        return self.placement.learn(head, replica_id)

    async def refresh(self) -> None:
        """Re-resolve a discovered pool now (DNS errors keep the replicas it has)."""
        discovery = self._discovery
        if discovery is None or self._make is None:
            return
        self._resolved_at = time.monotonic()
        try:
            urls = [discovery.url(a) for a in await self._resolver(discovery.host, discovery.port)]
        except OSError as exc:
            log.warning("pool %s: resolving %s failed (%s); keeping %d replicas", self.name, discovery.host, exc,
                        len(self.replicas))
            self._drop_idle()  # those that had left already still go once idle
            return
        current = {r.url for r in self.replicas}
        for url in urls:
            if url not in current:
                log.info("pool %s: replica %s joined", self.name, url)
                self.replicas.append(_Replica(url, self._make(url)))
        wanted = set(urls)
        for replica in self.replicas:
            if replica.url not in wanted and not replica.draining:
                log.info("pool %s: replica %s left DNS; draining", self.name, replica.url)
            replica.draining = replica.url not in wanted
        self._drop_idle()

    def _drop_idle(self) -> None:
        gone = [r for r in self.replicas if r.draining and r.in_flight == 0]
        if gone:
            self.replicas = [r for r in self.replicas if r not in gone]
            self._retired.extend(r.backend for r in gone)
        self.placement.urls = [r.url for r in self.replicas]

    async def _ensure(self) -> None:
        if self._discovery is not None and self._resolved_at is None:
            await self.refresh()

    def _place(self, request: BackendRequest) -> tuple[_Replica, list[bytes]]:
        if not any(not r.draining for r in self.replicas):
            raise UpstreamConnectError(f"{self.name}: no replicas (none found in DNS yet)", backend=self.name)
        choice, blocks = self.placement.choose(self.replicas, request, time.monotonic())
        replica = self.replicas[choice.replica]
        replica.in_flight += 1
        if choice.new and self.announce is not None and blocks:
            self.announce(blocks[-1][len(HEAD):], self.placement.replica_id(choice.replica))
        return replica, blocks

    def preview(self, request: BackendRequest) -> Choice:
        """Where ``request`` would go now, changing nothing (explain)."""
        if self.placement.spec.strategy == "round_robin":
            return Choice(-1, "", "round robin: the next replica in turn")
        saved = [r.saturated for r in self.replicas]
        try:
            return self.placement.choose(self.replicas, request, time.monotonic())[0]
        finally:
            for replica, flag in zip(self.replicas, saved, strict=True):
                replica.saturated = flag

    def failed(self, replica: _Replica) -> None:
        replica.failures += 1
        if replica.failures >= self.placement.spec.failures:
            replica.out_until = time.monotonic() + self.placement.spec.cooldown_s

    def succeeded(self, replica: _Replica) -> None:
        replica.failures, replica.out_until = 0, 0.0

    async def complete(self, request: BackendRequest) -> BackendResponse:
        await self._ensure()
        replica, blocks = self._place(request)
        try:
            response = await replica.backend.complete(request)
        except BackendError as exc:
            if _counts(exc):
                self.failed(replica)
            raise
        finally:
            replica.in_flight -= 1
        self.succeeded(replica)
        index = self.replicas.index(replica)
        self.placement.served(index, blocks)
        return dataclasses.replace(response, replica=index)

    async def open_stream(self, request: BackendRequest) -> BackendStream:
        await self._ensure()
        replica, blocks = self._place(request)
        try:
            stream = await replica.backend.open_stream(request)
        except BaseException as exc:
            replica.in_flight -= 1
            if isinstance(exc, BackendError) and _counts(exc):
                self.failed(replica)
            raise
        index = self.replicas.index(replica)
        self.placement.served(index, blocks)
        return _CountedStream(stream, self, replica, index)

    async def health(self) -> Health:
        results = await asyncio.gather(*(r.backend.health() for r in self.replicas))
        ok = sum(h.ok for h in results)
        detail = "; ".join(f"{r.url}: {h.detail}" for r, h in zip(self.replicas, results, strict=True))
        return Health(ok > 0, f"{ok}/{len(results)} replicas healthy ({detail})")

    async def load(self) -> LoadSample | None:
        """Each replica's own load; the pool's is the *least* loaded replica's (spillover
        leaves a pool only when every replica is over its threshold), with the number of
        replicas sampled and their total of waiting + running requests (the latency prediction). A discovered pool is
        re-resolved here when its interval has passed."""
        discovery = self._discovery
        if discovery is not None and (self._resolved_at is None
                                      or time.monotonic() - self._resolved_at >= discovery.interval_s):
            await self.refresh()
        else:
            self._drop_idle()
        for backend in self._retired:
            await backend.close()
        self._retired.clear()
        if not self.replicas:
            return None
        samples = await asyncio.gather(*(r.backend.load() for r in self.replicas), return_exceptions=True)
        usable: list[LoadSample] = []
        for replica, sample in zip(self.replicas, samples, strict=True):
            if isinstance(sample, LoadSample):
                replica.queue = sample.queue
                usable.append(sample)
            else:
                replica.queue = None
        if not usable:
            first = next((s for s in samples if isinstance(s, BaseException)), None)
            if isinstance(first, BackendError):
                raise first
            return None
        least = min(usable, key=lambda s: ((s.queue or 0.0) + (s.running or 0.0), s.kv_cache or 0.0))
        total = sum((s.queue or 0.0) + (s.running or 0.0) for s in usable)
        return dataclasses.replace(least, servers=len(usable), total_busy=total)

    def snapshot(self) -> list[dict[str, object]]:
        now = time.monotonic()
        return [{"url": r.url, "in_flight": r.in_flight, "queue": r.queue, "failures": r.failures,
                 "out_for_s": max(0.0, round(r.out_until - now, 1)), "saturated": r.saturated,
                 "draining": r.draining}
                for r in self.replicas]

    async def close(self) -> None:
        for backend in [*(r.backend for r in self.replicas), *self._retired]:
            await backend.close()


def _counts(exc: BackendError) -> bool:
    """Failures that say the replica is unwell (not the request): connection, timeouts, 5xx."""
    return isinstance(exc, UpstreamConnectError) or exc.retryable
