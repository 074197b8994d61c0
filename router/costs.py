"""The cost of an answer, from the usage the backend that answered reported, at that
backend's price (reporting view: amortised GPU cost for self-hosted backends).
Failed attempts are never billed: only the answering backend's usage is priced."""

from __future__ import annotations

from collections.abc import Mapping

import orjson

from policies import TokenPrice, cost

__all__ = ["answer_cost", "format_usd", "parse_answer", "tokens", "usage_cost"]


def parse_answer(body: bytes) -> Mapping[str, object]:
    """A complete JSON answer as a mapping (``{}`` when it is not one)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    return data if isinstance(data, Mapping) else {}


def answer_cost(answer: Mapping[str, object], price: TokenPrice) -> float | None:
    """USD for a parsed answer, or ``None`` when it carries no usable usage."""
    usage = answer.get("usage")
    return usage_cost(usage, price) if isinstance(usage, Mapping) else None


def tokens(usage: object) -> tuple[int | None, int | None]:
    """(input, output) tokens of a usage object."""
    if not isinstance(usage, Mapping):
        return None, None
    return _int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens"))


def usage_cost(usage: Mapping[str, object], price: TokenPrice) -> float:
    prompt = _int(usage.get("prompt_tokens"))
    completion = _int(usage.get("completion_tokens"))
    details = usage.get("prompt_tokens_details")
    cached = _int(details.get("cached_tokens")) if isinstance(details, Mapping) else 0
    written = _int(usage.get("cache_creation_input_tokens"))
    if not written and isinstance(details, Mapping):
        written = _int(details.get("cache_creation_tokens"))
    return cost(price, prompt, completion, cached, written)


def format_usd(value: float) -> str:
    return f"{value:.8f}"


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
