"""Fixtures for the backend contract suite (helpers and specs: ``tests.backends.harness``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.backends.harness import KEY, SPEC_IDS, SPECS, UPSTREAM_MODEL, Harness, Spec
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.openai_upstream import FakeOpenAI


@pytest.fixture(params=SPECS, ids=SPEC_IDS)
async def adapter(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    spec: Spec = request.param
    fake_cls = FakeOpenAI if spec.wire == "openai" else FakeAnthropic
    async with fake_cls(name=spec.id, model_name=UPSTREAM_MODEL[spec.wire], api_key=KEY) as fake:
        async with aiohttp.ClientSession() as session:
            harness = Harness(spec, fake, session)
            try:
                yield harness
            finally:
                for backend in harness._built:
                    await backend.close()
