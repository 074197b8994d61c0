"""Fixtures for the fake-upstream self-tests: started fakes, official SDK clients, raw HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import anthropic
import openai
import pytest

from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.openai_upstream import FakeOpenAI

KEY = "sk-fake-key"


@pytest.fixture
async def oai_fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(name="oai-1", api_key=KEY) as fake:
        yield fake


@pytest.fixture
async def ant_fake() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic(name="ant-1", api_key=KEY) as fake:
        yield fake


@pytest.fixture
async def oai(oai_fake: FakeOpenAI) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(base_url=oai_fake.base_url, api_key=KEY, max_retries=0)
    yield client
    await client.close()


@pytest.fixture
async def ant(ant_fake: FakeAnthropic) -> AsyncIterator[anthropic.AsyncAnthropic]:
    client = anthropic.AsyncAnthropic(base_url=ant_fake.base_url, api_key=KEY, max_retries=0)
    yield client
    await client.close()


@pytest.fixture
def oai_auth(oai_fake: FakeOpenAI) -> dict[str, str]:
    """Headers a raw HTTP client needs to pass the OpenAI fake's auth gate."""
    return {"Authorization": f"Bearer {oai_fake.api_key}"}


@pytest.fixture
def ant_headers(ant_fake: FakeAnthropic) -> dict[str, str]:
    """Headers a raw HTTP client needs for the Anthropic fake (litellm's style)."""
    return {"x-api-key": str(ant_fake.api_key), "anthropic-version": "2023-06-01"}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
