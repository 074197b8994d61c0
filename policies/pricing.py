"""What a call costs, in USD per token, for every backend of a policy.

Sources, in order: the backend's ``price`` in the policy (per million tokens, or a
self-hosted GPU's ``gpu_hour_usd`` spread over ``tokens_per_s``: the *amortised* view),
then the provider price table (litellm's, handed in by the router as plain data), else
unknown. A self-hosted backend with no declared price costs 0 (its GPU is paid anyway).

Two views (DESIGN.md): for *routing*, a self-hosted target with free capacity has a
marginal cost of ~0 and is filled first; for *reporting* (``x-switchyard-cost-usd``), its
amortised price is used.

Pure. Must not import ``router`` or ``backends``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from policies.models import BackendSpec, Policy

__all__ = ["TokenPrice", "cost", "resolve_prices"]

_PER_MTOK = 1_000_000


@dataclass(frozen=True, slots=True)
class TokenPrice:
    """USD per token. ``source``: policy, gpu, table, self_hosted (undeclared: 0) or unknown."""

    input: float
    output: float
    cached_input: float | None = None
    source: str = "policy"
    #: Anthropic's cache writes (``cache_creation_input_tokens``); None: the input price.
    cache_write_input: float | None = None


UNKNOWN = TokenPrice(0.0, 0.0, None, "unknown")


def resolve_prices(policy: Policy, table: Mapping[str, TokenPrice]) -> dict[str, TokenPrice]:
    """One price per backend; ``table`` maps backend name → the provider table's price."""
    return {name: _price(spec, table.get(name)) for name, spec in policy.backends.items()}


def _price(spec: BackendSpec, from_table: TokenPrice | None) -> TokenPrice:
    p = spec.price
    if p is not None and p.input_per_mtok_usd is not None and p.output_per_mtok_usd is not None:
        cached = p.cached_input_per_mtok_usd / _PER_MTOK if p.cached_input_per_mtok_usd is not None else None
        written = p.cache_write_input_per_mtok_usd
        return TokenPrice(p.input_per_mtok_usd / _PER_MTOK, p.output_per_mtok_usd / _PER_MTOK, cached, "policy",
                          written / _PER_MTOK if written is not None else None)
    if p is not None and p.gpu_hour_usd is not None and p.tokens_per_s:
        per_token = p.gpu_hour_usd / 3600 / p.tokens_per_s
        return TokenPrice(per_token, per_token, None, "gpu")
    if from_table is not None:
        return from_table
    return TokenPrice(0.0, 0.0, None, "self_hosted") if spec.is_self_hosted else UNKNOWN


def cost(price: TokenPrice, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0,
         written_tokens: int = 0) -> float:
    """USD for one call. ``prompt_tokens`` counts every input token; of them, ``cached_tokens``
    (cache reads) use the cached price and ``written_tokens`` (Anthropic's cache writes) the
    cache-write price, when the price has them."""
    cached = min(max(cached_tokens, 0), prompt_tokens) if price.cached_input is not None else 0
    written = min(max(written_tokens, 0), prompt_tokens - cached) if price.cache_write_input is not None else 0
    fresh = prompt_tokens - cached - written
    return (fresh * price.input + cached * (price.cached_input or 0.0) + written * (price.cache_write_input or 0.0)
            + completion_tokens * price.output)
