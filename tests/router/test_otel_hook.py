"""Pins the private OpenTelemetry hook that ``router/telemetry.py`` relies on.

``router.telemetry`` keeps its per-request histograms in plain Python (``_Histogram``: the
SDK's synchronous ``record()`` costs several µs a call) and merges them into what each
metric reader collects (``_Merger``). It does so by overriding the SDK's *protected*
``MetricReader._receive_metrics(metrics_data, timeout_millis=10_000, **kwargs)`` — the method
``MetricReader.collect()`` hands every collection to — in ``_PrometheusReader`` (a
``PrometheusMetricReader``: ``GET /metrics``) and ``_PeriodicReader`` (a
``PeriodicExportingMetricReader``: OTLP push), calling ``super()._receive_metrics(merged,
timeout_millis, **kwargs)``; and it builds the SDK's point data classes positionally.

None of that is public API. If an upgrade renames the hook, changes its parameters, stops
calling it from ``collect()`` or reorders the point fields, ``/metrics`` would silently lose
the latency and token histograms; these tests fail first, naming the installed versions.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Sequence
from importlib.metadata import version
from typing import Any

import pytest
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.resources import Resource

from router.record import RequestRecord
from router.telemetry import Telemetry, _Histogram, _Merger, _PeriodicReader, _PrometheusReader

PACKAGES = ("opentelemetry-sdk", "opentelemetry-exporter-prometheus", "prometheus-client")
HOOK = "_receive_metrics"


def broken(detail: str) -> str:
    """The failure message: what changed, which versions are installed, what to re-check."""
    installed = ", ".join(f"{name}=={version(name)}" for name in PACKAGES)
    return (f"the private OpenTelemetry hook used by router/telemetry.py changed: {detail}\n"
            f"installed (pinned in requirements.lock): {installed}\n"
            f"router.telemetry overrides MetricReader.{HOOK}(metrics_data, timeout_millis=10_000, **kwargs) "
            "in _PrometheusReader and _PeriodicReader to merge its in-process histograms (_Merger) into "
            "every collection; re-check them against this release, or keep the old pins.")


class _Spy(MetricReader):
    """The smallest reader: it records what ``collect()`` hands to the hook."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def _receive_metrics(self, *args: Any, **kwargs: Any) -> None:
        self.calls.append((args, kwargs))

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        pass


class _Capture(MetricExporter):
    """An OTLP stand-in: keeps what the periodic reader exports (no network)."""

    def __init__(self) -> None:
        super().__init__()
        self.exported: list[MetricsData] = []

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        self.exported.append(metrics_data)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        pass


def test_collect_hands_each_collection_to_the_hook() -> None:
    try:
        spy = _Spy()
    except TypeError as exc:  # the SDK added an abstract method: the hook was renamed or split
        pytest.fail(broken(f"a MetricReader that implements only {HOOK} and shutdown cannot be built: {exc}"))
    provider = MeterProvider(metric_readers=[spy])
    try:
        provider.get_meter("hook-test").create_counter("hook.test").add(1)
        spy.collect(timeout_millis=1234)
    finally:
        provider.shutdown()
    assert len(spy.calls) == 1, broken(f"MetricReader.collect() called {HOOK} {len(spy.calls)} times, not once")
    (args, kwargs), = spy.calls
    assert len(args) == 1 and isinstance(args[0], MetricsData), broken(
        f"{HOOK} no longer gets the MetricsData as its one positional argument: args={args!r}")
    assert kwargs == {"timeout_millis": 1234}, broken(
        f"{HOOK} is called with {kwargs!r}, not timeout_millis=<collect's timeout>")


def _shape(cls: type) -> list[tuple[str, Any, Any]]:
    method = getattr(cls, HOOK, None)
    assert callable(method), broken(f"{cls.__module__}.{cls.__qualname__} has no callable {HOOK}")
    return [(p.name, p.kind, p.default) for p in inspect.signature(method).parameters.values()]


@pytest.mark.parametrize("cls", [MetricReader, PrometheusMetricReader, PeriodicExportingMetricReader,
                                 _PrometheusReader, _PeriodicReader])
def test_hook_signature(cls: type) -> None:
    positional = inspect.Parameter.POSITIONAL_OR_KEYWORD
    expected = [("self", positional, inspect.Parameter.empty), ("metrics_data", positional, inspect.Parameter.empty),
                ("timeout_millis", positional, 10_000), ("kwargs", inspect.Parameter.VAR_KEYWORD,
                                                         inspect.Parameter.empty)]
    assert _shape(cls) == expected, broken(
        f"{cls.__module__}.{cls.__qualname__}.{HOOK}{inspect.signature(getattr(cls, HOOK))} "
        "is not (self, metrics_data, timeout_millis=10000, **kwargs)")


def test_the_readers_telemetry_subclasses_implement_the_hook_themselves() -> None:
    """``super()._receive_metrics`` must reach the exporter's own code, not the abstract stub."""
    for cls in (PrometheusMetricReader, PeriodicExportingMetricReader):
        assert HOOK in vars(cls), broken(f"{cls.__qualname__} no longer defines {HOOK} itself")
        assert not getattr(vars(cls)[HOOK], "__isabstractmethod__", False), broken(
            f"{cls.__qualname__}.{HOOK} is abstract")


@pytest.mark.parametrize(("cls", "fields"), [
    (HistogramDataPoint, ("attributes", "start_time_unix_nano", "time_unix_nano", "count", "sum", "bucket_counts",
                          "explicit_bounds", "min", "max")),
    (Metric, ("name", "description", "unit", "data")),
    (Histogram, ("data_points", "aggregation_temporality")),
    (MetricsData, ("resource_metrics",)),
    (ResourceMetrics, ("resource", "scope_metrics", "schema_url")),
    (ScopeMetrics, ("scope", "metrics", "schema_url")),
])
def test_point_classes_keep_the_positional_order_telemetry_uses(cls: type, fields: Sequence[str]) -> None:
    names = tuple(f.name for f in dataclasses.fields(cls))
    assert names[:len(fields)] == tuple(fields), broken(
        f"{cls.__qualname__} fields are {names}; _Histogram.metric and _Merger pass {tuple(fields)} positionally")
    required = [f.name for f in dataclasses.fields(cls)[len(fields):]
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    assert not required, broken(f"{cls.__qualname__} has new required fields {required}")


def test_prometheus_scrape_carries_the_merged_histogram() -> None:
    """End to end through ``PrometheusMetricReader``: the histogram is no SDK instrument, so
    it reaches ``/metrics`` only through the hook."""
    telemetry = Telemetry(env={})
    try:
        telemetry.record(RequestRecord("chat", alias="chat", backend="gpu", provider="vllm", duration_s=0.3))
        telemetry.record(RequestRecord("chat", alias="chat", backend="gpu", provider="vllm", duration_s=0.5))
        text = telemetry.metrics_text().decode()
    finally:
        telemetry.shutdown()
    count = re.search(r'^gen_ai_client_operation_duration_seconds_count\{[^}]*switchyard_backend="gpu"[^}]*\} (\S+)$',
                      text, re.MULTILINE)
    assert count is not None and float(count.group(1)) == 2, broken(
        "GET /metrics no longer shows the in-process histogram gen_ai.client.operation.duration "
        f"(PrometheusMetricReader.{HOOK} bypassed?):\n{text[:2000]}")
    assert re.search(r'^gen_ai_client_operation_duration_seconds_bucket\{[^}]*le="0\.32"[^}]*\} 1\.0$', text,
                     re.MULTILINE), broken(f"the merged histogram's buckets are wrong:\n{text[:2000]}")


def test_periodic_export_carries_the_merged_histogram(monkeypatch: pytest.MonkeyPatch) -> None:
    """The OTLP path: ``PeriodicExportingMetricReader`` exports what the hook merged."""
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "3600000")  # no background export during the test
    histogram = _Histogram("hook.test.duration", "s", "", [0.1, 1.0])
    histogram.record(0.5, (("where", "here"),))
    exporter = _Capture()
    reader = _PeriodicReader(_Merger([histogram], Resource.create({})), exporter)
    provider = MeterProvider(metric_readers=[reader])
    try:
        provider.get_meter("hook-test").create_counter("hook.test.requests").add(1)
        reader.collect()
    finally:
        provider.shutdown()
    assert exporter.exported, broken(f"PeriodicExportingMetricReader.{HOOK} exported nothing")
    metrics = {m.name: m for rm in exporter.exported[0].resource_metrics for sm in rm.scope_metrics
               for m in sm.metrics}
    assert "hook.test.requests" in metrics, broken(f"the SDK's own metrics were lost in the merge: {sorted(metrics)}")
    assert "hook.test.duration" in metrics, broken(
        f"the exported collection lacks the merged histogram: {sorted(metrics)}")
    point, = metrics["hook.test.duration"].data.data_points
    assert (point.count, point.sum, list(point.bucket_counts)) == (1, 0.5, [0, 1, 0]), broken(
        f"the merged histogram point came out as {point!r}")
