"""The agent surfaces go through the same policy as chat: the ``endpoint`` fact is
``messages`` / ``responses`` (a rule can route on it), ``/v1/route/explain?surface=`` explains
a Messages or Responses body as it would be served, and a secret anywhere in an agent's
request (a tool result, a function call's output) keeps it home."""

from __future__ import annotations

import aiohttp
import anthropic
import openai

from tests.e2e.test_gateway_sdk import local
from tests.fakes.openai_upstream import FakeOpenAI


def by_endpoint(chat_fake, messages_fake, responses_fake) -> str:
    return f"""
version: 1
backends:
  for-chat: {local(chat_fake)}
  for-messages: {local(messages_fake)}
  for-responses: {local(responses_fake)}
  cloud: {{kind: openai, base_url: '{chat_fake.base_url}', model: gpt-4o, api_key: sk-x, retry: {{attempts: 1}}}}
models:
  chat: {{targets: [for-chat]}}
sensitivity: {{closed_max: internal}}
rules:
  - {{name: keep-secrets-home, when: {{sensitivity: {{gte: confidential}}}}, route: {{targets: [for-chat], fallback: none}}}}
  - {{name: agents-anthropic, when: {{endpoint: messages}}, route: {{targets: [for-messages, cloud]}}}}
  - {{name: agents-openai, when: {{endpoint: responses}}, route: {{targets: [for-responses, cloud]}}}}
"""


async def test_rules_route_on_the_endpoint_fact(gateway, fake_openai, fake_openai_b, fake_anthropic):
    async with FakeOpenAI(name="third", model_name="fake-third") as third:
        url = await gateway(by_endpoint(fake_openai, fake_openai_b, third))
        chat = await openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0).chat.completions \
            .with_raw_response.create(model="chat", messages=[{"role": "user", "content": "hi"}])
        assert chat.headers["x-switchyard-backend"] == "for-chat"
        msg = await anthropic.AsyncAnthropic(base_url=url, api_key="x", max_retries=0).messages.with_raw_response \
            .create(model="chat", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
        assert (msg.headers["x-switchyard-backend"], msg.headers["x-switchyard-rule"]) == \
            ("for-messages", "agents-anthropic")
        resp = await openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0).responses \
            .with_raw_response.create(model="chat", input="hi")
        assert (resp.headers["x-switchyard-backend"], resp.headers["x-switchyard-rule"]) == \
            ("for-responses", "agents-openai")

        async with aiohttp.ClientSession() as http:
            async with http.get(url + "/metrics") as r:
                metrics = await r.text()
            for endpoint, rule in (("chat", "default"), ("messages", "agents-anthropic"),
                                   ("responses", "agents-openai")):
                assert any(line.startswith("switchyard_requests_total{") and f'switchyard_endpoint="{endpoint}"' in line
                           and f'switchyard_rule="{rule}"' in line and line.endswith(" 1.0")
                           for line in metrics.splitlines()), (endpoint, metrics[-3000:])
            body = {"model": "chat", "max_tokens": 8, "messages": [{"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t", "content": "IBAN DE89 3704 0044 0532 0130 00"}]}]}
            async with http.post(url + "/v1/route/explain?surface=messages", json=body) as r:
                explained = await r.json()
            assert r.status == 200
            assert explained["facts"]["endpoint"] == "messages"
            assert explained["facts"]["sensitivity"] == "restricted"
            assert explained["decision"]["rule"] == "keep-secrets-home"
            body = {"model": "chat", "input": [{"type": "function_call_output", "call_id": "c", "output": "ok"}]}
            async with http.post(url + "/v1/route/explain?surface=responses", json=body) as r:
                explained = await r.json()
            assert explained["facts"]["endpoint"] == "responses"
            assert explained["decision"]["targets"] == ["for-responses", "cloud"]
            async with http.post(url + "/v1/route/explain?surface=gemini", json=body) as r:
                assert r.status == 400 and (await r.json())["error"]["param"] == "surface"


async def test_a_secret_in_an_agents_tool_output_never_leaves(gateway, fake_openai, fake_openai_b, fake_anthropic):
    async with FakeOpenAI(name="third", model_name="fake-third") as third:
        url = await gateway(by_endpoint(fake_openai, fake_openai_b, third))
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        raw = await client.responses.with_raw_response.create(model="chat", input=[
            {"role": "user", "content": "read the config"},
            {"type": "function_call", "call_id": "c1", "name": "read", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1",
             "output": "customer card: 4111 1111 1111 1111"}])
        assert raw.headers["x-switchyard-backend"] == "for-chat"
        assert raw.headers["x-switchyard-sensitivity"] == "restricted"
        sent = fake_openai.calls("/v1/chat/completions")[-1].body
        assert sent["messages"][-1]["role"] == "tool"
