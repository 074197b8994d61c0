"""``RequestRecord``: what one request did, as telemetry (traces, metrics) and the dashboard's
counters see it. Filled in along the request path; no prompt or answer text in it."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["OUTCOMES", "RequestRecord"]

#: ``switchyard.outcome`` values, in precedence order when several apply.
OUTCOMES = ("error", "denied", "cache_hit", "recovery", "fallback", "spillover", "ok")


@dataclass(slots=True)
class RequestRecord:
    operation: str  # gen_ai.operation.name: chat | text_completion | embeddings
    endpoint: str = "chat"  # the API it came in on: chat | completions | embeddings | messages | responses
    started: float = 0.0  # time.perf_counter() at arrival
    stream: bool = False
    alias: str | None = None
    team: str | None = None
    rule: str | None = None
    route: str | None = None  # the planner's route (x-switchyard-route)
    sensitivity: str | None = None
    backend: str | None = None  # the backend that answered (the cached answer's, on a hit)
    provider: str | None = None  # gen_ai.provider.name of that backend
    self_hosted: bool = False
    model: str | None = None  # the backend's model (gen_ai.request.model on attempts)
    cache: str | None = None  # hit | miss | bypass (None: cache off)
    fallback: bool = False  # an earlier target failed
    spillover: bool = False  # a loaded self-hosted target was skipped
    recovered: bool = False  # a stream broke and was continued elsewhere
    error_type: str | None = None  # OpenAI error type / code when the request failed
    status: int = 200
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None
    savings_usd: float | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    finish_reasons: tuple[str, ...] = ()
    response_model: str | None = None
    duration_s: float = 0.0
    ttft_s: float | None = None
    upstream_s: float = 0.0  # time waiting on backends (attempts; a stream's relay)
    traced: bool = False  # this request has spans (tracing on and sampled)
    cache_stored: bool = False  # this request's answer was stored in the response cache
    reason: str | None = None  # why it fell back, spilled over or was recovered (for the span)
    #: the planner's prediction for the backend that answered (``policies.latency``), when it made one
    predicted_ttft_s: float | None = None
    predicted_latency_s: float | None = None
    predicted_wait: bool = False  # it was predicted to wait for a slot
    hedged: tuple[str, ...] = ()  # the targets a hedged request ran in parallel, in start order
    hedge_won: bool = False  # …and a later one answered first

    @property
    def outcome(self) -> str:
        if self.error_type is not None:
            return "denied" if self.status in (401, 403, 429) else "error"
        if self.cache == "hit":
            return "cache_hit"
        if self.recovered:
            return "recovery"
        if self.fallback:
            return "fallback"
        if self.spillover:
            return "spillover"
        return "ok"

    @property
    def overhead_s(self) -> float:
        """Time spent in the gateway itself: the whole request minus the upstream's time."""
        return max(0.0, self.duration_s - self.upstream_s)
