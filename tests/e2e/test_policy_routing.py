"""Policy routing end to end: the running gateway, the official ``openai`` SDK as the client,
and fake upstreams that record everything they receive.

The question every test answers by counting what each fake actually received: did a
request go where the policy says — and, above all, did sensitive data ever reach the
closed provider? (It must not: not on failover, not on timeouts, not on broken streams.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import aiohttp
import openai
import orjson
import pytest

from policies.sensitivity import MAX_TEXTS
from tests.e2e.test_gateway_sdk import client
from tests.fakes.faults import Fault
from tests.fakes.openai_upstream import FakeOpenAI

DEADLINE_S = 20
CHAT = "/v1/chat/completions"
CLOSED_KEY = "sk-closed-test-key"
RETRY = "{attempts: 2, backoff_base_s: 0, backoff_max_s: 0}"
FAST = "{connect_s: 1, first_token_s: 0.3, idle_s: 0.3, total_s: 0.3}"
HELLO = [{"role": "user", "content": "Say hello."}]
EMAIL = "jane.doe@example.com"
CARD = "4111 1111 1111 1111"


@pytest.fixture(autouse=True)
async def _deadline():
    async with asyncio.timeout(DEADLINE_S):
        yield


@pytest.fixture
async def local(stack) -> FakeOpenAI:
    return await stack.enter_async_context(FakeOpenAI(name="local", model_name="local-model",
                                                      reply_text="Hello from the local model."))


@pytest.fixture
async def closed(stack) -> FakeOpenAI:
    """A closed provider (reached through litellm) that insists on its key."""
    return await stack.enter_async_context(FakeOpenAI(name="closed", model_name="gpt-fake", api_key=CLOSED_KEY,
                                                      reply_text="Hello from the closed provider."))


def local_spec(fake: FakeOpenAI, kind: str = "vllm", timeouts: str = FAST, extra: str = "",
               circuit: str = "{failures: 100}") -> str:
    return (f"{{kind: {kind}, base_url: '{fake.base_url}', model: local-model, timeouts: {timeouts}, "
            f"retry: {RETRY}, circuit: {circuit}{', ' + extra if extra else ''}}}")


def closed_spec(fake: FakeOpenAI, extra: str = "") -> str:
    return (f"{{kind: openai, base_url: '{fake.base_url}', model: gpt-4o-mini, api_key: {CLOSED_KEY}, "
            f"retry: {{attempts: 1}}, timeouts: {{connect_s: 1, first_token_s: 5, idle_s: 5, total_s: 5}}"
            f"{', ' + extra if extra else ''}}}")


def home_policy(local: FakeOpenAI, closed: FakeOpenAI, *, rules: str = "", local_extra: str = "",
                closed_extra: str = "", sensitivity: str = "{closed_max: internal}", settings: str = "",
                local_kind: str = "vllm", local_circuit: str = "{failures: 100}") -> str:
    """The shape of the shipped default: sensitive data stays home (fail closed), the rest
    self-hosted first. ``rules`` are tried before those two."""
    return (
        "version: 1\nbackends:\n"
        f"  local: {local_spec(local, kind=local_kind, extra=local_extra, circuit=local_circuit)}\n"
        f"  closed: {closed_spec(closed, closed_extra)}\n"
        "models:\n  chat: {targets: [local, closed]}\n"
        f"sensitivity: {sensitivity}\n"
        "rules:\n"
        f"{rules}"
        "  - name: sensitive-stays-home\n"
        "    when: {sensitivity: {gte: confidential}}\n"
        "    route: {targets: [local], fallback: none}\n"
        "  - name: self-hosted-first\n"
        "    route: {strategy: cheapest}\n"
        f"{'settings: ' + settings if settings else ''}\n"
    )


def seen(fake: FakeOpenAI) -> str:
    """Everything the fake received, as one string (to look for leaked values)."""
    return orjson.dumps([r.body for r in fake.received]).decode()


async def chat(url: str, messages: list[dict], headers: dict[str, str] | None = None, **kw: object):
    """A non-streaming answer: (response headers, parsed completion)."""
    async with client(url) as c:
        raw = await c.chat.completions.with_raw_response.create(
            model="chat", messages=messages, extra_headers=headers, **kw)
        return raw.headers, raw.parse()


async def sse(url: str, body: dict, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], list[bytes]]:
    async with aiohttp.ClientSession() as http, http.post(url + CHAT, json=body, headers=headers) as resp:
        raw = await resp.read()
        return resp.status, dict(resp.headers), [e for e in raw.split(b"\n\n") if e.strip()]


async def get(url: str, path: str) -> dict:
    async with aiohttp.ClientSession() as http, http.get(url + path) as resp:
        assert resp.status == 200
        return await resp.json()


async def explain(url: str, body: dict, query: str = "", headers: dict[str, str] | None = None
                  ) -> tuple[str, dict]:
    async with aiohttp.ClientSession() as http, \
            http.post(url + "/v1/route/explain" + query, json=body, headers=headers) as resp:
        text = await resp.text()
        assert resp.status == 200, text
        return text, orjson.loads(text)


async def poll(check: Callable[[], Awaitable[bool]], timeout_s: float = 5.0, every_s: float = 0.02) -> None:
    """Wait until ``check()`` holds; fail after ``timeout_s`` (a bounded polling loop, not a sleep)."""
    for _ in range(int(timeout_s / every_s)):
        if await check():
            return
        await asyncio.sleep(every_s)
    raise AssertionError(f"condition not met within {timeout_s} s")


# -- sensitive data never reaches the closed provider -----------------------------------------
TOOL_CALL = {"id": "c1", "type": "function", "function": {"name": "read_config", "arguments": "{}"}}
SENSITIVE = {
    "card": ([{"role": "user", "content": f"My card is {CARD}, why was it declined?"}], None, "restricted", CARD),
    "iban": ([{"role": "user", "content": "Wire it to DE89 3704 0044 0532 0130 00 today"}], None, "restricted",
             "DE89 3704"),
    "email-in-system": ([{"role": "system", "content": f"Escalate to {EMAIL} if unsure."},
                         {"role": "user", "content": "Say hello."}], None, "confidential", EMAIL),
    "aws-key-in-tool-result": ([{"role": "user", "content": "what does the config say?"},
                                {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]},
                                {"role": "tool", "tool_call_id": "c1",
                                 "content": "aws_access_key_id = AKIAIOSFODNN7EXAMPLE"}],
                               None, "restricted", "AKIAIOSFODNN7EXAMPLE"),
    "private-key-in-content-parts": ([{"role": "user", "content": [
        {"type": "text", "text": "Is this key still valid?"},
        {"type": "text", "text": "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\n"
                                 "-----END PRIVATE KEY-----"}]}], None, "restricted", "MIIEvQIBADANBgkqhkiG9w0"),
    "client-raised-level": (HELLO, {"x-switchyard-sensitivity": "restricted"}, "restricted", None),
}


async def test_sensitive_requests_stay_home_when_local_is_up(gateway, local, closed):
    url = await gateway(home_policy(local, closed))
    for name, (messages, headers, level, secret) in SENSITIVE.items():
        answer_headers, completion = await chat(url, messages, headers)
        assert answer_headers["x-switchyard-rule"] == "sensitive-stays-home", name
        assert answer_headers["x-switchyard-sensitivity"] == level, name
        assert answer_headers["x-switchyard-backend"] == "local", name
        assert completion.choices[0].message.content == local.reply_text
        if secret:
            assert secret in seen(local)  # the self-hosted model gets the original
    assert len(local.calls(CHAT)) == len(SENSITIVE)
    # the client can raise the level, never lower it; an unknown level is a 400, not a guess
    headers, _ = await chat(url, SENSITIVE["card"][0], {"x-switchyard-sensitivity": "public"})
    assert headers["x-switchyard-sensitivity"] == "restricted" and headers["x-switchyard-backend"] == "local"
    with pytest.raises(openai.BadRequestError) as info:
        await chat(url, HELLO, {"x-switchyard-sensitivity": "top-secret"})
    assert info.value.body["param"] == "x-switchyard-sensitivity"
    assert len(local.calls(CHAT)) == len(SENSITIVE) + 1
    assert closed.received == []


@pytest.mark.parametrize(("fault", "status"), [(Fault(status=503, message="local is overloaded"), 503),
                                               (Fault(hang=True), 504)], ids=["503", "hang"])
async def test_sensitive_requests_fail_closed_when_local_fails(gateway, local, closed, fault, status):
    local.faults.always(fault)
    url = await gateway(home_policy(local, closed))
    for name, (messages, headers, _level, _secret) in SENSITIVE.items():
        with pytest.raises(openai.APIStatusError) as info:
            await chat(url, messages, headers)
        assert info.value.status_code == status, name
        error = info.value.body
        assert error["code"] == "all_backends_failed" and "local" in error["message"], name
        assert "closed" not in error["message"]  # not even tried
        assert info.value.response.headers["x-switchyard-tried"] == "local"
    attempts = 2 if status == 503 else 1  # 5xx is retried on the same backend; a silent one is not
    assert len(local.calls(CHAT)) == attempts * len(SENSITIVE)
    assert closed.received == []


@pytest.mark.parametrize(("fault", "status"), [(Fault(status=503), 503), (Fault(headers_then_stall_s=5), 504)],
                         ids=["503", "no-first-token"])
async def test_sensitive_streams_fail_closed_before_the_first_byte(gateway, local, closed, fault, status):
    local.faults.always(fault)
    url = await gateway(home_policy(local, closed))
    for name, (messages, headers, _level, _secret) in SENSITIVE.items():
        code, _, events = await sse(url, {"model": "chat", "messages": messages, "stream": True}, headers)
        assert code == status, name
        assert orjson.loads(events[0])["error"]["code"] == "all_backends_failed"
    assert closed.received == []


async def test_sensitive_streams_cut_midway_end_with_an_error_event_and_never_continue_on_closed(
        gateway, local, closed):
    local.faults.always(Fault(cut_after_chunks=1))
    url = await gateway(home_policy(local, closed, closed_extra="supports_prefill: true"))
    for name, (messages, headers, level, _secret) in SENSITIVE.items():
        code, answer_headers, events = await sse(url, {"model": "chat", "messages": messages, "stream": True},
                                                 headers)
        assert code == 200, name  # the stream had started
        assert answer_headers["x-switchyard-rule"] == "sensitive-stays-home"
        assert answer_headers["x-switchyard-sensitivity"] == level
        assert events[-1] == b"data: [DONE]"
        error = orjson.loads(events[-2][5:])["error"]
        assert "could not be continued" in error["message"] and "no other allowed target" in error["message"]
        finishes = [c["choices"][0].get("finish_reason") for c in map(lambda e: orjson.loads(e[5:]), events[:-2])
                    if c.get("choices")]
        assert not any(finishes)  # a truncated answer never looks finished
    with pytest.raises(openai.APIError):  # and the SDK surfaces it as an error
        stream = await client(url).chat.completions.create(model="chat", messages=SENSITIVE["card"][0], stream=True)
        async for _ in stream:
            pass
    assert closed.received == []


@pytest.mark.parametrize("fault", [Fault(status=503), Fault(hang=True)], ids=["503", "hang"])
async def test_fail_closed_error_names_the_rule(gateway, local, closed, fault):
    local.faults.always(fault)
    url = await gateway(home_policy(local, closed))
    with pytest.raises(openai.APIStatusError) as info:
        await chat(url, SENSITIVE["card"][0])
    assert info.value.status_code in (503, 504)  # 504 when the only allowed target timed out
    assert "sensitive-stays-home" in info.value.body["message"]
    assert info.value.response.headers.get("x-switchyard-rule") == "sensitive-stays-home"


async def test_a_card_in_a_predicted_output_stays_home(gateway, local, closed):
    local.faults.always(Fault(status=503))
    url = await gateway(home_policy(local, closed))
    with pytest.raises(openai.APIStatusError):
        await chat(url, HELLO, extra_body={"prediction": {"type": "content", "content": f"card {CARD}"}})
    assert CARD not in seen(closed)


@pytest.mark.parametrize("fault", [Fault(status=503), Fault(hang=True)], ids=["503", "hang"])
@pytest.mark.parametrize("stream", [False, True])
async def test_harmless_requests_do_fail_over_to_the_closed_provider(gateway, local, closed, fault, stream):
    local.faults.always(fault)
    url = await gateway(home_policy(local, closed))
    c = client(url)
    if stream:
        async with c.chat.completions.with_streaming_response.create(model="chat", messages=HELLO,
                                                                     stream=True) as resp:
            text = "".join([ch.choices[0].delta.content or "" async for ch in await resp.parse() if ch.choices])
            headers = resp.headers
    else:
        raw = await c.chat.completions.with_raw_response.create(model="chat", messages=HELLO)
        headers, text = raw.headers, raw.parse().choices[0].message.content
    assert text == closed.reply_text
    assert headers["x-switchyard-backend"] == "closed" and headers["x-switchyard-tried"] == "local"
    assert headers["x-switchyard-rule"] == "self-hosted-first" and headers["x-switchyard-sensitivity"] == "public"
    sent = closed.calls(CHAT)
    assert len(sent) == 1 and sent[0].headers["authorization"] == f"Bearer {CLOSED_KEY}"
    assert sent[0].body["messages"] == HELLO and sent[0].body["model"] == "gpt-4o-mini"


# -- deny ------------------------------------------------------------------------------------------
async def test_deny_rule_is_a_403_naming_the_rule_and_its_message(gateway, local, closed):
    rules = ("  - name: no-batch-here\n    when: {tags: batch}\n"
             "    route: {deny: 'batch jobs must use the batch endpoint'}\n")
    url = await gateway(home_policy(local, closed, rules=rules))
    with pytest.raises(openai.PermissionDeniedError) as info:
        await chat(url, HELLO, {"x-switchyard-tags": "nightly, batch"})
    assert info.value.status_code == 403
    assert info.value.body == {"message": "denied by rule 'no-batch-here': batch jobs must use the batch endpoint",
                               "type": "permission_error", "param": None, "code": "policy_denied"}
    assert local.received == [] and closed.received == []
    headers, _ = await chat(url, HELLO, {"x-switchyard-tags": "nightly"})  # other tags: served
    assert headers["x-switchyard-rule"] == "self-hosted-first"


# -- redaction ------------------------------------------------------------------------------------
REDACT_SENSITIVITY = ("{closed_max: internal, detectors: {credit_card: restricted, iban: restricted, "
                      "us_ssn: restricted, api_key: restricted, private_key: restricted, jwt: restricted, "
                      "email: internal, phone: internal, ip_address: internal}}")
REDACT_RULE = ("  - name: internal-redacted\n    when: {sensitivity: internal}\n"
               "    route: {targets: [local, closed], redact: [email, phone]}\n")
PHONE = "+1 415 555 0123"
CONTACT = [{"role": "system", "content": "You route support tickets."},
           {"role": "user", "content": f"Email {EMAIL} or call {PHONE}; cc {EMAIL.upper()}"}]
REDACTED = "Email <EMAIL_1> or call <PHONE_1>; cc <EMAIL_1>"


@pytest.mark.parametrize("stream", [False, True])
async def test_closed_targets_receive_placeholders_self_hosted_the_original(gateway, local, closed, stream):
    url = await gateway(home_policy(local, closed, rules=REDACT_RULE, sensitivity=REDACT_SENSITIVITY))
    body = {"model": "chat", "messages": CONTACT, "stream": stream}
    code, headers, _ = await sse(url, body)  # local answers first: it gets the original
    assert code == 200 and headers["x-switchyard-backend"] == "local"
    assert headers["x-switchyard-rule"] == "internal-redacted" and headers["x-switchyard-sensitivity"] == "internal"
    assert local.calls(CHAT)[0].body["messages"] == CONTACT
    assert closed.received == []

    local.faults.always(Fault(status=503))
    code, headers, _ = await sse(url, body)
    assert code == 200 and headers["x-switchyard-backend"] == "closed"
    sent = closed.calls(CHAT)[0].body["messages"]
    assert sent[0]["content"] == "You route support tickets."
    assert sent[1]["content"] == REDACTED
    leaked = seen(closed).lower()
    assert EMAIL not in leaked and "555 0123" not in leaked and "415" not in leaked
    assert all(r.body["messages"] == CONTACT for r in local.calls(CHAT))  # every local attempt: the original


async def test_redaction_never_lets_higher_levels_leave(gateway, local, closed):
    """The allowed set is computed on the unredacted request: a card next to an email stays home."""
    local.faults.always(Fault(status=503))
    url = await gateway(home_policy(local, closed, rules=REDACT_RULE, sensitivity=REDACT_SENSITIVITY))
    messages = [{"role": "user", "content": f"Email {EMAIL}, card {CARD}"}]
    with pytest.raises(openai.APIStatusError) as info:
        await chat(url, messages)
    assert info.value.status_code == 503
    assert closed.received == []


async def test_stream_recovery_on_a_closed_target_is_redacted_too(gateway, local, closed):
    local.faults.always(Fault(cut_after_chunks=2))
    closed.reply_text = local.reply_text
    url = await gateway(home_policy(local, closed, rules=REDACT_RULE, sensitivity=REDACT_SENSITIVITY,
                                    closed_extra="supports_prefill: true"))
    code, headers, events = await sse(url, {"model": "chat", "messages": CONTACT, "stream": True})
    assert code == 200 and headers["x-switchyard-backend"] == "local" and events[-1] == b"data: [DONE]"
    chunks = [orjson.loads(e[5:]) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))
    assert text == local.reply_text  # stitched: nothing lost, nothing repeated
    assert chunks[-1]["switchyard"]["recovered"][0]["continued_by"] == "closed"
    (continuation,) = closed.calls(CHAT)  # the continuation went to the closed target...
    assert continuation.body["messages"][1]["content"] == REDACTED  # ...with placeholders
    assert continuation.body["messages"][-1] == {"role": "assistant", "content": "Hello from"}
    assert EMAIL not in seen(closed).lower() and "555 0123" not in seen(closed)
    assert local.calls(CHAT)[0].body["messages"] == CONTACT


# -- cost ---------------------------------------------------------------------------------------------
PRICED = "price: {input_per_mtok_usd: 1000000, output_per_mtok_usd: 2000000}"  # 1 and 2 USD per token
GPU = "price: {gpu_hour_usd: 3.6, tokens_per_s: 1}"  # 0.001 USD per token, in and out
TO_CLOSED = "  - name: to-closed\n    when: {tags: closed}\n    route: {targets: [closed]}\n"


async def test_cost_header_is_the_answering_backends_price_times_its_usage(gateway, local, closed):
    url = await gateway(home_policy(local, closed, rules=TO_CLOSED, local_extra=GPU, closed_extra=PRICED))
    headers, completion = await chat(url, HELLO)
    assert headers["x-switchyard-backend"] == "local"
    usage = completion.usage
    assert float(headers["x-switchyard-cost-usd"]) == pytest.approx(
        (usage.prompt_tokens + usage.completion_tokens) * 0.001)
    headers, completion = await chat(url, HELLO, {"x-switchyard-tags": "closed"})
    assert headers["x-switchyard-backend"] == "closed"
    usage = completion.usage
    assert usage.prompt_tokens > 0 and usage.completion_tokens == len(closed.reply_text.split())
    assert float(headers["x-switchyard-cost-usd"]) == pytest.approx(usage.prompt_tokens * 1 +
                                                                    usage.completion_tokens * 2)
    assert "x-switchyard-cost-estimate-usd" not in headers


async def test_a_fallback_answer_is_billed_at_the_answering_backends_price_only(gateway, local, closed):
    local.faults.always(Fault(status=503))
    url = await gateway(home_policy(local, closed, local_extra="price: {input_per_mtok_usd: 9000000, "
                                                              "output_per_mtok_usd: 9000000}", closed_extra=PRICED))
    headers, completion = await chat(url, HELLO)
    assert headers["x-switchyard-backend"] == "closed" and headers["x-switchyard-tried"] == "local"
    usage = completion.usage
    assert float(headers["x-switchyard-cost-usd"]) == pytest.approx(usage.prompt_tokens + 2 * usage.completion_tokens)


async def test_streams_carry_a_cost_estimate(gateway, local, closed):
    url = await gateway(home_policy(local, closed, rules=TO_CLOSED, closed_extra=PRICED))
    c = client(url)
    async with c.chat.completions.with_streaming_response.create(
            model="chat", messages=HELLO, stream=True, max_tokens=10,
            extra_headers={"x-switchyard-tags": "closed"}) as resp:
        text = "".join([ch.choices[0].delta.content or "" async for ch in await resp.parse() if ch.choices])
        headers = resp.headers
    assert text == closed.reply_text and headers["x-switchyard-backend"] == "closed"
    input_estimate = len("Say hello.") // 4 + 1  # characters / 4 (+1)
    assert float(headers["x-switchyard-cost-estimate-usd"]) == pytest.approx(input_estimate * 1 + 10 * 2)
    assert "x-switchyard-cost-usd" not in headers
    async with c.chat.completions.with_streaming_response.create(model="chat", messages=HELLO, stream=True) as resp:
        assert [ch async for ch in await resp.parse()]
        assert float(resp.headers["x-switchyard-cost-estimate-usd"]) == 0.0  # self-hosted without a price


# -- strategies ---------------------------------------------------------------------------------------
async def test_cheapest_fills_self_hosted_first_then_the_cheapest_closed(gateway, stack, local):
    pricey = await stack.enter_async_context(FakeOpenAI(name="pricey", model_name="big", api_key=CLOSED_KEY))
    cheap = await stack.enter_async_context(FakeOpenAI(name="cheap", model_name="small", api_key=CLOSED_KEY))
    policy = ("version: 1\nbackends:\n"
              f"  pricey: {closed_spec(pricey, 'price: {input_per_mtok_usd: 5, output_per_mtok_usd: 15}')}\n"
              f"  cheap: {closed_spec(cheap, 'price: {input_per_mtok_usd: 0.1, output_per_mtok_usd: 0.4}')}\n"
              f"  local: {local_spec(local)}\n"
              "models:\n  chat: {targets: [pricey, cheap, local]}\n"  # declared order: most expensive first
              "rules:\n  - {name: cost, route: {strategy: cheapest}}\n")
    url = await gateway(policy)
    _, decision = await explain(url, {"model": "chat", "messages": HELLO})
    assert decision["decision"]["targets"] == ["local", "cheap", "pricey"]
    headers, _ = await chat(url, HELLO)
    assert headers["x-switchyard-backend"] == "local"
    local.faults.always(Fault(status=503))
    headers, _ = await chat(url, HELLO)
    assert headers["x-switchyard-backend"] == "cheap"
    assert pricey.received == [] and len(cheap.calls(CHAT)) == 1


async def test_weighted_never_picks_a_zero_weight_target_first(gateway, stack, local):
    b = await stack.enter_async_context(FakeOpenAI(name="b", model_name="b"))
    c = await stack.enter_async_context(FakeOpenAI(name="c", model_name="c"))
    policy = ("version: 1\nbackends:\n"
              f"  zero: {local_spec(local)}\n  b: {local_spec(b)}\n  c: {local_spec(c)}\n"
              "models:\n  chat: {targets: [zero, b, c]}\n"
              "rules:\n  - {name: split, route: {strategy: weighted, weights: {zero: 0, b: 1, c: 3}}}\n")
    url = await gateway(policy)
    answered = [(await chat(url, HELLO))[0]["x-switchyard-backend"] for _ in range(12)]
    assert set(answered) <= {"b", "c"} and len(answered) == 12
    assert local.received == []
    assert len(b.calls(CHAT)) + len(c.calls(CHAT)) == 12
    b.faults.always(Fault(status=503))
    c.faults.always(Fault(status=503))
    headers, _ = await chat(url, HELLO)  # weight 0 is last, not excluded
    assert headers["x-switchyard-backend"] == "zero"


async def test_spillover_leaves_a_busy_self_hosted_target_and_comes_back_with_hysteresis(gateway, local, closed):
    rules = ("  - name: spill\n    route:\n      targets: [local, closed]\n"
             "      spillover: {queue_over: 4, resume_below: 0.5}\n")
    url = await gateway(home_policy(local, closed, rules=rules, local_kind="llamacpp",
                                    settings="{load_scrape_interval_s: 0.05, load_stale_after_s: 5}"))

    async def queue_is(n: int) -> bool:
        return (await get(url, "/admin/backends"))["backends"]["local"]["load"]["queue"] == n

    async def backend() -> str:
        return (await chat(url, HELLO))[0]["x-switchyard-backend"]

    await poll(lambda: queue_is(0))
    local.deferred = 3  # busy, but under the threshold
    await poll(lambda: queue_is(3))
    assert await backend() == "local"
    local.deferred = 20
    await poll(lambda: queue_is(20))
    assert [await backend() for _ in range(2)] == ["closed", "closed"]
    assert (await get(url, "/admin/backends"))["spilling"] == ["local"]
    local.deferred = 3  # under the threshold, but not under resume_below × threshold: still spilling
    await poll(lambda: queue_is(3))
    assert await backend() == "closed"
    local.deferred = 0
    await poll(lambda: queue_is(0))
    assert await backend() == "local"
    assert (await get(url, "/admin/backends"))["spilling"] == []
    assert len(closed.calls(CHAT)) == 3 and len(local.calls(CHAT)) == 2
    # sensitive requests never spill, even through a rule that lists the closed target: they wait for local
    local.deferred = 20
    await poll(lambda: queue_is(20))
    headers, _ = await chat(url, SENSITIVE["card"][0])
    assert headers["x-switchyard-backend"] == "local" and headers["x-switchyard-rule"] == "spill"
    assert headers["x-switchyard-sensitivity"] == "restricted"
    assert CARD not in seen(closed)


async def test_spillover_hysteresis_survives_requests_planned_by_other_rules(gateway, local, closed):
    rules = ("  - name: spill\n    when: {sensitivity: {lt: confidential}}\n    route:\n"
             "      targets: [local, closed]\n      spillover: {queue_over: 4, resume_below: 0.5}\n")
    url = await gateway(home_policy(local, closed, rules=rules, local_kind="llamacpp",
                                    settings="{load_scrape_interval_s: 0.05, load_stale_after_s: 5}"))

    async def queue_is(n: int) -> bool:
        return (await get(url, "/admin/backends"))["backends"]["local"]["load"]["queue"] == n

    local.deferred = 20
    await poll(lambda: queue_is(20))
    assert (await chat(url, HELLO))[0]["x-switchyard-backend"] == "closed"
    local.deferred = 3  # under the threshold, above resume_below × threshold: keep spilling
    await poll(lambda: queue_is(3))
    assert (await chat(url, HELLO))[0]["x-switchyard-backend"] == "closed"
    headers, _ = await chat(url, SENSITIVE["card"][0])  # another rule's request, in between
    assert headers["x-switchyard-rule"] == "sensitive-stays-home" and headers["x-switchyard-backend"] == "local"
    assert (await get(url, "/admin/backends"))["spilling"] == ["local"]
    assert (await chat(url, HELLO))[0]["x-switchyard-backend"] == "closed"


# -- explain -------------------------------------------------------------------------------------
async def test_a_body_the_scanner_cannot_read_fails_closed_and_explain_says_why(gateway, local, closed):
    """Issue 10: a body with more strings than the scanner reads is not read past them — the
    request is treated as restricted (kept home) and explain names the reason. (Nesting past
    the scanner's depth cap is refused with a 400 since issue 11: ``tests/e2e/test_bad_input.py``.)"""
    url = await gateway(home_policy(local, closed))
    body = {"model": "chat", "messages": [{"role": "user", "content": "hello"}],
            "x_extra": [f"note {i}" for i in range(MAX_TEXTS + 1)]}
    _, result = await explain(url, body)
    facts = result["facts"]
    assert facts["sensitivity"] == "restricted" and "strings" in (facts["unreadable"] or "")
    assert result["decision"]["targets"] == ["local"]
    _, plain = await explain(url, {"model": "chat", "messages": [{"role": "user", "content": "hello"}]})
    assert plain["facts"]["unreadable"] is None


async def test_explain_shows_facts_rules_decision_and_candidates_without_calling_anything(gateway, local, closed):
    rules = "  - name: ops-team\n    when: {team: ops}\n    route: {targets: [local]}\n"
    url = await gateway(home_policy(local, closed, rules=rules, closed_extra=PRICED,
                                    local_circuit="{failures: 1, cooldown_s: 60}"))
    body = {"model": "chat", "max_tokens": 10,
            "messages": [{"role": "user", "content": f"My card is {CARD}; mail {EMAIL}"}]}
    text, result = await explain(url, body)
    for secret in (CARD, CARD.replace(" ", ""), EMAIL, "4111"):
        assert secret not in text
    facts = result["facts"]
    assert facts["sensitivity"] == "restricted" and facts["detectors"] == ["credit_card", "email"]
    assert facts["findings"] == [
        {"detector": "credit_card", "level": "restricted", "location": "messages[0].content"},
        {"detector": "email", "level": "confidential", "location": "messages[0].content"}]
    assert facts["max_tokens"] == 10 and facts["team"] is None
    assert [(r["rule"], r["matched"]) for r in result["rules"]] == [
        ("ops-team", False), ("sensitive-stays-home", True), ("self-hosted-first", False)]
    assert result["rules"][0]["why"] == "team eq 'ops': no (team is None)"
    assert result["rules"][1]["why"] == "matched: sensitivity gte 'confidential'"
    assert result["rules"][2]["why"] == "not evaluated: an earlier rule matched"
    assert result["decision"] == {"rule": "sensitive-stays-home", "strategy": "priority", "denied": None,
                                  "unavailable": None, "targets": ["local"], "allowed": ["local"],
                                  "spilling": [], "redact": [], "slo": None, "hedge": None, "late": {}}

    harmless = {"model": "chat", "max_tokens": 10, "messages": HELLO}
    _, result = await explain(url, harmless)
    candidates = {c["backend"]: c for c in result["candidates"]}
    assert result["decision"]["rule"] == "self-hosted-first"
    assert result["decision"]["targets"] == ["local", "closed"]
    assert candidates["closed"]["estimated_cost_usd"] == pytest.approx((len("Say hello.") // 4 + 1) + 10 * 2)
    assert candidates["local"]["estimated_cost_usd"] == 0.0 and candidates["local"]["self_hosted"] is True
    assert candidates["local"]["circuit"] == "closed"

    _, result = await explain(url, harmless, query="?team=ops")
    assert result["facts"]["team"] == "ops" and result["decision"]["rule"] == "ops-team"
    assert result["rules"][0] == {"rule": "ops-team", "matched": True, "why": "matched: team eq 'ops'"}

    _, result = await explain(url, harmless, headers={"x-switchyard-sensitivity": "confidential"})
    assert result["decision"]["rule"] == "sensitive-stays-home" and result["facts"]["sensitivity"] == "confidential"
    assert local.received == [] and closed.received == []  # explain called nothing

    # force the local circuit open, then ask again
    local.faults.always(Fault(status=503))
    headers, _ = await chat(url, HELLO)
    assert headers["x-switchyard-backend"] == "closed"
    received = (len(local.received), len(closed.received))
    _, result = await explain(url, {"model": "chat", "messages": [{"role": "user", "content": f"card {CARD}"}]})
    candidates = {c["backend"]: c for c in result["candidates"]}
    assert candidates["local"]["allowed"] is True and candidates["local"]["circuit"] == "open"
    assert "circuit open" in candidates["local"]["reason"]
    _, result = await explain(url, {"model": "chat", "messages": [{"role": "user", "content": f"card {CARD}"}]},
                              query="?team=nobody")
    assert result["decision"]["targets"] == ["local"]  # explain plans as the router would; skipping is the engine's
    assert (len(local.received), len(closed.received)) == received  # still nothing called


async def test_explain_lists_why_a_closed_candidate_is_not_allowed(gateway, local, closed):
    rules = "  - name: everything\n    when: {tags: all}\n    route: {targets: [closed, local]}\n"
    url = await gateway(home_policy(local, closed, rules=rules))
    text, result = await explain(url, {"model": "chat", "messages": [{"role": "user", "content": f"to {EMAIL}"}]},
                                 headers={"x-switchyard-tags": "all"})
    assert EMAIL not in text
    assert result["decision"]["rule"] == "everything" and result["decision"]["targets"] == ["local"]
    candidates = {c["backend"]: c for c in result["candidates"]}
    assert candidates["closed"]["allowed"] is False
    assert candidates["closed"]["reason"] == "not allowed at sensitivity confidential (max internal)"
    assert candidates["local"]["allowed"] is True
    assert local.received == [] and closed.received == []


# -- tags and metadata ---------------------------------------------------------------------------
async def test_tags_header_and_body_metadata_match_rules(gateway, local, closed):
    rules = ("  - name: batch-local\n    when: {tags: batch}\n    route: {targets: [local]}\n"
             "  - name: gold-closed\n    when: {metadata.tier: gold}\n    route: {targets: [closed]}\n"
             "  - name: eu-and-finance\n    when: {tags: {all: [eu, finance]}}\n    route: {targets: [local]}\n")
    url = await gateway(home_policy(local, closed, rules=rules))
    headers, _ = await chat(url, HELLO, {"x-switchyard-tags": "nightly , batch"})
    assert (headers["x-switchyard-rule"], headers["x-switchyard-backend"]) == ("batch-local", "local")
    headers, _ = await chat(url, HELLO, extra_body={"metadata": {"tier": "gold"}})
    assert (headers["x-switchyard-rule"], headers["x-switchyard-backend"]) == ("gold-closed", "closed")
    headers, _ = await chat(url, HELLO, {"x-switchyard-tags": "finance,eu"})
    assert headers["x-switchyard-rule"] == "eu-and-finance"
    headers, _ = await chat(url, HELLO, {"x-switchyard-tags": "finance"}, extra_body={"metadata": {"tier": "tin"}})
    assert headers["x-switchyard-rule"] == "self-hosted-first"
    # tags never open a way out for sensitive data: the first matching rule lists the closed target only
    with pytest.raises(openai.APIStatusError) as info:
        await chat(url, SENSITIVE["card"][0], extra_body={"metadata": {"tier": "gold"}})
    assert info.value.status_code == 503 and info.value.body["code"] == "no_backend_available"
    assert "under rule 'gold-closed'" in info.value.body["message"]
    assert CARD not in seen(closed)
    assert len(closed.calls(CHAT)) == 1
