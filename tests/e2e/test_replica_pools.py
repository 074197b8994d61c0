"""Replica pools through the running gateway (official openai SDK), against three fake
replicas: a conversation's turns stay on one replica (prefix affinity, and the session key
when given), conversations spread over the replicas, two gateway processes agree without a
shared store, and a dead replica is taken out while its conversations move on."""

from __future__ import annotations

import asyncio
import contextlib
import secrets

import aiohttp
import openai

from backends.pool import HEAD, _rank, conversation_head
from router.settings import Settings
from tests.fakes.faults import Fault
from tests.fakes.openai_upstream import FakeOpenAI

CHAT = "/v1/chat/completions"
SYSTEM = "You are the support assistant of a large retailer. Answer briefly. " * 40


def pool_policy(fakes: list[FakeOpenAI], placement: str = "{block_chars: 256}") -> str:
    urls = ", ".join(f"'{f.base_url}'" for f in fakes)
    return f"""
version: 1
backends:
  gpu: {{kind: vllm, model: served, replicas: [{urls}], placement: {placement},
         retry: {{attempts: 3, backoff_base_s: 0}}, circuit: {{failures: 100}}}}
models:
  chat: {{targets: [gpu]}}
"""


def client(url: str, **headers: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=10,
                              default_headers=headers or None)


async def converse(url: str, n: int, turns: int, **headers: str) -> None:
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"order {n}: " + "where? " * 30}]
    for _ in range(turns):
        answer = await client(url, **headers).chat.completions.create(model="chat", messages=messages)
        messages += [{"role": "assistant", "content": answer.choices[0].message.content},
                     {"role": "user", "content": f"and then, for order {n}?"}]


def served_by(fakes: list[FakeOpenAI], n: int) -> set[int]:
    return {i for i, f in enumerate(fakes) for call in f.calls(CHAT) if f"order {n}:" in str(call.body["messages"])}


async def test_turns_stay_on_one_replica_and_conversations_spread(gateway, stack):
    fakes = [await stack.enter_async_context(FakeOpenAI(name=f"r{i}")) for i in range(3)]
    url = await gateway(pool_policy(fakes))
    for n in range(12):
        await converse(url, n, turns=4)
    homes = [served_by(fakes, n) for n in range(12)]
    assert all(len(h) == 1 for h in homes), homes  # every turn of a conversation on one replica
    assert len(set().union(*homes)) >= 2, homes  # and conversations over several replicas


async def test_two_gateway_processes_place_a_conversation_alike(gateway, stack):
    fakes = [await stack.enter_async_context(FakeOpenAI(name=f"r{i}")) for i in range(3)]
    first, second = await gateway(pool_policy(fakes)), await gateway(pool_policy(fakes))
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "order 7: " + "where? " * 30}]
    for url in (first, second, first, second):
        await client(url).chat.completions.create(model="chat", messages=messages)
    assert [len(f.calls(CHAT)) for f in fakes].count(4) == 1  # all four on one replica


async def test_gateways_sharing_redis_learn_each_others_placements(gateway, stack):
    """Gateway A places a new conversation on its least loaded replica — not the one rendezvous
    hashing ranks first, which A is busy with; gateway B, idle, hears of it over Redis and sends
    the next turn there too."""
    fakes = [await stack.enter_async_context(FakeOpenAI(name=f"r{i}")) for i in range(3)]
    shared = Settings(access_log=False, redis_url="redis://127.0.0.1:6379/13")  # a database with no virtual keys
    a, b = await gateway(pool_policy(fakes), settings=shared), await gateway(pool_policy(fakes), settings=shared)
    ids = [f"replica-{i}" for i in range(3)]

    def first_turn(n: int) -> list[dict[str, str]]:
        return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"order {n}: " + "where? " * 30}]

    def ranked_first(n: int) -> int:
        return _rank(HEAD + conversation_head({"messages": first_turn(n)}), ids)[0]

    n = 1000 + secrets.randbelow(10**6)  # a conversation no earlier test announced
    home = ranked_first(n)
    other = next(m for m in range(n + 1, n + 200) if ranked_first(m) == home)
    fakes[home].faults.push(Fault(hang=True))  # A's request for conversation `other` stays in flight there
    busy = asyncio.create_task(client(a).chat.completions.create(model="chat", messages=first_turn(other)))
    try:
        async with asyncio.timeout(5):
            await fakes[home].wait_received(1)
        await client(a).chat.completions.create(model="chat", messages=first_turn(n))
        placed = served_by(fakes, n)
        assert len(placed) == 1 and home not in placed  # A: the least loaded replica, not rendezvous's first
        follow = {"model": "chat", "messages": [*first_turn(n), {"role": "assistant", "content": "On its way."},
                                                {"role": "user", "content": "When?"}]}
        async with aiohttp.ClientSession() as http, asyncio.timeout(5):
            while True:  # B hears of it within milliseconds (explain changes nothing)
                async with http.post(b + "/v1/route/explain", json=follow) as r:
                    if (await r.json())["candidates"][0]["replica"]["why"] == "conversation":
                        break
                await asyncio.sleep(0.02)
        raw = await client(b).chat.completions.with_raw_response.create(**follow)
        assert {int(raw.headers["x-switchyard-replica"])} == placed == served_by(fakes, n)
    finally:
        busy.cancel()
        with contextlib.suppress(asyncio.CancelledError, openai.APIError):
            await busy


async def test_a_session_key_pins_a_session_whatever_its_prompts(gateway, stack):
    fakes = [await stack.enter_async_context(FakeOpenAI(name=f"r{i}")) for i in range(3)]
    url = await gateway(pool_policy(fakes))
    replicas = set()
    for text in ("a", "something else entirely", "a third prompt"):
        raw = await client(url, **{"x-session-id": "sess-42"}).chat.completions.with_raw_response.create(
            model="chat", messages=[{"role": "user", "content": text}], stream=text == "a")
        replicas.add(raw.headers["x-switchyard-replica"])
    assert sorted(len(f.calls(CHAT)) for f in fakes) == [0, 0, 3]
    home = next(i for i, f in enumerate(fakes) if f.calls(CHAT))
    assert replicas == {str(home)}  # the header names it, streamed or not


async def test_a_dead_replica_is_taken_out_and_its_conversations_move(gateway, stack):
    fakes = [await stack.enter_async_context(FakeOpenAI(name=f"r{i}")) for i in range(3)]
    url = await gateway(pool_policy(fakes, "{block_chars: 256, failures: 1, cooldown_s: 60}"))
    await converse(url, 1, turns=1)
    home = served_by(fakes, 1).pop()
    fakes[home].faults.always(Fault(status=503))
    raw = await client(url).chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "system", "content": SYSTEM},
                                {"role": "user", "content": "order 1: " + "where? " * 30}])
    assert raw.headers["x-switchyard-backend"] == "gpu"
    assert len(served_by(fakes, 1)) == 2  # the retry went to another replica
    for n in range(2, 8):  # the dead one gets nothing while it is out
        await converse(url, n, turns=1)
    assert all(home not in served_by(fakes, n) for n in range(2, 8))
    async with aiohttp.ClientSession() as http, http.get(url + "/dashboard/data?minutes=5") as r:
        shown = (await r.json())["backends"]  # the dashboard's "Backends now" table says so
    assert shown == [{"name": "gpu", "self_hosted": True, "circuit": "closed", "in_flight": 0, "queue": None,
                      "replicas": [{"address": f.base_url.split("://")[1].split("/")[0], "in_flight": 0,
                                    "queue": None, "state": "out" if i == home else "ok"}
                                   for i, f in enumerate(fakes)]}]


async def test_admin_and_explain_show_the_replicas(gateway, stack):
    fakes = [await stack.enter_async_context(FakeOpenAI(name=f"r{i}")) for i in range(3)]
    url = await gateway(pool_policy(fakes))
    await converse(url, 3, turns=1)
    async with aiohttp.ClientSession() as http:
        async with http.get(url + "/admin/backends") as r:
            backends = (await r.json())["backends"]
        assert [rep["url"] for rep in backends["gpu"]["replicas"]] == [f.base_url for f in fakes]
        assert all(rep["in_flight"] == 0 for rep in backends["gpu"]["replicas"])
        async with http.get(url + "/metrics") as r:
            metrics = await r.text()
        available = {line.split("switchyard_replica=\"")[1].split("\"")[0]: float(line.rsplit(" ", 1)[1])
                     for line in metrics.splitlines() if line.startswith("switchyard_replica_available{")}
        assert available == {f.base_url.split("://")[1].split("/")[0]: 1.0 for f in fakes}
        body = {"model": "chat", "messages": [{"role": "system", "content": SYSTEM},
                                              {"role": "user", "content": "order 3: " + "where? " * 30},
                                              {"role": "assistant", "content": "x"},
                                              {"role": "user", "content": "and then?"}]}
        async with http.post(url + "/v1/route/explain", json=body) as r:
            explained = await r.json()
    replica = explained["candidates"][0]["replica"]
    home = served_by(fakes, 3).pop()
    assert replica["url"] == fakes[home].base_url and replica["why"] in ("prefix", "conversation")


async def test_a_pool_found_in_dns_serves(gateway, stack):
    """``discovery`` with a real resolver: ``localhost`` resolves to the fake's address."""
    fake = await stack.enter_async_context(FakeOpenAI(name="dns"))
    port = int(fake.base_url.split(":")[2].split("/")[0])
    url = await gateway(f"""
version: 1
backends:
  gpu: {{kind: vllm, model: served, discovery: {{dns: localhost, port: {port}, interval_s: 1}},
         placement: {{failures: 1}}, retry: {{attempts: 3, backoff_base_s: 0}}}}
models:
  chat: {{targets: [gpu]}}
""")
    for n in range(3):
        raw = await client(url).chat.completions.with_raw_response.create(
            model="chat", messages=[{"role": "user", "content": f"hello {n}"}])
        assert raw.headers["x-switchyard-backend"] == "gpu"
    assert len(fake.calls(CHAT)) == 3


async def test_closed_providers_keep_a_session_on_one_provider(gateway, fake_openai, fake_openai_b):
    """Weighted between two closed providers: a session stays on the one that answered it
    first (its prompt cache keeps hitting); requests without a session still spread."""
    specs = ", ".join(f"{name}: {{kind: openai, base_url: '{fake.base_url}', model: gpt-4o, api_key: sk-x}}"
                      for name, fake in (("a", fake_openai), ("b", fake_openai_b)))
    url = await gateway(f"""
version: 1
backends: {{{specs}}}
models:
  chat: {{targets: [a, b]}}
rules:
  - {{name: split, route: {{strategy: weighted, weights: {{a: 1, b: 1}}}}}}
""")
    for session in ("s-1", "s-2", "s-3"):
        answered = set()
        for n in range(6):
            raw = await client(url, **{"x-session-id": session}).chat.completions.with_raw_response.create(
                model="chat", messages=[{"role": "user", "content": f"turn {n}"}])
            answered.add(raw.headers["x-switchyard-backend"])
        assert len(answered) == 1, (session, answered)
    spread = set()
    for n in range(24):  # unseeded weighted picks: all on one side has a chance of 2^-23
        raw = await client(url).chat.completions.with_raw_response.create(
            model="chat", messages=[{"role": "user", "content": f"no session {n}"}])
        spread.add(raw.headers["x-switchyard-backend"])
    assert spread == {"a", "b"}
