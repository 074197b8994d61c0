"""``Telemetry`` metrics as Prometheus text: the in-process histograms and counters come out
with the OTel Prometheus exporter's names, labels, bucket semantics and cumulative values;
labels carry no request-level ids; telemetry off records nothing."""

from __future__ import annotations

import re

from router.record import RequestRecord
from router.telemetry import Telemetry


def sample(text: str, name: str, **labels: str) -> float:
    """The value of the one series ``name`` whose labels include ``labels``."""
    found = []
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            series, value = line.rsplit(" ", 1)
            got = dict(re.findall(r'(\w+)="([^"]*)"', series))
            if series.split("{")[0] == name and all(got.get(k) == v for k, v in labels.items()):
                found.append(float(value))
    assert len(found) == 1, (name, labels, found)
    return found[0]


def answered(duration_s: float, **kw: object) -> RequestRecord:
    fields: dict[str, object] = {"alias": "chat", "team": "search", "rule": "default", "backend": "gpu",
                                 "provider": "vllm", "self_hosted": True, "input_tokens": 30, "output_tokens": 7,
                                 "cost_usd": 0.25, "savings_usd": 0.5, "duration_s": duration_s,
                                 "upstream_s": duration_s / 2}
    fields.update(kw)
    return RequestRecord("chat", **fields)  # type: ignore[arg-type]


def test_histograms_and_counters_in_prometheus_text() -> None:
    telemetry = Telemetry(env={})
    try:
        for duration in (0.005, 0.01, 0.015, 3.0):
            telemetry.record(answered(duration))
        telemetry.record(answered(0.2, stream=True, ttft_s=0.03))
        telemetry.record(RequestRecord("chat", alias="chat", team="search", rule="default",
                                       error_type="rate_limit_exceeded", status=429, duration_s=0.001))
        text = telemetry.metrics_text().decode()
    finally:
        telemetry.shutdown()
    ok = {"gen_ai_operation_name": "chat", "gen_ai_request_model": "chat", "gen_ai_provider_name": "vllm",
          "switchyard_backend": "gpu"}
    duration = "gen_ai_client_operation_duration_seconds"
    # (b_{i-1}, b_i] buckets, cumulative in the text format: 0.01 itself is in le="0.01"
    assert sample(text, duration + "_bucket", le="0.01", **ok) == 2
    assert sample(text, duration + "_bucket", le="0.02", **ok) == 3
    assert sample(text, duration + "_bucket", le="+Inf", **ok) == 5
    assert sample(text, duration + "_count", **ok) == 5
    assert abs(sample(text, duration + "_sum", **ok) - 3.23) < 1e-9
    assert sample(text, duration + "_count", error_type="rate_limit_exceeded") == 1
    tokens = "gen_ai_client_token_usage"
    assert sample(text, tokens + "_sum", gen_ai_token_type="input", switchyard_team="search") == 150
    assert sample(text, tokens + "_count", gen_ai_token_type="output") == 5
    assert sample(text, "gen_ai_client_operation_time_to_first_chunk_seconds_count", **ok) == 1
    assert sample(text, "switchyard_gateway_overhead_seconds_count", switchyard_stream="false") == 5
    assert sample(text, "switchyard_cost_USD_total", switchyard_team="search", switchyard_self_hosted="true",
                  switchyard_rule="default") == 1.25
    assert sample(text, "switchyard_savings_USD_total", switchyard_team="search") == 2.5
    assert sample(text, "switchyard_requests_total", switchyard_outcome="ok") == 5
    assert sample(text, "switchyard_requests_total", switchyard_outcome="denied",
                  error_type="rate_limit_exceeded") == 1
    assert "request_id" not in text and "key_id" not in text


def test_telemetry_off_records_nothing() -> None:
    telemetry = Telemetry(enabled=False, env={})
    try:
        telemetry.record(answered(0.01))
        assert b"gen_ai_client" not in telemetry.metrics_text()
        assert b"switchyard_requests_total" not in telemetry.metrics_text()
    finally:
        telemetry.shutdown()
