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

__all__ = ["GpuEconomics", "TokenPrice", "cost", "gpu_economics", "resolve_prices"]

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


@dataclass(frozen=True, slots=True)
class GpuEconomics:
    """A self-hosted GPU's two cost views over a window, and when it stops paying for itself.

    - *amortised*: the GPU's hours × ``gpu_hour_usd``, paid whether it serves or idles; per
      token that is ``gpu_hour_usd`` over the tokens it actually served (which falls as its
      utilisation rises);
    - *marginal*: what one more request costs on it — ~0 while it has free capacity;
    - *break-even utilisation* against a closed model: the share of the GPU's throughput
      (``tokens_per_s``) it must serve for its hour to cost what those tokens would cost at
      that model's price (same input:output mix). Above 1: it never pays for itself."""

    backend: str
    gpu_hour_usd: float
    tokens_per_s: float
    hours: float
    served_tokens: int
    utilisation: float  # served / (tokens_per_s × window)
    amortised_usd: float  # the window's GPU hours
    amortised_usd_per_mtok: float | None  # … per million tokens actually served (None: none served)
    closed_usd: float  # what the same tokens would have cost at the reference closed model
    break_even: dict[str, float]  # closed backend → utilisation at which the GPU costs the same


def gpu_economics(policy: Policy, prices: Mapping[str, TokenPrice], served: Mapping[str, tuple[int, int]],
                  seconds: float, reference: str | None = None) -> list[GpuEconomics]:
    """``served``: backend → (input, output) tokens it served in a window of ``seconds``."""
    closed = {n: prices[n] for n, spec in policy.backends.items()
              if not spec.is_self_hosted and prices[n].source not in ("unknown", "self_hosted")}
    out = []
    for name, spec in policy.backends.items():
        p = spec.price
        if not spec.is_self_hosted or p is None or p.gpu_hour_usd is None or not p.tokens_per_s:
            continue
        tokens_in, tokens_out = served.get(name, (0, 0))
        total = tokens_in + tokens_out
        share_in = tokens_in / total if total else 0.75  # nothing served yet: a typical 3:1 mix
        hours = seconds / 3600
        amortised = p.gpu_hour_usd * hours
        capacity = p.tokens_per_s * seconds
        ref = closed.get(reference) if reference else next(iter(closed.values()), None)
        blended = {n: share_in * c.input + (1 - share_in) * c.output for n, c in closed.items()}
        per_token_gpu = p.gpu_hour_usd / 3600 / p.tokens_per_s
        out.append(GpuEconomics(
            name, p.gpu_hour_usd, p.tokens_per_s, hours, total, total / capacity if capacity else 0.0, amortised,
            amortised / total * _PER_MTOK if total else None,
            (tokens_in * ref.input + tokens_out * ref.output) if ref is not None else 0.0,
            {n: per_token_gpu / b for n, b in blended.items() if b > 0}))
    return out
