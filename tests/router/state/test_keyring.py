"""``KeyRing``'s memory of unknown keys (issue 11, item 4): a key the store does not know
costs one store lookup per TTL however often it is tried; the memory is bounded (least
recently seen dropped first); a key created in this process is never refused from it."""

from __future__ import annotations

import time

import pytest

from policies import Policy, load_policy_text
from router.runtime import KIND_TABLE
from router.state.keys import UNKNOWN_TTL_S, AuthError, KeyRing, hash_key
from router.state.memory_store import MemoryStore
from router.state.store import KeyRecord

POLICY = """
version: 1
backends:
  gpu: {kind: vllm, base_url: 'http://127.0.0.1:9/v1', model: m}
models:
  chat: {targets: [gpu]}
teams:
  search: {keys: ["sk-policy-key-1"]}
"""


class CountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.lookups: list[str] = []

    async def get_key(self, key_hash: str) -> KeyRecord | None:
        self.lookups.append(key_hash)
        return await super().get_key(key_hash)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def policy() -> Policy:
    return load_policy_text(POLICY, {}, kinds=KIND_TABLE).policy


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def refused(ring: KeyRing, key: str) -> None:
    with pytest.raises(AuthError) as info:
        await ring.authenticate(bearer(key))
    assert info.value.code == "invalid_api_key"


async def test_an_unknown_key_is_looked_up_once_per_ttl() -> None:
    store, clock = CountingStore(), Clock()
    ring = KeyRing(policy(), store, clock=clock)
    for _ in range(50):
        await refused(ring, "sk-sy-nobody")
    assert len(store.lookups) == 1
    clock.now += UNKNOWN_TTL_S - 0.01
    await refused(ring, "sk-sy-nobody")
    assert len(store.lookups) == 1
    clock.now += 0.02  # the TTL is over: asked again
    await refused(ring, "sk-sy-nobody")
    assert len(store.lookups) == 2
    await ring.authenticate(bearer("sk-policy-key-1"))  # policy keys never ask the store
    assert len(store.lookups) == 2


async def test_the_memory_is_bounded_least_recently_seen_first() -> None:
    store = CountingStore()
    ring = KeyRing(policy(), store, unknown_max=3, clock=Clock())
    for key in ("k-one", "k-two", "k-three"):
        await refused(ring, key)
    await refused(ring, "k-one")  # seen again: now the most recent
    await refused(ring, "k-four")  # evicts the least recently seen: k-two
    assert len(store.lookups) == 4
    await refused(ring, "k-one")
    assert len(store.lookups) == 4
    await refused(ring, "k-two")
    assert len(store.lookups) == 5 and store.lookups[-1] == hash_key("k-two")
    assert len(ring._unknown) == 3


async def test_a_key_created_after_being_tried_works_at_once_here() -> None:
    store = CountingStore()
    ring = KeyRing(policy(), store, clock=Clock())
    await refused(ring, "sk-sy-later")
    record = KeyRecord(hash_key("sk-sy-later"), "search", created_at=time.time())
    await store.put_key(record)
    await refused(ring, "sk-sy-later")  # elsewhere: refused until the TTL is over
    ring.forget(record.key_hash)  # created in this process (the admin API does this)
    principal = await ring.authenticate(bearer("sk-sy-later"))
    assert principal.team == "search"
