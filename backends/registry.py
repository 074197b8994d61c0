"""The explicit ``{kind: factory}`` table that turns a ``BackendConfig`` into a backend.

Self-hosted kinds (``backends.kinds.DIRECT_KINDS``) are built directly; every other kind
is a closed provider served by litellm, whose module is imported only when such a backend
is built. Every adapter comes wrapped in a ``backends.scrub.ScrubbedBackend``.

Must not import ``router`` or ``policies``.
"""

from __future__ import annotations

from collections.abc import Callable

import aiohttp

from backends.base import Backend, BackendConfig
from backends.kinds import DIRECT_KINDS
from backends.openai_compat import OpenAICompatBackend
from backends.scrub import ScrubbedBackend, Scrubber

__all__ = ["build_backend", "check_kind", "provider_price"]

Factory = Callable[[BackendConfig, aiohttp.ClientSession], Backend]

_FACTORIES: dict[str, Factory] = {kind: OpenAICompatBackend for kind in DIRECT_KINDS}


def _closed(config: BackendConfig, session: aiohttp.ClientSession) -> Backend:
    from backends.litellm_backend import LiteLLMBackend  # lazy: litellm is slow to import

    return LiteLLMBackend(config)


def check_kind(kind: str) -> None:
    """Raise ``ValueError`` unless ``kind`` is a self-hosted kind or a provider litellm knows."""
    if kind in _FACTORIES:
        return
    from backends.litellm_backend import known_provider  # lazy: litellm is slow to import

    if not known_provider(kind):
        direct = ", ".join(sorted(DIRECT_KINDS))
        raise ValueError(f"unknown backend kind {kind!r}: use a self-hosted kind ({direct}) "
                         "or a litellm provider name (openai, anthropic, gemini, azure, bedrock, mistral, …)")


def provider_price(kind: str, model: str) -> tuple[float, float, float | None, float | None] | None:
    """USD per token (input, output, cache read, cache write) from the provider price table; ``None`` for
    self-hosted kinds and unknown models. Loads litellm only for closed kinds."""
    if kind in _FACTORIES:
        return None
    from backends.litellm_backend import provider_price as lookup  # lazy: litellm is slow to import

    return lookup(kind, model)


def build_backend(config: BackendConfig, session: aiohttp.ClientSession) -> Backend:
    """Build the adapter for ``config.kind``, wrapped so that its errors leave without
    credentials or internal addresses (``backends.scrub``); ``ValueError`` for an unknown kind."""
    adapter = _FACTORIES.get(config.kind, _closed)(config, session)
    return ScrubbedBackend(adapter, Scrubber.for_backends([config]))
