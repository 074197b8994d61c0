"""Pydantic models of the policy YAML: the contract platform teams write against.

Owns the shape of a policy file (``backends``, ``models``; reserved top-level keys
for later features) and field-level validation. Cross-references (a model target
naming a backend) are resolved in ``policies.loader``.

Must not import ``router`` or ``backends``: policy code is pure.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, SecretStr, field_validator, model_validator

__all__ = [
    "PREFILL_KINDS",
    "SELF_HOSTED_KINDS",
    "BackendSpec",
    "CircuitSpec",
    "ModelAlias",
    "Policy",
    "Price",
    "RetrySpec",
    "Settings",
    "Timeouts",
]

#: Kinds reached directly over HTTP (OpenAI-compatible servers we run ourselves).
SELF_HOSTED_KINDS: frozenset[str] = frozenset({"openai_compatible", "vllm", "tgi", "llamacpp", "ollama"})

#: Kinds known to continue a partial assistant message sent as the last message (prefill).
PREFILL_KINDS: frozenset[str] = frozenset({"llamacpp", "vllm", "anthropic"})

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


class Price(_Frozen):
    """Price of a backend. Closed models: per million tokens (overrides the price table).
    Self-hosted: the GPU's hourly cost and its throughput, amortised over tokens."""

    input_per_mtok_usd: Annotated[float, Field(ge=0)] | None = None
    output_per_mtok_usd: Annotated[float, Field(ge=0)] | None = None
    cached_input_per_mtok_usd: Annotated[float, Field(ge=0)] | None = None
    gpu_hour_usd: Annotated[float, Field(ge=0)] | None = None
    tokens_per_s: Annotated[float, Field(gt=0)] | None = None

    @model_validator(mode="after")
    def _gpu_needs_throughput(self) -> Price:
        if self.gpu_hour_usd is not None and self.tokens_per_s is None:
            raise ValueError("gpu_hour_usd needs tokens_per_s to turn hours into a per-token price")
        return self


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
    supports_prefill: bool | None = None  # resolved from kind when omitted (PREFILL_KINDS)
    context_window: Annotated[int, Field(gt=0)] | None = None  # tokens; decides context-length failover
    price: Price | None = None
    headers: dict[str, str] = {}

    @field_validator("kind")
    @classmethod
    def _kind_shape(cls, value: str) -> str:
        if not _KIND_RE.match(value):
            raise ValueError(f"kind {value!r} must be lower_snake_case (e.g. vllm, openai, anthropic)")
        return value

    @model_validator(mode="after")
    def _self_hosted_needs_url(self) -> BackendSpec:
        if self.kind in SELF_HOSTED_KINDS and self.base_url is None:
            raise ValueError(f"base_url is required for self-hosted kind {self.kind!r}")
        if self.kind in SELF_HOSTED_KINDS and self.self_hosted is False:
            raise ValueError(f"kind {self.kind!r} is self-hosted; self_hosted: false contradicts it")
        return self

    @property
    def is_self_hosted(self) -> bool:
        return self.self_hosted if self.self_hosted is not None else self.kind in SELF_HOSTED_KINDS

    @property
    def can_prefill(self) -> bool:
        return self.supports_prefill if self.supports_prefill is not None else self.kind in PREFILL_KINDS

    @property
    def direct(self) -> bool:
        """True when reached by HTTP passthrough (no litellm)."""
        return self.kind in SELF_HOSTED_KINDS

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

    @field_validator("targets")
    @classmethod
    def _no_duplicates(cls, value: list[str]) -> list[str]:
        seen = {t for t in value if value.count(t) > 1}
        if seen:
            raise ValueError(f"duplicate targets: {sorted(seen)}")
        return value


class Settings(_Frozen):
    """Gateway-wide settings a policy may set."""

    max_body_mb: Annotated[float, Field(gt=0, le=1024)] = 10.0
    default_alias: str | None = None


class Policy(_Frozen):
    """A whole policy file."""

    version: Literal[1] = 1
    backends: Annotated[dict[str, BackendSpec], Field(min_length=1)]
    models: Annotated[dict[str, ModelAlias], Field(min_length=1)]
    settings: Settings = Settings()
    # Reserved for later work; accepted only when absent (or null) so that files written
    # for a newer gateway fail loudly instead of being half-applied.
    rules: None = None
    teams: None = None
    sensitivity: None = None
    cache: None = None
    telemetry: None = None

    @field_validator("backends", "models")
    @classmethod
    def _names(cls, value: dict[str, object]) -> dict[str, object]:
        bad = [k for k in value if not _NAME_RE.match(k)]
        if bad:
            raise ValueError(f"invalid names {bad}: use letters, digits, '.', '_', ':' or '-'")
        return value
