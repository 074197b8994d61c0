"""Replica pools: placement (session and prefix affinity, rendezvous hashing that several
gateway processes agree on, load with hysteresis, failing replicas taken out) and the pool
as one backend (in-flight counts, health, aggregate load). Pure and in-memory."""

from __future__ import annotations

import pytest

from backends.metrics import LoadSample
from backends.pool import Placement, PlacementSpec, ReplicaPool, _Replica, prefix_blocks, session_key
from backends.types import BackendRequest, BackendResponse, Health

URLS = ["http://r0:8000/v1", "http://r1:8000/v1", "http://r2:8000/v1"]
SYSTEM = "You are a helpful assistant. " * 60  # a long shared system prompt: several blocks


def chat(*turns: str, **extra: object) -> BackendRequest:
    messages = [{"role": "system", "content": SYSTEM}]
    for i, text in enumerate(turns):
        messages.append({"role": "user" if i % 2 == 0 else "assistant", "content": text})
    return BackendRequest("chat", {"model": "m", "messages": messages, **extra}, False, "rid")


def replicas() -> list[_Replica]:
    return [_Replica(url, None) for url in URLS]  # type: ignore[arg-type]


def test_prefix_blocks_are_chained_so_equal_hashes_mean_equal_prefixes() -> None:
    a = prefix_blocks(chat("conversation A " * 100).body, 256)
    b = prefix_blocks(chat("conversation B " * 100).body, 256)
    assert a[0] == b[0]  # the shared system prompt
    first_diff = next(i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y)
    assert all(x != y for x, y in zip(a[first_diff:], b[first_diff:], strict=False))  # chained: never equal again


def test_a_conversations_next_turn_goes_where_its_prefix_was_served() -> None:
    placement = Placement(URLS, PlacementSpec(block_chars=256))
    r = replicas()
    first, blocks = placement.choose(r, chat("tell me about " + "x" * 600), now=0)
    placement.served(first.replica, blocks)
    follow, _ = placement.choose(r, chat("tell me about " + "x" * 600, "answer " * 50, "and more?"), now=0)
    assert follow.replica == first.replica and follow.why == "prefix" and follow.matched_blocks >= 3


def test_processes_without_a_shared_index_agree_by_rendezvous_hashing() -> None:
    """Three gateway processes, each with its own (empty) index, place a conversation alike."""
    request = chat("plan a trip " * 80)
    picks = {Placement(URLS, PlacementSpec(block_chars=256)).choose(replicas(), request, now=0)[0].replica
             for _ in range(3)}
    assert len(picks) == 1


def test_conversations_that_share_only_a_long_system_prompt_spread_over_the_replicas() -> None:
    placement = Placement(URLS, PlacementSpec(block_chars=64))
    counts = [0, 0, 0]
    for n in range(300):
        counts[placement.choose(replicas(), chat(f"topic {n} " * 20), now=0)[0].replica] += 1
    assert min(counts) > 60, counts  # rendezvous hashing on each conversation's head


@pytest.mark.parametrize("given", [
    {"session": "s-1"}, {"body": {"prompt_cache_key": "s-1"}}, {"body": {"user": "s-1"}},
    {"body": {"metadata": {"session_id": "s-1"}}}, {"body": {"metadata": {"user_id": "s-1"}}},
])
def test_a_session_key_from_any_of_its_sources_pins_the_session(given: dict) -> None:
    request = BackendRequest("chat", {"messages": [], **given.get("body", {})}, False, "r", session=given.get("session"))
    assert session_key(request) == "s-1"
    placement = Placement(URLS)
    picks = {placement.choose(replicas(), BackendRequest("chat", {"messages": [{"role": "user", "content": t}],
                                                                  **given.get("body", {})}, False, "r",
                                                         session=given.get("session")), now=0)[0].replica
             for t in ("one", "two", "three: a different prompt entirely")}
    assert len(picks) == 1


def test_a_saturated_replica_yields_then_gets_traffic_back_with_hysteresis() -> None:
    placement = Placement(URLS, PlacementSpec(saturated_at=4, resume_below=0.5))
    r = replicas()
    request = chat("q", prompt_cache_key="sess")
    home = placement.choose(r, request, now=0)[0].replica
    r[home].queue = 5
    moved = placement.choose(r, request, now=0)[0]
    assert moved.replica != home and "saturated" in moved.why
    r[home].queue = 3  # under the threshold, not yet under resume_below × it
    assert placement.choose(r, request, now=0)[0].replica != home
    r[home].queue = 1
    assert placement.choose(r, request, now=0)[0].replica == home


def test_a_new_conversation_goes_to_the_least_loaded_replica_and_its_turns_follow_it() -> None:
    """Its first user turn is shorter than a block: the head index, not the prefix, finds it."""
    placement = Placement(URLS, PlacementSpec(block_chars=4096))
    r = replicas()
    ranked = placement.choose(r, chat("hi, where is my order?"), now=0)[0]
    assert ranked.new and ranked.why == "new conversation"  # an idle pool: rendezvous order
    r[ranked.replica].in_flight = 2
    first, blocks = placement.choose(r, chat("hi, where is my order?"), now=0)
    assert first.replica != ranked.replica and first.why == "new conversation: least loaded"
    placement.served(first.replica, blocks)
    r[first.replica].in_flight = 1  # busier than one, not saturated: the turn stays home
    follow, _ = placement.choose(r, chat("hi, where is my order?", "On its way.", "When?"), now=0)
    assert (follow.replica, follow.why, follow.new) == (first.replica, "conversation", False)


def test_another_process_learns_where_a_conversation_was_placed() -> None:
    here, there = Placement(URLS, ids=["replica-0", "replica-1", "replica-2"]), \
        Placement(URLS, ids=["replica-0", "replica-1", "replica-2"])
    r = replicas()
    r[0].in_flight = r[1].in_flight = 3  # here, replica 2 is the least loaded
    first, blocks = here.choose(r, chat("hello"), now=0)
    assert first.replica == 2 and first.new
    assert there.learn(blocks[-1][1:], here.replica_id(first.replica))  # what the announcement carries
    follow, _ = there.choose(replicas(), chat("hello", "Hi!", "and then?"), now=0)
    assert follow.replica == 2 and follow.why == "conversation"
    assert not there.learn(blocks[-1][1:], "replica-9")  # not in this pool: ignored


async def test_a_pool_announces_each_new_conversation_once() -> None:
    fakes = [_Fake("a"), _Fake("b"), _Fake("c")]
    pool = ReplicaPool("gpu", list(zip(URLS, fakes, strict=True)), PlacementSpec())
    said: list[tuple[bytes, str]] = []
    pool.announce = lambda head, replica: said.append((head, replica))
    await pool.complete(chat("hello"))
    await pool.complete(chat("hello", "Hi!", "and then?"))
    await pool.complete(chat("something else"))
    assert len(said) == 2 and all(len(h) == 16 and rid.startswith("replica-") for h, rid in said)


def test_a_replica_taken_out_is_skipped_until_its_cooldown_ends() -> None:
    placement = Placement(URLS)
    r = replicas()
    request = chat("q", prompt_cache_key="sess")
    home = placement.choose(r, request, now=0)[0].replica
    r[home].out_until = 10.0
    assert placement.choose(r, request, now=5)[0].replica != home
    assert placement.choose(r, request, now=11)[0].replica == home


def test_round_robin_and_least_loaded_are_there_to_compare() -> None:
    rr = Placement(URLS, PlacementSpec(strategy="round_robin"))
    assert [rr.choose(replicas(), chat("q"), now=0)[0].replica for _ in range(4)] == [0, 1, 2, 0]
    ll = Placement(URLS, PlacementSpec(strategy="least_loaded"))
    r = replicas()
    r[0].queue, r[1].queue, r[2].queue = 3, 0, 1
    assert ll.choose(r, chat("q"), now=0)[0].replica == 1


class _Fake:
    def __init__(self, name: str, fail: bool = False, queue: float | None = None) -> None:
        self.name, self.self_hosted, self.fail, self.queue, self.calls = name, True, fail, queue, 0

    async def complete(self, request: BackendRequest) -> BackendResponse:
        from backends.errors import UpstreamServerError

        self.calls += 1
        if self.fail:
            raise UpstreamServerError("down", backend=self.name, status=503)
        return BackendResponse(body=b"{}")

    async def health(self) -> Health:
        return Health(not self.fail, "ok" if not self.fail else "down")

    async def load(self) -> LoadSample | None:
        return LoadSample(self.queue, 0, None) if self.queue is not None else None

    async def close(self) -> None:
        return None


async def test_the_pool_is_one_backend_with_per_replica_failures_and_load() -> None:
    fakes = [_Fake("a", queue=7), _Fake("b", queue=2), _Fake("c", queue=5)]
    pool = ReplicaPool("gpu", list(zip(URLS, fakes, strict=True)), PlacementSpec(failures=1, cooldown_s=60))
    request = chat("q", prompt_cache_key="sess")
    order = pool.placement.choose(pool.replicas, request, now=0)[0].replica
    fakes[order].fail = True
    served = 0
    for _ in range(3):
        try:
            await pool.complete(request)
            served += 1
        except Exception:  # noqa: BLE001 - the engine would fail over to the next attempt
            pass
    assert served >= 2 and all(r.in_flight == 0 for r in pool.replicas)
    assert pool.replicas[order].out_until > 0  # taken out after one failure
    health = await pool.health()
    assert health.ok and "replicas healthy" in health.detail
    sample = await pool.load()
    assert sample is not None and sample.queue == 2  # the least loaded replica's
    assert [r["queue"] for r in pool.snapshot()] == [7, 2, 5]


async def test_a_discovered_pool_follows_dns_joins_and_drains() -> None:
    from backends.pool import Discovery

    answers = {"addresses": ["10.0.0.1", "10.0.0.2"]}
    made: dict[str, _Fake] = {}

    async def resolver(host: str, port: int) -> list[str]:
        assert (host, port) == ("vllm.ns.svc.cluster.local", 8000)
        if answers["addresses"] is None:
            raise OSError("no DNS")
        return list(answers["addresses"])

    def make(url: str) -> _Fake:
        made[url] = _Fake(url)
        return made[url]

    pool = ReplicaPool("gpu", [], PlacementSpec(), discovery=Discovery("vllm.ns.svc.cluster.local", 8000,
                                                                        interval_s=0.0),
                       make=make, resolver=resolver)
    await pool.complete(chat("q"))  # resolved before the first request
    assert [r["url"] for r in pool.snapshot()] == ["http://10.0.0.1:8000/v1", "http://10.0.0.2:8000/v1"]
    answers["addresses"] = ["10.0.0.2", "fd00::3"]  # one left, one joined (IPv6 in brackets)
    pool.replicas[0].in_flight = 1  # the leaving one still has a request in flight: it drains
    before = made["http://10.0.0.1:8000/v1"].calls
    await pool.load()
    state = {r["url"]: r["draining"] for r in pool.snapshot()}
    assert state == {"http://10.0.0.1:8000/v1": True, "http://10.0.0.2:8000/v1": False,
                     "http://[fd00::3]:8000/v1": False}
    for _ in range(20):  # no new request goes to a draining replica
        await pool.complete(chat(f"q {_}"))
    assert made["http://10.0.0.1:8000/v1"].calls == before
    pool.replicas[0].in_flight = 0
    answers["addresses"] = None  # DNS down: the pool keeps what it has
    await pool.load()
    assert [r["url"] for r in pool.snapshot()] == ["http://10.0.0.2:8000/v1", "http://[fd00::3]:8000/v1"]
