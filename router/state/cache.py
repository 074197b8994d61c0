"""The response cache: exact match on the normalised request, scoped to the team unless the
policy says ``scope: global``, kept in the store (Redis when configured, so every replica
sees the same entries).

- Key: sha256 of the alias, every parameter that changes the output (the whole body except
  ``stream``, ``stream_options``, ``user`` and ``metadata``), and the scope.
- Only complete, successful, non-recovered answers are stored: JSON answers, and chat
  streams that finished cleanly with usage (``stream_options.include_usage``), no tool calls
  and no recovery — stored as the JSON answer they stand for (``ChunkTracker.as_answer``).
  A streamed request is served from the cache as a replayed SSE stream. Entries over
  ``max_entry_kb`` are not stored.
- A hit is served only if the backend that produced it is in this request's allowed set
  (the sensitivity invariant), and costs $0.
- ``Cache-Control: no-cache`` skips the lookup (the answer is still stored); ``no-store``
  skips both. Identical concurrent misses are coalesced into one upstream call: in one
  process by a shared future (``coalesce``); across replicas (team scope) by a lock taken in
  the admission script — the others ``wait`` for the entry, up to ``coalesce_s``.
- The store being down means a miss, never an error.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import orjson

from policies import CacheSpec
from router.state.store import BlobStore, StoreUnavailable

__all__ = ["CachedAnswer", "ResponseCache", "replay_sse"]

log = logging.getLogger("switchyard.cache")
_IGNORED = frozenset({"stream", "stream_options", "user", "metadata"})


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    backend: str
    body: bytes  # the OpenAI JSON answer

    def encode(self) -> bytes:
        return orjson.dumps({"backend": self.backend, "body": self.body.decode()})

    @classmethod
    def decode(cls, raw: bytes) -> CachedAnswer | None:
        try:
            data = orjson.loads(raw)
            return cls(str(data["backend"]), str(data["body"]).encode())
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return None


class ResponseCache:
    def __init__(self, spec: CacheSpec, store: BlobStore) -> None:
        self.spec = spec
        self._store = store
        #: identical misses in flight in this process, by (entry key, the asking requests' allowed set)
        self._inflight: dict[tuple[str, frozenset[str]], asyncio.Future[CachedAnswer | None]] = {}

    @property
    def enabled(self) -> bool:
        return self.spec.mode == "exact"

    def key(self, alias: str, endpoint: str, body: Mapping[str, object], team: str | None) -> str:
        """``{team}:<sha256>`` (``{global}:…`` with ``scope: global``): a team-scoped entry shares
        the team's Redis Cluster slot, so the admission script can read it with the team's limits."""
        tag = "global" if self.spec.scope == "global" else (team or "-")
        material = {k: v for k, v in body.items() if k not in _IGNORED}
        digest = hashlib.sha256(orjson.dumps([self.spec.scope, tag, endpoint, alias, material],
                                             option=orjson.OPT_SORT_KEYS))
        return f"{{{tag}}}:{digest.hexdigest()}"

    def accept(self, raw: bytes | None, allowed: frozenset[str]) -> CachedAnswer | None:
        """A stored entry as an answer for this request: only if its backend is allowed to see it."""
        answer = CachedAnswer.decode(raw) if raw else None
        return answer if answer is not None and answer.backend in allowed else None

    async def get(self, key: str, allowed: frozenset[str]) -> CachedAnswer | None:
        try:
            raw = await self._store.get_blob(key)
        except StoreUnavailable as exc:
            log.warning("cache lookup skipped: %s", exc)
            return None
        return self.accept(raw, allowed)

    def entry(self, key: str, answer: CachedAnswer) -> tuple[str, bytes, int] | None:
        """What ``put`` stores, as (key, value, ttl_s) — ``None`` when over ``max_entry_kb``."""
        if len(answer.body) > self.spec.max_entry_kb * 1024:
            return None
        return key, answer.encode(), self.spec.ttl_s

    async def put(self, key: str, answer: CachedAnswer) -> None:
        entry = self.entry(key, answer)
        if entry is None:
            return
        try:
            await self._store.set_blob(*entry)
        except StoreUnavailable as exc:
            log.warning("cache store skipped: %s", exc)

    def in_flight(self, key: str, allowed: frozenset[str]) -> bool:
        """An identical request with the same allowed set is being answered by this process
        (``coalesce`` joins it)."""
        return (key, allowed) in self._inflight

    async def wait(self, key: str, allowed: frozenset[str]) -> CachedAnswer | None:
        """Another replica holds this entry's lock (it is asking the upstream): wait for the
        entry it stores, up to ``coalesce_s``. ``None`` — it failed, its answer may not be
        cached, the lock expired or the store is down — means: ask the upstream yourself."""
        deadline = asyncio.get_running_loop().time() + self.spec.coalesce_s
        pause = 0.005
        try:
            while True:
                raw, locked = await self._store.probe(key)
                if raw is not None:
                    return self.accept(raw, allowed)
                if not locked or asyncio.get_running_loop().time() + pause > deadline:
                    return None
                await asyncio.sleep(pause)  # a bounded poll: the holder's answer is on its way
                pause = min(pause * 2, 0.1)
        except StoreUnavailable as exc:
            log.warning("cache wait skipped: %s", exc)
            return None

    async def unlock(self, key: str) -> None:
        try:
            await self._store.unlock(key)
        except StoreUnavailable as exc:
            log.warning("cache unlock skipped (the lock expires by itself): %s", exc)

    async def coalesce(self, key: str, allowed: frozenset[str],
                       produce: Callable[[], Awaitable[CachedAnswer | None]]) -> tuple[CachedAnswer | None, bool]:
        """Run ``produce`` once for concurrent identical misses that may see the same backends
        (a request raised to a higher sensitivity never joins one that may leave); returns
        (answer, shared) where ``shared`` is True for the waiters that got the leader's answer —
        only ever an answer from a backend in ``allowed``."""
        flight = (key, allowed)
        leader = self._inflight.get(flight)
        if leader is not None:
            shared = await asyncio.shield(leader)
            return (shared, True) if shared is None or shared.backend in allowed else (None, True)
        future: asyncio.Future[CachedAnswer | None] = asyncio.get_running_loop().create_future()
        self._inflight[flight] = future
        try:
            answer = await produce()
            future.set_result(answer)
            return answer, False
        except BaseException:
            future.set_result(None)  # waiters go upstream themselves
            raise
        finally:
            del self._inflight[flight]


def replay_sse(body: bytes, include_usage: bool) -> list[bytes]:
    """A cached chat/completions JSON answer as a valid SSE stream (role, content, finish,
    usage when asked, ``[DONE]``)."""
    data = orjson.loads(body)
    base = {k: data.get(k) for k in ("id", "created", "model", "system_fingerprint")}
    chat = data.get("object") == "chat.completion"
    base["object"] = "chat.completion.chunk" if chat else "text_completion"
    events = []
    for choice in data.get("choices") or []:
        index = choice.get("index", 0)
        if chat:
            message = choice.get("message") or {}
            delta = {k: v for k, v in message.items() if v is not None}
            events.append({**base, "choices": [{"index": index, "delta": delta, "finish_reason": None}]})
            events.append({**base, "choices": [{"index": index, "delta": {},
                                                "finish_reason": choice.get("finish_reason")}]})
        else:
            events.append({**base, "choices": [{"index": index, "text": choice.get("text", ""),
                                                "finish_reason": choice.get("finish_reason")}]})
    if include_usage and data.get("usage") is not None:
        events.append({**base, "choices": [], "usage": data["usage"]})
    return [b"data: " + orjson.dumps(e) + b"\n\n" for e in events] + [b"data: [DONE]\n\n"]
