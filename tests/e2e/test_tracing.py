"""Traces through the running gateway (OpenTelemetry SDK, an in-memory span exporter): one
SERVER span per request, one CLIENT span per backend attempt with the GenAI semantic
conventions' names and attributes, the client's ``traceparent`` as parent, the attempt's
``traceparent`` sent to the self-hosted backend, and no prompt or answer text unless the
policy opts in."""

from __future__ import annotations

import openai
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from router.telemetry import Telemetry
from tests.fakes.faults import Fault
from tests.fakes.openai_upstream import FakeOpenAI

KEY = "sk-trace-team-000000000000"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


def policy(first: FakeOpenAI, second: FakeOpenAI, record_content: bool = False) -> str:
    return f"""
version: 1
backends:
  first: {{kind: vllm, base_url: '{first.base_url}', model: model-one, retry: {{attempts: 1}}}}
  second: {{kind: vllm, base_url: '{second.base_url}', model: model-two,
            price: {{input_per_mtok_usd: 1.0, output_per_mtok_usd: 2.0}}}}
models:
  chat: {{targets: [first, second]}}
teams:
  search: {{keys: ["{KEY}"]}}
telemetry: {{record_content: {str(record_content).lower()}}}
"""


def by_kind(spans: tuple[ReadableSpan, ...], kind: SpanKind) -> list[ReadableSpan]:
    return [s for s in spans if s.kind == kind]


async def test_a_request_and_its_attempts_are_spans(gateway) -> None:
    exporter = InMemorySpanExporter()
    async with FakeOpenAI() as first, FakeOpenAI() as second:
        first.faults.always(Fault(status=500))
        url = await gateway(policy(first, second), telemetry=Telemetry(span_exporter=exporter))
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0,
                                    default_headers={"traceparent": f"00-{TRACE_ID}-{CLIENT_SPAN}-01"})
        answer = await client.chat.completions.create(model="chat", max_tokens=12, temperature=0.3,
                                                      messages=[{"role": "user", "content": "a secret recipe"}])
        spans = exporter.get_finished_spans()

    (server,) = by_kind(spans, SpanKind.SERVER)
    assert server.name == "chat chat"
    assert f"{server.context.trace_id:032x}" == TRACE_ID  # the client's trace continues
    assert server.parent is not None and f"{server.parent.span_id:016x}" == CLIENT_SPAN
    attrs = server.attributes or {}
    assert attrs["gen_ai.operation.name"] == "chat" and attrs["gen_ai.request.model"] == "chat"
    assert attrs["gen_ai.provider.name"] == "vllm" and attrs["gen_ai.response.model"] == answer.model
    assert attrs["gen_ai.usage.input_tokens"] == answer.usage.prompt_tokens  # type: ignore[union-attr]
    assert attrs["gen_ai.usage.output_tokens"] == answer.usage.completion_tokens  # type: ignore[union-attr]
    assert list(attrs["gen_ai.response.finish_reasons"]) == ["stop"]  # type: ignore[arg-type]
    assert attrs["gen_ai.request.max_tokens"] == 12 and attrs["gen_ai.request.temperature"] == 0.3
    assert attrs["switchyard.team"] == "search" and attrs["switchyard.rule"] == "default"
    assert attrs["switchyard.backend"] == "second" and attrs["switchyard.fallback"] is True
    assert str(attrs["switchyard.reason"]).startswith("first: upstream_error")  # its 500, as a gateway 502
    assert attrs["switchyard.outcome"] == "fallback" and attrs["switchyard.sensitivity"] == "public"
    assert attrs["switchyard.cost_usd"] > 0  # type: ignore[operator]
    assert not any("message" in k or "content" in k for k in attrs)  # no text unless the policy opts in

    failed, ok = sorted(by_kind(spans, SpanKind.CLIENT), key=lambda s: s.start_time or 0)
    for span in (failed, ok):
        assert span.parent is not None and span.parent.span_id == server.context.span_id
        assert span.context.trace_id == server.context.trace_id
    assert failed.name == "chat model-one" and ok.name == "chat model-two"
    assert (failed.attributes or {})["switchyard.attempt"] == 1 and (ok.attributes or {})["switchyard.attempt"] == 2
    assert (failed.attributes or {})["error.type"] and failed.status.status_code == StatusCode.ERROR
    assert (ok.attributes or {})["gen_ai.provider.name"] == "vllm"
    # each self-hosted attempt carried its own span as the parent for the backend's trace
    for fake, span in ((first, failed), (second, ok)):
        sent = fake.received[-1].headers["traceparent"]
        assert sent == f"00-{TRACE_ID}-{span.context.span_id:016x}-01"


async def test_content_only_when_the_policy_opts_in(gateway) -> None:
    exporter = InMemorySpanExporter()
    async with FakeOpenAI() as first, FakeOpenAI() as second:
        url = await gateway(policy(first, second, record_content=True), telemetry=Telemetry(span_exporter=exporter))
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0)
        await client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "a secret recipe"}])
    (server,) = by_kind(exporter.get_finished_spans(), SpanKind.SERVER)
    assert "a secret recipe" in str((server.attributes or {})["gen_ai.input.messages"])
    assert "gen_ai.output.messages" in (server.attributes or {})


async def test_a_denied_request_is_a_span_with_its_error(gateway) -> None:
    exporter = InMemorySpanExporter()
    async with FakeOpenAI() as first, FakeOpenAI() as second:
        url = await gateway(policy(first, second), telemetry=Telemetry(span_exporter=exporter))
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="sk-wrong", max_retries=0)
        try:
            await client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}])
        except openai.AuthenticationError:
            pass
        else:
            raise AssertionError("a wrong key was accepted")
    (server,) = by_kind(exporter.get_finished_spans(), SpanKind.SERVER)
    attrs = server.attributes or {}
    assert attrs["error.type"] == "invalid_api_key" and attrs["switchyard.outcome"] == "denied"
    assert attrs["http.response.status_code"] == 401 and server.status.status_code == StatusCode.ERROR
    assert not by_kind(exporter.get_finished_spans(), SpanKind.CLIENT)


async def test_no_tracing_without_an_endpoint() -> None:
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}
    made = [Telemetry(env={}), Telemetry(enabled=False, env=endpoint), Telemetry(env=endpoint)]
    try:
        assert [(t.enabled, t.tracing) for t in made] == [(True, False), (False, False), (True, True)]
    finally:
        for telemetry in made:
            telemetry.shutdown()
