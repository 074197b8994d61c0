"""The in-memory store caps cached answers in bytes, not only in number (issue 11, item 10:
10,000 entries of 256 KB were 2.5 GB): ``cache.max_memory_mb`` → ``MemoryStore.max_blob_bytes``,
least recently used first, and the accounting matches what is held. No network."""

from __future__ import annotations

import tracemalloc

import aiohttp

from policies import load_policy_text
from router.gateway import build_gateway
from router.runtime import KIND_TABLE, build_runtime
from router.state.cache import CachedAnswer
from router.state.memory_store import BLOB_OVERHEAD, MemoryStore, blob_cost

KB = 1024
MB = 1024 * KB


def held(store: MemoryStore, keys: list[str]) -> list[str]:
    return [k for k in keys if k in store._blobs]


async def test_storing_beyond_the_cap_evicts_the_least_recently_used():
    store = MemoryStore(max_blob_bytes=10 * (64 * KB + BLOB_OVERHEAD + 8))
    keys = [f"k{i:06d}" for i in range(30)]
    for i, key in enumerate(keys):
        await store.set_blob(key, bytes(64 * KB), 60)
        assert store.blob_bytes <= store.max_blob_bytes
        if i == 5:
            assert await store.get_blob(keys[0]) is not None  # read: now the most recently used
    kept = held(store, keys)
    assert len(kept) == 10 and kept == keys[20:]  # the read one went later, but went
    assert store.blob_bytes == sum(blob_cost(k, bytes(64 * KB)) for k in kept)


async def test_a_read_entry_outlives_older_ones():
    store = MemoryStore(max_blob_bytes=3 * blob_cost("k0", bytes(KB)))
    for key in ("k0", "k1", "k2"):
        await store.set_blob(key, bytes(KB), 60)
    await store.get_blob("k0")
    await store.set_blob("k3", bytes(KB), 60)
    assert held(store, ["k0", "k1", "k2", "k3"]) == ["k0", "k2", "k3"]


async def test_accounting_is_exact_across_replacements_expiry_and_a_lower_cap():
    store = MemoryStore(max_blob_bytes=MB)
    for size in (10 * KB, 30 * KB, 5 * KB):  # the same key, replaced
        await store.set_blob("same", bytes(size), 60)
        assert store.blob_bytes == blob_cost("same", bytes(size))
    await store.set_blob("gone", bytes(KB), 0)  # expired at once
    assert await store.get_blob("gone") is None
    assert store.blob_bytes == blob_cost("same", bytes(5 * KB))
    assert await store.get_blob("nothing") is None
    for i in range(20):
        await store.set_blob(f"x{i}", bytes(20 * KB), 60)
    store.max_blob_bytes = 100 * KB  # a reload lowered it: applies at once
    assert store.blob_bytes <= 100 * KB
    assert store.blob_bytes == sum(blob_cost(k, v) for k, (v, _) in store._blobs.items())


async def test_an_entry_larger_than_the_whole_cache_is_not_stored():
    store = MemoryStore(max_blob_bytes=64 * KB)
    await store.set_blob("small", bytes(KB), 60)
    await store.set_blob("huge", bytes(128 * KB), 60)
    assert await store.get_blob("huge") is None
    assert await store.get_blob("small") is not None  # and it evicted nothing


async def test_the_policy_sets_the_cap_and_memory_stays_under_it():
    """Through the gateway's cache, as the issue found it: 2,000 answers of 256 KB (500 MB)
    into a cache capped at 16 MB hold at most about 16 MB."""
    policy = load_policy_text("""version: 1
backends:
  local: {kind: vllm, base_url: 'http://127.0.0.1:9/v1', model: m}
models:
  chat: {targets: [local]}
cache: {mode: exact, max_entry_kb: 300, max_memory_mb: 16}
""", {}, kinds=KIND_TABLE)
    store = MemoryStore()
    async with aiohttp.ClientSession() as session:
        gateway = build_gateway(build_runtime(policy, session), store)
        assert store.max_blob_bytes == 16 * MB
        body = b'{"choices": [{"message": {"content": "' + b"x" * (256 * KB) + b'"}}]}'
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            for i in range(2000):
                key = gateway.cache.key("chat", "chat", {"messages": [{"role": "user", "content": str(i)}]}, "t")
                await gateway.cache.put(key, CachedAnswer("local", body))
                assert store.blob_bytes <= 16 * MB
            grown = tracemalloc.get_traced_memory()[0] - base
        finally:
            tracemalloc.stop()
        await gateway.runtime.close()
    assert len(store._blobs) == 16 * MB // blob_cost(key, CachedAnswer("local", body).encode())
    assert grown <= 17 * MB, f"{grown / MB:.1f} MB held by a cache capped at 16 MB"
