"""Stored responses: what ``previous_response_id`` continues and ``GET``/``DELETE
/v1/responses/{id}`` read, kept in the shared store (memory or Redis) as blobs.

One record per response: the Response object as the client got it, the conversation up to
and including it as chat messages (what the next turn sends upstream, before its own
input), and the **sensitivity level** the conversation has reached — the highest level of
any of its turns. A continuation is scanned again with its whole history *and* starts at
that level (a floor): a conversation that once carried data above a rule's ``closed_max``
stays home for the rest of its life, even if the data that lifted it is no longer
detectable (a client-declared floor, a detector since removed).

Records are tenant-scoped (the key holds the team: another team's id is "not found"), kept
``ttl_s`` (default 30 days, ``SWITCHYARD_RESPONSES_TTL_S``), and at most ``MAX_RECORD_BYTES``
each (a larger conversation is answered but not stored). In memory they share the response
cache's byte cap (``cache.max_memory_mb``, least recently used first out); in Redis,
``maxmemory`` applies.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from policies import LEVELS
from router.state.store import Store

__all__ = ["MAX_RECORD_BYTES", "ResponseStore", "StoredResponse", "higher_level"]

MAX_RECORD_BYTES = 16 * 1024 * 1024
DEFAULT_TTL_S = 30 * 24 * 3600


def higher_level(a: str | None, b: str | None) -> str | None:
    if a is None or b is None:
        return a or b
    return a if LEVELS.index(a) >= LEVELS.index(b) else b


@dataclass(frozen=True, slots=True)
class StoredResponse:
    response: dict[str, object]
    messages: list[dict[str, object]]
    level: str


class ResponseStore:
    def __init__(self, store: Store, ttl_s: int = DEFAULT_TTL_S) -> None:
        self.store, self.ttl_s = store, ttl_s

    @staticmethod
    def _key(team: str | None, response_id: str) -> str:
        return f"{{{team or '-'}}}:response:{response_id}"

    async def get(self, team: str | None, response_id: str) -> StoredResponse | None:
        """Raises ``StoreUnavailable`` when the store cannot answer."""
        raw = await self.store.get_blob(self._key(team, response_id))
        if raw is None:
            return None
        record = orjson.loads(raw)
        if not isinstance(record, dict) or record.get("deleted"):
            return None
        return StoredResponse(record["response"], record["messages"], record["level"])

    async def put(self, team: str | None, stored: StoredResponse) -> bool:
        """False when the record is too large to keep. Raises ``StoreUnavailable``."""
        raw = orjson.dumps({"response": stored.response, "messages": stored.messages, "level": stored.level})
        if len(raw) > MAX_RECORD_BYTES:
            return False
        await self.store.set_blob(self._key(team, str(stored.response["id"])), raw, self.ttl_s)
        return True

    async def delete(self, team: str | None, response_id: str) -> bool:
        """Whether there was such a response. Raises ``StoreUnavailable``."""
        key = self._key(team, response_id)
        if await self.get(team, response_id) is None:
            return False
        await self.store.set_blob(key, b'{"deleted": true}', self.ttl_s)  # a tombstone: no delete in the protocol
        return True
