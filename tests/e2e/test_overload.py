"""Overload sheds instead of queueing (issue 11, item 8): past ``settings.max_in_flight``
requests in flight, the next one gets an immediate 503 ``overloaded`` with ``Retry-After``,
in OpenAI's error shape, counted in ``switchyard_requests_shed_total``; probes are not
counted and still answer; once requests finish, new ones are admitted again."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from tests.fakes.faults import Fault

HELLO = {"model": "chat", "messages": [{"role": "user", "content": "Say hello."}]}


def policy(base_url: str, max_in_flight: int) -> str:
    return f"""version: 1
backends:
  gpu: {{kind: vllm, base_url: '{base_url}', model: m, timeouts: {{total_s: 30, first_token_s: 30}}}}
models:
  chat: {{targets: [gpu]}}
settings: {{watch: false, max_in_flight: {max_in_flight}}}
"""


async def test_the_request_past_max_in_flight_is_refused_at_once(gateway, fake_openai):
    url = await gateway(policy(fake_openai.base_url, 2))
    fake_openai.faults.push(Fault(delay_s=1.5), Fault(delay_s=1.5))  # two slow answers occupy both places
    async with asyncio.timeout(20), aiohttp.ClientSession() as http:

        async def chat() -> tuple[int, dict, dict[str, str]]:
            async with http.post(f"{url}/v1/chat/completions", json=HELLO) as r:
                return r.status, await r.json(), dict(r.headers)

        slow = [asyncio.create_task(chat()) for _ in range(2)]
        await fake_openai.wait_received(2)  # both are in flight, at the upstream
        started = time.perf_counter()
        status, body, headers = await chat()
        took = time.perf_counter() - started
        assert status == 503, body
        assert body == {"error": {"message": body["error"]["message"], "type": "service_unavailable",
                                  "param": None, "code": "overloaded"}}
        assert headers["Retry-After"] == "1"
        assert took < 0.5, f"the refusal took {took:.2f} s: it queued"
        async with http.get(f"{url}/healthz") as r:  # probes are not counted, and answer
            assert r.status == 200
        assert len(fake_openai.received) == 2  # the refused one never reached the upstream
        assert [s for s, _, _ in await asyncio.gather(*slow)] == [200, 200]
        status, _, _ = await chat()  # places are free again
        assert status == 200
        async with http.get(f"{url}/metrics") as r:
            metrics = await r.text()
    shed = [line for line in metrics.splitlines() if line.startswith("switchyard_requests_shed_total")]
    assert shed and shed[0].endswith(" 1.0") and 'switchyard_reason="overloaded"' in shed[0], shed


async def test_the_default_bound_is_documented_and_large(gateway, fake_openai):
    """The default (1000) never sheds ordinary concurrency: 50 at once all pass."""
    from policies import PolicySettings

    assert PolicySettings().max_in_flight == 1000
    url = await gateway(policy(fake_openai.base_url, 1000))
    async with asyncio.timeout(20), aiohttp.ClientSession() as http:

        async def chat() -> int:
            async with http.post(f"{url}/v1/chat/completions", json=HELLO) as r:
                await r.read()
                return r.status

        assert set(await asyncio.gather(*(chat() for _ in range(50)))) == {200}
