"""OpenTelemetry traces and metrics. The only module that imports the OpenTelemetry SDK.

Traces (on when an OTLP endpoint is configured — ``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` — or a span exporter is given; off by default): one
SERVER span per request and one CLIENT span per backend attempt, following the GenAI
semantic conventions (span name ``{gen_ai.operation.name} {gen_ai.request.model}``), plus
``switchyard.*`` attributes. A client's W3C ``traceparent`` is the parent of the server
span; each attempt on a self-hosted backend carries the attempt span's ``traceparent``.
Prompt and completion text are recorded only with the policy's ``telemetry.record_content``.

Metrics (always on unless the gateway runs with telemetry off): the OTel metrics API,
exported at ``GET /metrics`` in Prometheus text format (OTel Prometheus exporter, this
gateway's own registry) and pushed over OTLP/HTTP with ``OTEL_METRICS_EXPORTER=otlp``.
Traces are sampled: 1 % of new traces by default (``SWITCHYARD_TRACE_RATIO``), every trace
a client's sampled ``traceparent`` started; ``OTEL_TRACES_SAMPLER`` hands the choice to the SDK. Labels are
bounded by the policy (teams, aliases, rules, backends): no user, key or request ids.
"""

from __future__ import annotations

import logging
import os
import random
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import orjson
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    HistogramDataPoint,
    Metric,
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.metrics.export import Histogram as HistogramData
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import CollectorRegistry, generate_latest

from policies import BackendSpec
from router.record import RequestRecord

__all__ = ["Telemetry", "provider_name"]

#: the span context of a request that is not traced: shared, reentrant, yields None
_NO_SPAN: AbstractContextManager[None] = nullcontext()

log = logging.getLogger("switchyard.telemetry")

#: gen_ai.provider.name for litellm-backed kinds (the semantic conventions' well-known values);
#: a self-hosted backend reports its server kind (vllm, tgi, llamacpp, ollama).
_PROVIDERS = {"openai": "openai", "anthropic": "anthropic", "gemini": "gcp.gemini", "vertex_ai": "gcp.vertex_ai",
              "bedrock": "aws.bedrock", "azure": "azure.ai.openai", "mistral": "mistral_ai", "cohere": "cohere",
              "groq": "groq", "deepseek": "deepseek", "xai": "x_ai", "perplexity": "perplexity"}
_SECONDS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92]
_TTFC = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0]
_TOKENS = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864]
_OVERHEAD = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25]
_ERROR = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0]  # |actual − predicted|
CIRCUIT_STATES = {"closed": 0, "half_open": 1, "open": 2}
_PROPAGATOR = TraceContextTextMapPropagator()


def provider_name(spec: BackendSpec) -> str:
    if spec.is_self_hosted:
        return spec.kind
    return _PROVIDERS.get(spec.kind, spec.kind)


#: Share of new traces recorded when ``OTEL_TRACES_SAMPLER`` is not set: a span costs ~0.1 ms
#: of CPU in the OTel Python SDK (bench/telemetry.py), so every request traced would double
#: the gateway's CPU. Requests whose client sent a sampled ``traceparent`` are always traced.
DEFAULT_TRACE_RATIO = 0.01


def _ratio(env: Mapping[str, str]) -> float | None:
    """The share of new traces to record (``SWITCHYARD_TRACE_RATIO``, default
    ``DEFAULT_TRACE_RATIO``); ``None`` when ``OTEL_TRACES_SAMPLER`` is set: then the SDK's
    own sampler decides, from the standard variables, and every request gets span objects."""
    if env.get("OTEL_TRACES_SAMPLER"):
        return None
    ratio = float(env.get("SWITCHYARD_TRACE_RATIO", DEFAULT_TRACE_RATIO))
    if not 0 <= ratio <= 1:
        raise ValueError(f"SWITCHYARD_TRACE_RATIO must be between 0 and 1, got {ratio}")
    return ratio


def tracing_endpoint(env: Mapping[str, str]) -> str | None:
    return env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None


class Telemetry:
    """One per process. ``enabled=False``: no metrics, no spans (``/metrics`` says so)."""

    def __init__(self, *, enabled: bool = True, span_exporter: SpanExporter | None = None,
                 env: Mapping[str, str] | None = None, service_name: str | None = None) -> None:
        env = os.environ if env is None else env
        self.enabled = enabled
        self.record_content = False  # the policy's telemetry.record_content (set per gateway)
        self.registry = CollectorRegistry(auto_describe=True)
        resource = Resource.create({"service.name": service_name or env.get("OTEL_SERVICE_NAME") or "switchyard"})
        endpoint = tracing_endpoint(env)
        # the per-request histograms are aggregated here (``_Histogram``) and merged into what
        # each reader collects: the SDK's synchronous record() costs 6-9 µs per call
        self._histograms = [
            _Histogram("gen_ai.client.token.usage", "{token}", "Tokens used per request, by token type", _TOKENS),
            _Histogram("gen_ai.client.operation.duration", "s", "Duration of a request, from arrival to its last "
                       "byte", _SECONDS),
            _Histogram("gen_ai.client.operation.time_to_first_chunk", "s", "Time to the first chunk of a streamed "
                       "answer", _TTFC),
            _Histogram("switchyard.gateway.overhead", "s", "Time spent in the gateway (upstream time excluded)",
                       _OVERHEAD),
            _Histogram("switchyard.prediction.error", "s", "How far the predicted time to first token or latency "
                       "of the backend that answered was off (policies.latency), late or early", _ERROR)]
        self._tokens, self._duration, self._ttfc, self._overhead, self._error = self._histograms
        merge = _Merger(self._histograms, resource)
        readers: list[MetricReader] = [_PrometheusReader(merge, disable_target_info=True, scope_info_enabled=False,
                                                         registry=self.registry)]
        # pushing metrics over OTLP is opt-in (OTEL_METRICS_EXPORTER=otlp): a second reader
        # aggregates every measurement a second time; a Collector can scrape /metrics instead
        if enabled and "otlp" in env.get("OTEL_METRICS_EXPORTER", "").split(","):
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

            readers.append(_PeriodicReader(merge, OTLPMetricExporter()))
        self._meters = MeterProvider(metric_readers=readers, resource=resource,
                                     exemplar_filter=AlwaysOffExemplarFilter())  # the Prometheus text has none
        self._tracers: TracerProvider | None = None
        self._ratio: float | None = None
        self.tracing = enabled and (span_exporter is not None or endpoint is not None)
        if self.tracing:
            self._ratio = _ratio(env)
            # the decision is made up front (``request_span``): an unsampled request creates no span at all
            self._tracers = TracerProvider(resource=resource, sampler=None if self._ratio is None else ALWAYS_ON)
            if span_exporter is not None:  # tests: every span, exported at once
                self._ratio = 1.0
                self._tracers = TracerProvider(resource=resource, sampler=ALWAYS_ON)
                self._tracers.add_span_processor(SimpleSpanProcessor(span_exporter))
            else:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

                self._tracers.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
            self._tracer = self._tracers.get_tracer("switchyard")
        meter = self._meters.get_meter("switchyard")
        # The three per-request counters are summed here (a dict increment per request) and
        # reported as observable counters when a reader collects: the SDK's synchronous
        # ``add`` costs ~7 µs per call in attribute processing alone (bench/telemetry.py).
        self._sums: dict[str, dict[tuple[tuple[str, str], ...], float]] = {"cost": {}, "savings": {}, "requests": {},
                                                                            "shed": {}, "hedges": {}}
        meter.create_observable_counter("switchyard.cost", [self._observe("cost")], unit="USD",
                                        description="Cost of answered requests")
        meter.create_observable_counter("switchyard.savings", [self._observe("savings")], unit="USD",
                                        description="The same tokens at the reference closed model, minus the "
                                                    "actual cost (never negative per request)")
        meter.create_observable_counter("switchyard.requests", [self._observe("requests")], unit="{request}",
                                        description="Requests by outcome")
        meter.create_observable_counter("switchyard.requests.shed", [self._observe("shed")], unit="{request}",
                                        description="Requests refused before they were handled: overloaded "
                                                    "(settings.max_in_flight) or shutting_down")
        meter.create_observable_counter("switchyard.hedges", [self._observe("hedges")], unit="{request}",
                                        description="Hedged requests (route hedge): by the first target and "
                                                    "whether a hedge answered first (won) or the first did (lost)")
        self._queue = meter.create_gauge("switchyard.backend.queue_depth", unit="{request}",
                                         description="Requests waiting at a self-hosted backend (its /metrics)")
        self._in_flight = meter.create_gauge("switchyard.backend.in_flight", unit="{request}",
                                             description="Requests this gateway has open at a backend")
        self._circuit = meter.create_gauge("switchyard.backend.circuit_state",
                                           description="0 closed, 1 half-open, 2 open")
        self._replica_in_flight = meter.create_gauge("switchyard.replica.in_flight", unit="{request}",
                                                     description="Requests this gateway has open at a pool replica")
        self._replica_queue = meter.create_gauge("switchyard.replica.queue_depth", unit="{request}",
                                                 description="Requests waiting at a pool replica (its /metrics)")
        self._replica_out = meter.create_gauge("switchyard.replica.available",
                                               description="1 while a pool replica takes requests, 0 while it is "
                                                           "out after failures or draining")
        self._budget = meter.create_gauge("switchyard.budget.remaining", unit="USD",
                                          description="Budget left in the current UTC window")
        self._degraded = meter.create_gauge("switchyard.store.degraded",
                                            description="1 while the shared store (Redis) does not answer")

    # -- traces ------------------------------------------------------------------------------

    def request_span(self, record: RequestRecord, headers: Mapping[str, str]
                     ) -> AbstractContextManager[Span | None]:
        """The request's SERVER span, current for the attempts made inside it; for a request
        that is not traced (no exporter, or not sampled: most of them) a shared no-op context,
        no generator per request."""
        if not self.tracing or not self._sampled(headers.get("traceparent")):
            return _NO_SPAN
        return self._request_span(record, headers)

    @contextmanager
    def _request_span(self, record: RequestRecord, headers: Mapping[str, str]) -> Iterator[Span | None]:
        record.traced = True
        parent = _PROPAGATOR.extract(headers) if "traceparent" in headers else None
        span = self._tracer.start_span(record.operation, context=parent, kind=SpanKind.SERVER)
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            yield span
        finally:
            otel_context.detach(token)
            if span.is_recording():
                _finish_request_span(span, record)
            span.end()

    def _sampled(self, traceparent: str | None) -> bool:
        """Parent-based, then ratio: a client's sampled trace is always continued."""
        if self._ratio is None:
            return True
        if traceparent is not None and len(traceparent) == 55:
            return traceparent.endswith("-01")
        return self._ratio >= 1 or (self._ratio > 0 and random.random() < self._ratio)

    @contextmanager
    def attempt_span(self, record: RequestRecord, backend: str, spec: BackendSpec,
                     attempt: int) -> Iterator[str | None]:
        """One backend attempt's CLIENT span; yields the ``traceparent`` to send upstream."""
        if not record.traced:
            yield None
            return
        span = self._tracer.start_span(f"{record.operation} {spec.model}", kind=SpanKind.CLIENT)
        if span.is_recording():  # not sampled: no attributes to build
            span.set_attributes({
                "gen_ai.operation.name": record.operation, "gen_ai.provider.name": provider_name(spec),
                "gen_ai.request.model": spec.model, "switchyard.backend": backend, "switchyard.attempt": attempt,
                "switchyard.self_hosted": spec.is_self_hosted})
            _request_params(span, record)
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
        try:
            yield carrier.get("traceparent")
        except BaseException as exc:
            if span.is_recording():
                span.set_attribute("error.type", _error_type(exc))
                span.set_status(Status(StatusCode.ERROR, str(exc)[:200]))
            raise
        finally:
            span.end()

    def add_content(self, prompt: object, completion: object) -> None:
        """Prompt and completion on the current request span — only with the policy's
        ``telemetry.record_content`` (never by default)."""
        if self.record_content and trace.get_current_span().is_recording():
            span = trace.get_current_span()
            span.set_attribute("gen_ai.input.messages", _text(prompt))
            span.set_attribute("gen_ai.output.messages", _text(completion))

    # -- metrics -----------------------------------------------------------------------------

    def record(self, r: RequestRecord) -> None:
        if not self.enabled:
            return
        base = (("gen_ai.operation.name", r.operation), ("gen_ai.request.model", r.alias or "-"),
                ("gen_ai.provider.name", r.provider or "-"), ("switchyard.backend", r.backend or "-"))
        timed = base if r.error_type is None else base + (("error.type", r.error_type),)
        self._duration.record(r.duration_s, timed)
        if r.ttft_s is not None:
            self._ttfc.record(r.ttft_s, timed)
        team = r.team or "-"
        if r.input_tokens:
            self._tokens.record(r.input_tokens, base + (("switchyard.team", team), ("gen_ai.token.type", "input")))
        if r.output_tokens:
            self._tokens.record(r.output_tokens, base + (("switchyard.team", team), ("gen_ai.token.type", "output")))
        alias, rule = r.alias or "-", r.rule or "-"
        outcome: Key = (("switchyard.outcome", r.outcome), ("switchyard.team", team), ("switchyard.alias", alias),
                   ("switchyard.rule", rule), ("switchyard.endpoint", r.endpoint))
        if r.error_type is not None:
            outcome += (("error.type", r.error_type),)
        sums = self._sums
        sums["requests"][outcome] = sums["requests"].get(outcome, 0) + 1
        if r.backend is not None and (r.error_type is None or r.cost_usd):  # + a cut stream's billed part
            where = (("switchyard.team", team), ("switchyard.alias", alias), ("switchyard.backend", r.backend))
            key = where + (("gen_ai.provider.name", r.provider or "-"),
                           ("switchyard.self_hosted", "true" if r.self_hosted else "false"), ("switchyard.rule", rule))
            sums["cost"][key] = sums["cost"].get(key, 0.0) + (r.cost_usd or 0.0)
            if r.savings_usd is not None:
                sums["savings"][where] = sums["savings"].get(where, 0.0) + r.savings_usd
        self._overhead.record(r.overhead_s, _STREAM if r.stream else _NOT_STREAM)
        if r.hedged:
            hedged: Key = (("switchyard.backend", r.hedged[0]), ("switchyard.hedge", "won" if r.hedge_won else "lost"))
            sums["hedges"][hedged] = sums["hedges"].get(hedged, 0) + 1
        if r.predicted_ttft_s is not None and r.error_type is None and r.backend is not None:
            if r.ttft_s is not None:
                self._prediction_error(r.backend, "ttft", r.ttft_s - r.predicted_ttft_s)
            if r.predicted_latency_s is not None:
                self._prediction_error(r.backend, "latency", r.duration_s - r.predicted_latency_s)

    def _prediction_error(self, backend: str, what: str, error: float) -> None:
        """|actual − predicted|, labelled ``late`` (it took longer than predicted: the prediction
        was optimistic) or ``early``; Prometheus histograms take no negative buckets with a sum."""
        self._error.record(abs(error), (("switchyard.backend", backend), ("switchyard.predicted", what),
                                        ("switchyard.error", "late" if error > 0 else "early")))

    def _observe(self, name: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        sums = self._sums[name]

        def observe(options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(value, dict(key)) for key, value in list(sums.items())]

        return observe

    def shed(self, reason: str) -> None:
        """A request refused at the door (``overloaded`` or ``shutting_down``)."""
        if self.enabled:
            key = (("switchyard.reason", reason),)
            sums = self._sums["shed"]
            sums[key] = sums.get(key, 0) + 1

    def backend_state(self, backend: str, queue_depth: float | None, in_flight: int, circuit: str) -> None:
        if not self.enabled:
            return
        where = {"switchyard.backend": backend}
        if queue_depth is not None:
            self._queue.set(queue_depth, where)
        self._in_flight.set(in_flight, where)
        self._circuit.set(CIRCUIT_STATES.get(circuit, 2), where)

    def replica_state(self, backend: str, replica: str, in_flight: int, queue_depth: float | None,
                      available: bool) -> None:
        """One replica of a pool (``replica``: its host:port)."""
        if not self.enabled:
            return
        where = {"switchyard.backend": backend, "switchyard.replica": replica}
        self._replica_in_flight.set(in_flight, where)
        if queue_depth is not None:
            self._replica_queue.set(queue_depth, where)
        self._replica_out.set(1 if available else 0, where)

    def budget_remaining(self, team: str, window: str, usd: float) -> None:
        if self.enabled:
            self._budget.set(usd, {"switchyard.team": team, "switchyard.window": window})

    def store_degraded(self, component: str, degraded: bool) -> None:
        if self.enabled:
            self._degraded.set(1 if degraded else 0, {"switchyard.component": component})

    def metrics_text(self) -> bytes:
        return generate_latest(self.registry)

    def shutdown(self) -> None:
        for provider in (self._meters, self._tracers):
            if provider is not None:
                try:
                    provider.shutdown()
                except Exception as exc:  # noqa: BLE001 - exporters may fail on the way out
                    log.warning("telemetry shutdown: %s", exc)


_STREAM, _NOT_STREAM = (("switchyard.stream", "true"),), (("switchyard.stream", "false"),)
Key = tuple[tuple[str, str], ...]


class _Histogram:
    """A cumulative explicit-bucket histogram kept in plain Python (a bisect and four
    additions per value), handed to the OpenTelemetry readers as SDK ``Metric`` data when
    they collect. Bucket i counts values in (bounds[i-1], bounds[i]], as OTel's do."""

    def __init__(self, name: str, unit: str, description: str, bounds: Sequence[float]) -> None:
        self.name, self.unit, self.description, self.bounds = name, unit, description, list(bounds)
        self.points: dict[Key, list[Any]] = {}  # key -> [bucket counts, sum, count, min, max]

    def record(self, value: float, key: Key) -> None:
        point = self.points.get(key)
        if point is None:
            point = self.points[key] = [[0] * (len(self.bounds) + 1), 0.0, 0, value, value]
        point[0][bisect_left(self.bounds, value)] += 1
        point[1] += value
        point[2] += 1
        if value < point[3]:
            point[3] = value
        if value > point[4]:
            point[4] = value

    def metric(self, start_ns: int, now_ns: int) -> Metric | None:
        points = [HistogramDataPoint(dict(key), start_ns, now_ns, count, total, list(counts), self.bounds, low, high)
                  for key, (counts, total, count, low, high) in list(self.points.items())]
        if not points:
            return None
        return Metric(self.name, self.description, self.unit,
                      HistogramData(points, AggregationTemporality.CUMULATIVE))


class _Merger:
    """Adds the in-process histograms to a reader's collected ``MetricsData``."""

    def __init__(self, histograms: list[_Histogram], resource: Resource) -> None:
        self._histograms, self._resource = histograms, resource
        self._start_ns = time.time_ns()
        self._scope = InstrumentationScope("switchyard")

    def __call__(self, data: MetricsData | None) -> MetricsData:
        now = time.time_ns()
        extra = [m for h in self._histograms if (m := h.metric(self._start_ns, now)) is not None]
        if data is None or not data.resource_metrics:
            return MetricsData([ResourceMetrics(self._resource, [ScopeMetrics(self._scope, extra, "")], "")])
        first = data.resource_metrics[0]
        scopes = [ScopeMetrics(first.scope_metrics[0].scope, [*first.scope_metrics[0].metrics, *extra],
                               first.scope_metrics[0].schema_url) if first.scope_metrics else
                  ScopeMetrics(self._scope, extra, ""), *first.scope_metrics[1:]]
        return MetricsData([ResourceMetrics(first.resource, scopes, first.schema_url), *data.resource_metrics[1:]])


class _PrometheusReader(PrometheusMetricReader):
    def __init__(self, merge: _Merger, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._merge = merge

    def _receive_metrics(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> None:
        super()._receive_metrics(self._merge(metrics_data), timeout_millis, **kwargs)


class _PeriodicReader(PeriodicExportingMetricReader):
    def __init__(self, merge: _Merger, exporter: Any) -> None:
        super().__init__(exporter)
        self._merge = merge

    def _receive_metrics(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> None:
        super()._receive_metrics(self._merge(metrics_data), timeout_millis, **kwargs)


def _request_params(span: Span, r: RequestRecord) -> None:
    if r.max_tokens is not None:
        span.set_attribute("gen_ai.request.max_tokens", r.max_tokens)
    if r.temperature is not None:
        span.set_attribute("gen_ai.request.temperature", r.temperature)


def _finish_request_span(span: Span, r: RequestRecord) -> None:
    span.update_name(f"{r.operation} {r.alias or '-'}")
    attributes: dict[str, Any] = {"gen_ai.operation.name": r.operation, "gen_ai.request.model": r.alias or "-",
                                  "switchyard.outcome": r.outcome, "switchyard.stream": r.stream,
                                  "switchyard.endpoint": r.endpoint,
                                  "http.response.status_code": r.status}
    optional = {"gen_ai.provider.name": r.provider, "gen_ai.response.model": r.response_model,
                "gen_ai.usage.input_tokens": r.input_tokens, "gen_ai.usage.output_tokens": r.output_tokens,
                "switchyard.rule": r.rule, "switchyard.team": r.team, "switchyard.sensitivity": r.sensitivity,
                "switchyard.cache": r.cache, "switchyard.backend": r.backend, "switchyard.cost_usd": r.cost_usd,
                "switchyard.savings_usd": r.savings_usd, "error.type": r.error_type, "switchyard.reason": r.reason}
    attributes.update({k: v for k, v in optional.items() if v is not None})
    if r.finish_reasons:
        attributes["gen_ai.response.finish_reasons"] = list(r.finish_reasons)
    for reason, on in (("fallback", r.fallback), ("spillover", r.spillover), ("recovery", r.recovered)):
        if on:
            attributes[f"switchyard.{reason}"] = True
    span.set_attributes(attributes)
    _request_params(span, r)
    if r.error_type is not None:
        span.set_status(Status(StatusCode.ERROR, r.error_type))


def _error_type(exc: BaseException) -> str:
    return getattr(exc, "error_type", None) or type(exc).__name__


def _text(value: object) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return str(value)
