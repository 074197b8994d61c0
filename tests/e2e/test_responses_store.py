"""Stored responses (``/v1/responses``): ``previous_response_id`` continues a conversation
with its history, at the sensitivity level the conversation reached — a conversation that
once carried data above ``closed_max`` stays home for the rest of its life — scoped to the
caller's team, with the in-memory store and with the real Redis; ``GET``/``DELETE``."""

from __future__ import annotations

import asyncio
import secrets

import openai
import pytest

from router.settings import Settings
from tests.e2e.test_gateway_sdk import local

REDIS = "redis://127.0.0.1:6379/0"
CHAT = "/v1/chat/completions"
ENV = {"KEY_A": "sk-team-a", "KEY_B": "sk-team-b"}


def store_policy(home, cloud) -> str:
    return f"""
version: 1
backends:
  home: {local(home)}
  cloud: {{kind: openai, base_url: '{cloud.base_url}', model: gpt-4o, api_key: sk-cloud, retry: {{attempts: 1}}}}
models:
  chat: {{targets: [cloud, home]}}   # closed first: only sensitivity keeps a request home
sensitivity: {{closed_max: internal}}
teams:
  a: {{keys: ["${{KEY_A}}"]}}
  b: {{keys: ["${{KEY_B}}"]}}
"""


def client(url: str, key: str = "sk-team-a", **headers: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=20,
                              default_headers=headers or None)


@pytest.fixture(autouse=True)
async def _deadline():
    async with asyncio.timeout(60):
        yield


@pytest.mark.parametrize("redis", [False, True], ids=["memory", "redis"])
async def test_a_conversation_that_was_restricted_stays_home_for_the_rest_of_its_life(gateway, fake_openai,
                                                                                       fake_openai_b, redis):
    settings = Settings(access_log=False, redis_url=REDIS if redis else None)
    url = await gateway(store_policy(fake_openai, fake_openai_b), env=ENV, settings=settings)
    tag = secrets.token_hex(4)
    first = await client(url, **{"x-switchyard-sensitivity": "restricted"}).responses.with_raw_response.create(
        model="chat", input=f"the plan for {tag}", instructions="Be brief.")
    assert first.headers["x-switchyard-backend"] == "home"
    one = first.parse()
    # the next turns declare nothing and carry nothing a detector finds: the stored level holds
    second = await client(url).responses.with_raw_response.create(model="chat", input="and then?",
                                                                  previous_response_id=one.id)
    assert second.headers["x-switchyard-sensitivity"] == "restricted"
    assert second.headers["x-switchyard-backend"] == "home"
    sent = fake_openai.calls(CHAT)[-1].body["messages"]
    assert [m["content"] for m in sent] == [f"the plan for {tag}", one.output_text, "and then?"]  # no old instructions
    third = await client(url).responses.with_raw_response.create(model="chat", input="more",
                                                                 previous_response_id=second.parse().id)
    assert third.headers["x-switchyard-backend"] == "home" and third.headers["x-switchyard-sensitivity"] == "restricted"
    assert fake_openai_b.calls(CHAT) == []  # nothing of it ever reached the closed provider
    # a fresh conversation with the same text leaves, as the policy says
    fresh = await client(url).responses.with_raw_response.create(model="chat", input="and then?")
    assert fresh.headers["x-switchyard-backend"] == "cloud"


async def test_a_secret_in_the_history_keeps_the_continuation_home(gateway, fake_openai, fake_openai_b):
    url = await gateway(store_policy(fake_openai, fake_openai_b), env=ENV)
    first = await client(url).responses.with_raw_response.create(
        model="chat", input="charge card 4111 1111 1111 1111 please")
    assert first.headers["x-switchyard-backend"] == "home"
    second = await client(url).responses.with_raw_response.create(
        model="chat", input="thanks", previous_response_id=first.parse().id)
    assert second.headers["x-switchyard-backend"] == "home"
    assert second.headers["x-switchyard-sensitivity"] in ("confidential", "restricted")
    assert fake_openai_b.calls(CHAT) == []


@pytest.mark.parametrize("redis", [False, True], ids=["memory", "redis"])
async def test_stored_responses_are_scoped_to_the_team_retrieved_and_deleted(gateway, fake_openai, fake_openai_b,
                                                                            redis):
    settings = Settings(access_log=False, redis_url=REDIS if redis else None)
    url = await gateway(store_policy(fake_openai, fake_openai_b), env=ENV, settings=settings)
    created = await client(url).responses.create(model="chat", input="hello there")
    got = await client(url).responses.retrieve(created.id)
    assert got.id == created.id and got.output_text == created.output_text
    with pytest.raises(openai.NotFoundError):
        await client(url, "sk-team-b").responses.retrieve(created.id)
    with pytest.raises(openai.BadRequestError) as refused:
        await client(url, "sk-team-b").responses.create(model="chat", input="x", previous_response_id=created.id)
    assert refused.value.body["code"] == "previous_response_not_found"
    with pytest.raises(openai.NotFoundError):
        await client(url, "sk-team-b").responses.delete(created.id)
    await client(url).responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        await client(url).responses.retrieve(created.id)
    with pytest.raises(openai.BadRequestError):
        await client(url).responses.create(model="chat", input="x", previous_response_id=created.id)


async def test_store_false_keeps_nothing_and_a_stream_is_stored_when_complete(gateway, fake_openai, fake_openai_b):
    url = await gateway(store_policy(fake_openai, fake_openai_b), env=ENV)
    stateless = await client(url).responses.create(model="chat", input="hi", store=False)
    with pytest.raises(openai.NotFoundError):
        await client(url).responses.retrieve(stateless.id)
    stream = await client(url).responses.create(model="chat", input="stream me", stream=True)
    final = None
    async for event in stream:
        if event.type == "response.completed":
            final = event.response
    assert final is not None
    stored = await client(url).responses.retrieve(final.id)
    assert stored.output_text == final.output_text
    follow = await client(url).responses.create(model="chat", input="again", previous_response_id=final.id)
    assert follow.output_text


async def test_the_store_being_down_answers_but_cannot_continue(gateway, fake_openai, fake_openai_b):
    dead = "redis://127.0.0.1:1/0"
    url = await gateway(store_policy(fake_openai, fake_openai_b), env=ENV,  # policy keys: checked without the store
                        settings=Settings(access_log=False, redis_url=dead))
    created = await client(url).responses.with_raw_response.create(model="chat", input="hello")
    assert created.status_code == 200 and created.headers["x-switchyard-stored"] == "false"
    with pytest.raises(openai.APIStatusError) as caught:
        await client(url).responses.retrieve(created.parse().id)
    assert caught.value.status_code == 503 and caught.value.body["code"] == "response_store_unavailable"
