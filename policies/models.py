"""Pydantic models of the policy YAML: the contract platform teams write against.

Owns the shape of a policy file (``backends``, ``models``; reserved top-level keys
for later features) and field-level validation. Cross-references (a model target
naming a backend) are resolved in ``policies.loader``. A backend's kind traits come from
the ``KindTable`` given as pydantic validation context (``Policy.model_validate(data,
context=kinds)``; ``load_policy`` does that) and are kept on the ``BackendSpec``.

Must not import ``router`` or ``backends``: policy code is pure.
"""

from __future__ import annotations

import functools
import hashlib
import re
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    PrivateAttr,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from policies.kinds import KindInfo, KindTable
from policies.regex import RegexError, compile_linear

__all__ = [
    "Slo",
    "BUILTIN_DETECTORS",
    "LEVELS",
    "BackendSpec",
    "Capacity",
    "DiscoverySpec",
    "Hedge",
    "Placement",
    "BudgetSpec",
    "CacheSpec",
    "CircuitSpec",
    "CustomDetector",
    "Level",
    "ModelAlias",
    "Policy",
    "PolicySettings",
    "Price",
    "RateLimits",
    "RetrySpec",
    "Route",
    "Rule",
    "SensitivitySpec",
    "Spillover",
    "TeamSpec",
    "Timeouts",
    "level_rank",
]

Level = Literal["public", "internal", "confidential", "restricted"]
#: Sensitivity levels, lowest first.
LEVELS: tuple[str, ...] = ("public", "internal", "confidential", "restricted")

#: Built-in detectors and their default level (``sensitivity.detectors`` overrides).
BUILTIN_DETECTORS: dict[str, str] = {
    "credit_card": "restricted",  # 13-19 digits passing Luhn
    "iban": "restricted",  # mod-97 checked
    "us_ssn": "restricted",
    "api_key": "restricted",  # keys and tokens by their shape: ~90 formats (policies.credentials)
    "secret": "restricted",  # secrets by context: password = …, URL passwords, Basic credentials
    "private_key": "restricted",  # -----BEGIN … PRIVATE KEY-----
    "jwt": "restricted",
    "email": "confidential",
    "phone": "confidential",
    "ip_address": "internal",
}


def level_rank(level: str) -> int:
    return LEVELS.index(level)

_KIND_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Timeouts(_Frozen):
    """Per-backend time limits in seconds."""

    connect_s: Annotated[float, Field(gt=0)] = 5.0
    first_token_s: Annotated[float, Field(gt=0)] = 30.0
    idle_s: Annotated[float, Field(gt=0)] = 30.0
    total_s: Annotated[float, Field(gt=0)] = 600.0


class RetrySpec(_Frozen):
    """Retries on the same backend before failing over. ``attempts`` counts the first try."""

    attempts: Annotated[int, Field(ge=1, le=10)] = 2
    backoff_base_s: Annotated[float, Field(ge=0)] = 0.25
    backoff_max_s: Annotated[float, Field(ge=0)] = 4.0
    max_retry_after_s: Annotated[float, Field(ge=0)] = 10.0


class CircuitSpec(_Frozen):
    """Open the circuit after ``failures`` failures within ``window_s``; probe after ``cooldown_s``."""

    failures: Annotated[int, Field(ge=1)] = 5
    window_s: Annotated[float, Field(gt=0)] = 30.0
    cooldown_s: Annotated[float, Field(gt=0)] = 30.0


class CustomDetector(_Frozen):
    """A policy-defined detector: a regular expression or a keyword list."""

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
    level: Level
    regex: str | None = None
    keywords: list[Annotated[str, Field(min_length=1)]] | None = None
    case_sensitive: bool = False

    @model_validator(mode="after")
    def _one_matcher(self) -> CustomDetector:
        if (self.regex is None) == (self.keywords is None):
            raise ValueError("give exactly one of regex or keywords")
        if self.regex is not None:
            try:
                compile_linear(self.regex, self.case_sensitive)
            except RegexError as exc:
                raise ValueError(f"custom detector {self.name!r}: invalid regex {self.regex!r}: {exc}") from None
        return self


class SensitivitySpec(_Frozen):
    """How sensitive a request is: detectors → levels; the request's level is the highest."""

    default: Level = "public"
    #: Built-in detector → level, merged over the defaults; ``off`` turns one off.
    detectors: dict[str, Level | Literal["off"]] = dict(BUILTIN_DETECTORS)  # type: ignore[arg-type]
    custom: list[CustomDetector] = []
    #: The highest level a closed backend may receive unless it sets ``max_sensitivity``.
    closed_max: Level = "internal"
    #: Benign literals that are never findings: a detector match whose whole matched text
    #: equals one of them (case-insensitively) is ignored — e.g. a coding agent's co-author
    #: address in its system prompt. Exact values only: a match that merely contains one
    #: (``noreply@anthropic.com.evil``) or another value of the same kind still counts.
    allow: Annotated[list[Annotated[str, Field(min_length=3, max_length=256)]], Field(max_length=1000)] = []

    @field_validator("detectors")
    @classmethod
    def _known(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(BUILTIN_DETECTORS))
        if unknown:
            raise ValueError(f"unknown built-in detectors {unknown} (known: {', '.join(BUILTIN_DETECTORS)}); "
                             "add your own under sensitivity.custom")
        merged = {**BUILTIN_DETECTORS, **value}
        return {name: level for name, level in merged.items() if level != "off"}


class Spillover(_Frozen):
    """Leave a self-hosted target while its load is over a threshold; come back only once it is
    below ``resume_below`` × the threshold (hysteresis, so routing does not flap)."""

    queue_over: Annotated[float, Field(ge=0)] | None = None
    kv_cache_over: Annotated[float, Field(gt=0, le=1)] | None = None
    resume_below: Annotated[float, Field(gt=0, le=1)] = 0.5

    @model_validator(mode="after")
    def _some_threshold(self) -> Spillover:
        if self.queue_over is None and self.kv_cache_over is None:
            raise ValueError("give queue_over and/or kv_cache_over")
        return self


class Slo(_Frozen):
    """A latency objective: a self-hosted target *predicted* to miss it goes behind the closed
    targets for a request that may leave (one that must stay home keeps it and waits)."""

    ttft_s: Annotated[float, Field(gt=0, le=3600)] | None = None  # time to first token
    latency_s: Annotated[float, Field(gt=0, le=86_400)] | None = None  # the whole answer

    @model_validator(mode="after")
    def _some_objective(self) -> Slo:
        if self.ttft_s is None and self.latency_s is None:
            raise ValueError("give ttft_s and/or latency_s")
        return self


class Hedge(_Frozen):
    """Opt-in tail cutting: when the first target has not produced its first token (a whole
    answer, for a request that is not streamed) ``after_s`` in, the next allowed target starts
    in parallel; the first to produce wins and the other is cancelled."""

    after_s: Annotated[float, Field(gt=0, le=600)]
    #: the most targets running at once for one request (2: the first and one hedge)
    max_parallel: Annotated[int, Field(ge=2, le=4)] = 2


Strategy = Literal["priority", "cheapest", "least_loaded", "lowest_latency", "weighted"]


class Route(_Frozen):
    """Where a matching request may go, in what order, and what happens when it cannot."""

    targets: Annotated[list[str], Field(min_length=1)] | None = None  # default: the alias's targets
    strategy: Strategy = "priority"
    weights: dict[str, Annotated[float, Field(ge=0)]] | None = None
    fallback: Literal["next", "none"] = "next"
    spillover: Spillover | None = None
    deny: Annotated[str, Field(min_length=1)] | None = None
    redact: list[str] | None = None  # detector names to replace with placeholders for closed targets
    slo: Slo | None = None  # default: the alias's
    hedge: Hedge | None = None  # default: the alias's

    @field_validator("targets")
    @classmethod
    def _no_duplicates(cls, value: list[str] | None) -> list[str] | None:
        dupes = sorted({t for t in value or () if (value or []).count(t) > 1})
        if dupes:
            raise ValueError(f"duplicate targets: {dupes}")
        return value

    @model_validator(mode="after")
    def _shape(self) -> Route:
        if self.deny is not None and (self.targets or self.spillover or self.weights or self.redact or self.slo
                                      or self.hedge):
            raise ValueError("deny cannot be combined with targets, weights, spillover, redact, slo or hedge")
        if self.strategy == "weighted" and not self.weights:
            raise ValueError("strategy weighted needs weights: {backend: weight, ...}")
        if self.weights is not None and self.strategy != "weighted":
            raise ValueError("weights are only used by strategy: weighted")
        return self


class Rule(_Frozen):
    """``when`` the request's facts match, ``route`` it. Rules are tried in order; first match wins."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")]
    when: dict[str, object] = {}
    route: Route
    description: str | None = None


class RateLimits(_Frozen):
    """Requests and tokens per minute (tokens: the request's input estimate + max_tokens)."""

    rpm: Annotated[int, Field(ge=1)] | None = None
    tpm: Annotated[int, Field(ge=1)] | None = None


class BudgetSpec(_Frozen):
    """USD a team may spend per UTC day and per UTC month (reserve before, settle after)."""

    daily_usd: Annotated[float, Field(gt=0)] | None = None
    monthly_usd: Annotated[float, Field(gt=0)] | None = None


class TeamSpec(_Frozen):
    """A team: its virtual keys and limits. Keys are given as ``${ENV}`` references (hashed at
    load, never kept in plain text) or as ``sha256:<64 hex>``; empty entries (an unset
    ``${VAR:-}``) are ignored."""

    keys: list[str] = []
    limits: RateLimits = RateLimits()
    key_limits: RateLimits = RateLimits()  # for each key of the team
    budget: BudgetSpec = BudgetSpec()
    key_budget: BudgetSpec = BudgetSpec()  # for each key of the team (a key may also carry its own)

    @field_validator("keys")
    @classmethod
    def _key_shape(cls, value: list[str]) -> list[str]:
        for key in value:
            if key.startswith("sha256:") and not re.fullmatch(r"sha256:[0-9a-f]{64}", key):
                raise ValueError("a hashed key is sha256: followed by 64 lowercase hex digits")
        return value

    def key_hashes(self) -> frozenset[str]:
        """sha256 hex of every key (plain keys are hashed here and not kept)."""
        return frozenset(k.removeprefix("sha256:") if k.startswith("sha256:")
                         else hashlib.sha256(k.encode()).hexdigest() for k in self.keys if k)


class CacheSpec(_Frozen):
    """The response cache: exact match on the normalised request, per team unless ``global``."""

    mode: Literal["off", "exact"] = "off"
    ttl_s: Annotated[int, Field(ge=1)] = 3600
    scope: Literal["team", "global"] = "team"
    max_entry_kb: Annotated[int, Field(ge=1)] = 256
    #: How long identical requests on other replicas wait for the first one's answer instead
    #: of asking the upstream too (team scope, shared store); 0: they do not wait.
    coalesce_s: Annotated[float, Field(ge=0, le=600)] = 30.0
    #: Memory the in-memory store (no Redis) may hold in cached answers, per process; the least
    #: recently used entries go first. With Redis, its own ``maxmemory`` policy applies.
    max_memory_mb: Annotated[float, Field(gt=0, le=1_048_576)] = 256.0


class TelemetrySpec(_Frozen):
    """What the gateway reports about itself (traces, metrics, the dashboard)."""

    #: The closed backend whose price the savings are measured against ("what these tokens
    #: would have cost on X"). Default: the first closed backend of the policy with a price.
    reference_backend: str | None = None
    #: Record prompt and completion text in trace spans (off: never recorded).
    record_content: bool = False


class Price(_Frozen):
    """Price of a backend. Closed models: per million tokens (overrides the price table).
    Self-hosted: the GPU's hourly cost and its throughput, amortised over tokens."""

    input_per_mtok_usd: Annotated[float, Field(ge=0)] | None = None
    output_per_mtok_usd: Annotated[float, Field(ge=0)] | None = None
    cached_input_per_mtok_usd: Annotated[float, Field(ge=0)] | None = None
    #: Anthropic's prompt-cache writes (cache_creation_input_tokens); unset: the input price.
    cache_write_input_per_mtok_usd: Annotated[float, Field(ge=0)] | None = None
    gpu_hour_usd: Annotated[float, Field(ge=0)] | None = None
    tokens_per_s: Annotated[float, Field(gt=0)] | None = None

    @model_validator(mode="after")
    def _gpu_needs_throughput(self) -> Price:
        if self.gpu_hour_usd is not None and self.tokens_per_s is None:
            raise ValueError("gpu_hour_usd needs tokens_per_s to turn hours into a per-token price")
        return self


class Placement(_Frozen):
    """How a replica pool picks a replica for each request (docs/policy.md, "Replica pools")."""

    strategy: Literal["affinity", "least_loaded", "round_robin"] = "affinity"
    #: Prefix blocks are hashes of this many characters of the canonical prompt.
    block_chars: Annotated[int, Field(ge=64, le=1_000_000)] = 1024
    #: A preferred replica whose queue + the gateway's in-flight requests to it reach this
    #: yields to the least loaded replica, until it is back under ``resume_below`` × this.
    saturated_at: Annotated[float, Field(gt=0)] = 4.0
    resume_below: Annotated[float, Field(gt=0, le=1)] = 0.5
    #: Consecutive failures that take a replica out of the pool for ``cooldown_s``.
    failures: Annotated[int, Field(ge=1)] = 3
    cooldown_s: Annotated[float, Field(gt=0)] = 10.0


class Capacity(_Frozen):
    """What one self-hosted server (one replica, in a pool) can do: the starting point of the
    latency prediction (the gateway's own observations of each speed replace these once it has
    some) and the slots kept free for requests that must stay home."""

    slots: Annotated[int, Field(ge=1, le=100_000)]  # requests it serves at once (vLLM max_num_seqs, llama.cpp -np)
    prefill_tokens_per_s: Annotated[float, Field(gt=0)] = 2000.0  # prompt tokens per second, one request
    decode_tokens_per_s: Annotated[float, Field(gt=0)] = 30.0  # output tokens per second, one request
    #: slots a request that may leave does not take (counted from the server's and the
    #: gateway's load): kept for requests above ``sensitivity.closed_max``
    reserved_slots: Annotated[int, Field(ge=0)] = 0

    @model_validator(mode="after")
    def _some_left(self) -> Capacity:
        if self.reserved_slots >= self.slots:
            raise ValueError(f"reserved_slots ({self.reserved_slots}) must be fewer than slots ({self.slots})")
        return self


class DiscoverySpec(_Frozen):
    """A pool's replicas from DNS: every A/AAAA record of ``dns`` is a replica at
    ``scheme://address:port`` + ``path`` (a Kubernetes headless service), re-resolved every
    ``interval_s``."""

    dns: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9.-]+$")]
    port: Annotated[int, Field(ge=1, le=65535)]
    scheme: Literal["http", "https"] = "http"
    path: Annotated[str, Field(pattern=r"^(/[A-Za-z0-9._~-]*)*$")] = "/v1"
    interval_s: Annotated[float, Field(ge=1, le=3600)] = 10.0


class BackendSpec(_Frozen):
    """One upstream: a self-hosted server or a closed provider's model."""

    kind: str
    model: Annotated[str, Field(min_length=1)]
    base_url: HttpUrl | None = None
    api_key: SecretStr | None = None
    self_hosted: bool | None = None  # resolved from kind when omitted
    timeouts: Timeouts = Timeouts()
    retry: RetrySpec = RetrySpec()
    circuit: CircuitSpec = CircuitSpec()
    supports_prefill: bool | None = None  # resolved from kind when omitted (the kind table)
    context_window: Annotated[int, Field(gt=0)] | None = None  # tokens; decides context-length failover
    #: Highest sensitivity this backend may receive (default: restricted when self-hosted,
    #: ``sensitivity.closed_max`` otherwise).
    max_sensitivity: Level | None = None
    price: Price | None = None
    headers: dict[str, str] = {}
    #: Agent APIs this server serves natively under its ``base_url`` (llama.cpp and vLLM:
    #: ``messages`` and ``responses``; Ollama: ``messages``; Anthropic's and OpenAI's own APIs
    #: as ``openai_compatible`` with ``self_hosted: false``): such requests are passed through as
    #: they are instead of translated to chat (docs/api.md). Direct kinds only.
    speaks: list[Literal["messages", "responses"]] = []
    #: Several replicas of this one model (self-hosted kinds): base URLs, each like ``base_url``.
    #: The pool is one backend for the policy; each request goes to one replica (``placement``).
    replicas: list[HttpUrl] = []
    #: …or replicas found in DNS (``replicas`` and ``discovery`` exclude each other).
    discovery: DiscoverySpec | None = None
    placement: Placement = Placement()
    capacity: Capacity | None = None  # self-hosted: slots and speeds for the latency prediction
    _kind: KindInfo = PrivateAttr()  # the kind's traits, from the table given at validation

    @field_validator("kind")
    @classmethod
    def _kind_shape(cls, value: str) -> str:
        if not _KIND_RE.match(value):
            raise ValueError(f"kind {value!r} must be lower_snake_case (e.g. vllm, openai, anthropic)")
        return value

    @model_validator(mode="after")
    def _resolve_kind(self, info: ValidationInfo) -> BackendSpec:
        if not isinstance(info.context, KindTable):
            raise TypeError("BackendSpec needs the kind table: validate with context=KindTable(...)")
        self._kind = info.context.info(self.kind)
        if self._kind.self_hosted and self.base_url is None and not self.replicas and self.discovery is None:
            raise ValueError(f"base_url is required for self-hosted kind {self.kind!r}")
        if (self.replicas or self.discovery) and not self._kind.self_hosted:
            raise ValueError(f"replicas are for self-hosted servers; kind {self.kind!r} is one provider model")
        if sum(bool(x) for x in (self.base_url, self.replicas, self.discovery)) > 1:
            raise ValueError("give one of base_url (one server), replicas (a pool) or discovery (a pool in DNS)")
        if len({str(u) for u in self.replicas}) != len(self.replicas):
            raise ValueError("replicas must be distinct URLs")
        if self.capacity is not None and not self.is_self_hosted:
            raise ValueError("capacity is for self-hosted servers (a provider's capacity is not yours to plan)")
        if self.speaks and not self._kind.self_hosted:
            raise ValueError(f"speaks is for servers reached directly over HTTP (self-hosted kinds, or a provider's "
                             f"API as kind openai_compatible with self_hosted: false); kind {self.kind!r} is reached "
                             "through litellm, which gets every surface translated to chat")
        return self

    # Resolved once per spec (read on every request): a private attribute goes through
    # pydantic's slow ``__getattr__``; a cached property is a plain instance-dict read after
    # the first use (and is not a field: equality, hashing and the schema ignore it).
    @functools.cached_property
    def is_self_hosted(self) -> bool:
        return self.self_hosted if self.self_hosted is not None else self._kind.self_hosted

    @functools.cached_property
    def can_prefill(self) -> bool:
        return self.supports_prefill if self.supports_prefill is not None else self._kind.supports_prefill

    @functools.cached_property
    def direct(self) -> bool:
        """True when reached by HTTP passthrough (no litellm)."""
        return self._kind.self_hosted

    @property
    def has_credentials(self) -> bool:
        """False for a closed backend whose key resolved empty (e.g. ``${OPENAI_API_KEY:-}``).
        No ``api_key`` at all means the provider's own credential chain (env, IAM role)."""
        if self.direct or self.api_key is None:
            return True
        return bool(self.api_key.get_secret_value())


class ModelAlias(_Frozen):
    """A name app teams call (``model: chat-default``) and the backends behind it."""

    targets: Annotated[list[str], Field(min_length=1)]
    description: str | None = None
    slo: Slo | None = None  # for every request to the alias whose rule sets none
    hedge: Hedge | None = None

    @field_validator("targets")
    @classmethod
    def _no_duplicates(cls, value: list[str]) -> list[str]:
        seen = {t for t in value if value.count(t) > 1}
        if seen:
            raise ValueError(f"duplicate targets: {sorted(seen)}")
        return value


class PolicySettings(_Frozen):
    """Gateway-wide settings a policy may set (its ``settings:`` block)."""

    max_body_mb: Annotated[float, Field(gt=0, le=1024)] = 10.0
    #: Requests (``/v1/*``) one gateway process handles at once; beyond it, an immediate 503
    #: ``overloaded`` with ``Retry-After`` instead of a queue (probes and ``/admin`` are not counted).
    max_in_flight: Annotated[int, Field(ge=1, le=1_000_000)] = 1000
    default_alias: str | None = None
    #: How often self-hosted backends' /metrics are scraped; samples older than
    #: ``load_stale_after_s`` are ignored.
    load_scrape_interval_s: Annotated[float, Field(gt=0)] = 2.0
    load_stale_after_s: Annotated[float, Field(gt=0)] = 10.0
    #: Completion tokens assumed for cost estimates when a request sets no max_tokens.
    estimate_max_tokens: Annotated[int, Field(ge=1, le=2**31 - 1)] = 512
    #: The most answers one request may ask for (``n``, ``best_of``); more is a 400. Estimates,
    #: reservations and TPM scale with what is asked.
    max_n: Annotated[int, Field(ge=1, le=128)] = 8
    #: Watch the policy file and reload it when it changes (SIGHUP always reloads).
    watch: bool = True
    #: Budgets when the shared store cannot be reached: refuse (fail_closed) or serve unmetered.
    on_store_error: Literal["fail_closed", "fail_open"] = "fail_closed"
    #: How long ``/v1/responses`` keeps a stored response (``previous_response_id``, ``GET``).
    responses_ttl_s: Annotated[int, Field(ge=60, le=365 * 24 * 3600)] = 30 * 24 * 3600


class Policy(_Frozen):
    """A whole policy file."""

    version: Literal[1] = 1
    backends: Annotated[dict[str, BackendSpec], Field(min_length=1)]
    models: Annotated[dict[str, ModelAlias], Field(min_length=1)]
    settings: PolicySettings = PolicySettings()
    sensitivity: SensitivitySpec = SensitivitySpec()
    rules: list[Rule] = []
    teams: dict[str, TeamSpec] = {}
    cache: CacheSpec = CacheSpec()
    telemetry: TelemetrySpec = TelemetrySpec()

    @field_validator("rules", "sensitivity", "settings", "teams", "cache", "telemetry", mode="before")
    @classmethod
    def _empty_is_default(cls, value: object, info: object) -> object:
        """``rules:`` with nothing under it (YAML null) means the default, not an error."""
        if value is None:
            defaults: dict[str, object] = {"rules": [], "sensitivity": {}, "settings": {}, "teams": {}, "cache": {},
                                           "telemetry": {}}
            return defaults[info.field_name]  # type: ignore[attr-defined]
        return value

    @field_validator("rules")
    @classmethod
    def _unique_rules(cls, value: list[Rule]) -> list[Rule]:
        names = [r.name for r in value]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate rule names {dupes}")
        return value

    def max_level(self, backend: str) -> str:
        """The highest sensitivity ``backend`` may receive."""
        spec = self.backends[backend]
        if spec.max_sensitivity is not None:
            return spec.max_sensitivity
        return "restricted" if spec.is_self_hosted else self.sensitivity.closed_max

    @field_validator("backends", "models")
    @classmethod
    def _names(cls, value: dict[str, object]) -> dict[str, object]:
        bad = [k for k in value if not _NAME_RE.match(k)]
        if bad:
            raise ValueError(f"invalid names {bad}: use letters, digits, '.', '_', ':' or '-'")
        return value

