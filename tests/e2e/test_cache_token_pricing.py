"""Prompt-cache tokens are priced at their own rates: Anthropic's cache writes
(``cache_creation_input_tokens``) and reads, and OpenAI's cached input tokens — in the
answer's usage, the ``x-switchyard-cost-usd`` header and the team's budget."""

from __future__ import annotations

import anthropic
import openai
import pytest

from tests.e2e.test_closed_providers import claude
from tests.e2e.test_gateway_sdk import policy

PER_M = 1e-6
PRICE = "{input_per_mtok_usd: 3, output_per_mtok_usd: 15, cached_input_per_mtok_usd: 0.3, " \
        "cache_write_input_per_mtok_usd: 3.75}"


def priced(spec: str) -> str:
    return spec[:-1] + f", price: {PRICE}}}"


async def test_anthropic_cache_writes_and_reads_are_priced_at_their_rates(gateway, fake_anthropic):
    fake_anthropic.cache_usage = {"cache_creation_input_tokens": 100, "cache_read_input_tokens": 300}
    url = await gateway(policy(("claude", priced(claude(fake_anthropic)))))
    client = anthropic.AsyncAnthropic(base_url=url, api_key="unused", max_retries=0)
    raw = await client.messages.with_raw_response.create(
        model="chat", max_tokens=64, messages=[{"role": "user", "content": "Say hello."}],
        system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}])
    message = await raw.parse()
    usage = message.usage
    assert (usage.cache_creation_input_tokens, usage.cache_read_input_tokens) == (100, 300)
    fresh = usage.input_tokens
    assert fresh >= 1
    expected = (fresh * 3 + 300 * 0.3 + 100 * 3.75 + usage.output_tokens * 15) * PER_M
    assert float(raw.headers["x-switchyard-cost-usd"]) == pytest.approx(expected, abs=1e-8)
    # all input at the plain input price would cost more: the rates were really applied
    assert expected != pytest.approx((fresh + 400) * 3 * PER_M + usage.output_tokens * 15 * PER_M)


async def test_anthropic_stream_reports_cache_usage_in_message_delta(gateway, fake_anthropic):
    fake_anthropic.cache_usage = {"cache_creation_input_tokens": 10, "cache_read_input_tokens": 20}
    url = await gateway(policy(("claude", priced(claude(fake_anthropic)))))
    client = anthropic.AsyncAnthropic(base_url=url, api_key="unused", max_retries=0)
    async with client.messages.stream(model="chat", max_tokens=64,
                                      messages=[{"role": "user", "content": "Say hello."}]) as stream:
        final = await stream.get_final_message()
    assert (final.usage.cache_creation_input_tokens, final.usage.cache_read_input_tokens) == (10, 20)


async def test_openai_cached_input_tokens_are_priced_at_the_cached_rate_on_responses(gateway, fake_openai):
    fake_openai.cached_tokens = 2
    spec = f"{{kind: openai, base_url: '{fake_openai.base_url}', model: gpt-4o, api_key: sk-test, price: {PRICE}}}"
    url = await gateway(policy(("oai", spec)))
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    raw = await client.responses.with_raw_response.create(model="chat", input="Say hello to everyone here.")
    response = raw.parse()
    usage = response.usage
    assert usage.input_tokens_details.cached_tokens == 2
    expected = ((usage.input_tokens - 2) * 3 + 2 * 0.3 + usage.output_tokens * 15) * PER_M
    assert float(raw.headers["x-switchyard-cost-usd"]) == pytest.approx(expected, abs=1e-8)
