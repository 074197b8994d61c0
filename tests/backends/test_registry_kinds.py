"""Unit tests for ``backends.kinds`` and ``backends.registry``: which kinds exist, what
they are, and what they build."""

from __future__ import annotations

import aiohttp
import pytest

from backends.base import BackendConfig
from backends.kinds import CLOSED_TRAITS, DIRECT_KINDS, KIND_TRAITS, KindTraits, kind_traits
from backends.openai_compat import OpenAICompatBackend
from backends.registry import build_backend, check_kind
from backends.scrub import ScrubbedBackend


def test_direct_kinds_are_the_passthrough_traits() -> None:
    assert DIRECT_KINDS == {"vllm", "tgi", "llamacpp", "ollama", "openai_compatible"}
    assert DIRECT_KINDS == {kind for kind, traits in KIND_TRAITS.items() if traits.self_hosted}


def test_kind_traits_cover_closed_kinds_with_a_default() -> None:
    assert kind_traits("anthropic") == KindTraits(self_hosted=False, supports_prefill=True)
    assert kind_traits("openai") is CLOSED_TRAITS and kind_traits("nope") is CLOSED_TRAITS
    assert not CLOSED_TRAITS.self_hosted and not CLOSED_TRAITS.supports_prefill
    assert {k for k, t in KIND_TRAITS.items() if t.supports_prefill} == {"vllm", "llamacpp", "anthropic"}


def test_kind_traits_are_consistent() -> None:
    with pytest.raises(ValueError, match="health_path"):
        KindTraits(self_hosted=True)
    with pytest.raises(ValueError, match="health_path"):
        KindTraits(self_hosted=False, health_path="/health")
    with pytest.raises(ValueError, match="prefill"):
        KindTraits(self_hosted=True, health_path="/health", prefill_fields=(("x", True),))


@pytest.mark.parametrize("kind", sorted(DIRECT_KINDS))
def test_check_kind_accepts_self_hosted_kinds(kind: str) -> None:
    assert check_kind(kind) is None


@pytest.mark.parametrize("kind", ["anthropic", "openai", "gemini", "mistral"])
def test_check_kind_accepts_litellm_providers(kind: str) -> None:
    assert check_kind(kind) is None


@pytest.mark.parametrize("kind", ["nope", "vLLM", "", "anthropic "])
def test_check_kind_rejects_unknown_kind_naming_it(kind: str) -> None:
    with pytest.raises(ValueError) as info:
        check_kind(kind)
    assert repr(kind) in str(info.value)
    assert "vllm" in str(info.value)  # and says what would be valid


async def test_build_backend_picks_the_adapter_by_kind() -> None:
    from backends.litellm_backend import LiteLLMBackend

    async with aiohttp.ClientSession() as session:
        for kind in sorted(DIRECT_KINDS):
            backend = build_backend(BackendConfig(name=kind, kind=kind, model="m",
                                                  base_url="http://127.0.0.1:9/v1"), session)
            assert isinstance(backend, ScrubbedBackend)  # every adapter's errors are scrubbed
            assert isinstance(backend.inner, OpenAICompatBackend)
            assert backend.inner.traits is KIND_TRAITS[kind]
        closed = build_backend(BackendConfig(name="c", kind="anthropic", model="claude",
                                             self_hosted=False), session)
        assert isinstance(closed, ScrubbedBackend) and isinstance(closed.inner, LiteLLMBackend)
        assert closed.self_hosted is False
        with pytest.raises(ValueError, match="nope"):
            build_backend(BackendConfig(name="x", kind="nope", model="m"), session)
        with pytest.raises(ValueError, match="base_url"):
            build_backend(BackendConfig(name="v", kind="vllm", model="m"), session)
