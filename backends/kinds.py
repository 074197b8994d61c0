"""What a backend kind is: the one table of kinds (``KIND_TRAITS``), and ``CLOSED_TRAITS`` for
every kind it does not list (a closed provider served through litellm, if litellm knows it).

A self-hosted kind is an OpenAI-compatible server we run, reached by direct HTTP
passthrough (``backends.openai_compat``); it declares its probe paths and the body fields
that make it continue a partial answer. A closed kind is listed only when it has a trait
of its own (``anthropic`` continues a trailing assistant message).

``router`` hands the part policy needs (self-hosted, prefill) to ``policies`` as data:
policy code never reads this table itself. Must not import ``router`` or ``policies``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = ["CLOSED_TRAITS", "DIRECT_KINDS", "KIND_TRAITS", "KindTraits", "kind_traits"]


@dataclass(frozen=True, slots=True)
class KindTraits:
    """One kind. Paths are relative to the server root (``base_url`` without its trailing
    ``/v1``); only self-hosted kinds have them."""

    #: A server we run, reached directly (no litellm): the default of a backend's ``self_hosted``.
    self_hosted: bool
    #: Continues a partial assistant message sent as the last message (prefill).
    supports_prefill: bool = False
    health_path: str | None = None
    metrics_path: str | None = None
    #: Body fields that make the server continue a trailing assistant message (prefill).
    prefill_fields: tuple[tuple[str, object], ...] = ()

    def __post_init__(self) -> None:
        if self.self_hosted != (self.health_path is not None):
            raise ValueError("a self-hosted kind has a health_path; a closed kind has none")
        if self.prefill_fields and not self.supports_prefill:
            raise ValueError("prefill_fields are only for kinds that support prefill")


KIND_TRAITS: Mapping[str, KindTraits] = MappingProxyType({
    "openai_compatible": KindTraits(self_hosted=True, health_path="/v1/models"),
    "vllm": KindTraits(self_hosted=True, supports_prefill=True, health_path="/health", metrics_path="/metrics",
                       prefill_fields=(("continue_final_message", True), ("add_generation_prompt", False))),
    "tgi": KindTraits(self_hosted=True, health_path="/health", metrics_path="/metrics"),
    "llamacpp": KindTraits(self_hosted=True, supports_prefill=True, health_path="/health",
                           metrics_path="/metrics"),
    "ollama": KindTraits(self_hosted=True, health_path="/api/version"),
    "anthropic": KindTraits(self_hosted=False, supports_prefill=True),
})

#: Any kind ``KIND_TRAITS`` does not list: a closed provider with no trait of its own.
CLOSED_TRAITS = KindTraits(self_hosted=False)

#: Kinds served by direct HTTP passthrough; every other kind goes through litellm.
DIRECT_KINDS: frozenset[str] = frozenset(kind for kind, traits in KIND_TRAITS.items() if traits.self_hosted)


def kind_traits(kind: str) -> KindTraits:
    """The traits of ``kind`` (``CLOSED_TRAITS`` when the table does not list it)."""
    return KIND_TRAITS.get(kind, CLOSED_TRAITS)
