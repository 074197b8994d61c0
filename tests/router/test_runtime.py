"""``router.runtime.KIND_TABLE``: what policy is told about each backend kind is exactly
what ``backends.kinds`` says."""

from __future__ import annotations

import pytest

from backends.kinds import CLOSED_TRAITS, KIND_TRAITS, kind_traits
from policies import KindInfo
from router.runtime import KIND_TABLE


@pytest.mark.parametrize("kind", [*sorted(KIND_TRAITS), "openai", "gemini", "not_a_kind"])
def test_kind_table_is_taken_from_the_backends_traits(kind: str) -> None:
    traits = kind_traits(kind)
    assert KIND_TABLE.info(kind) == KindInfo(self_hosted=traits.self_hosted, supports_prefill=traits.supports_prefill)


def test_kind_table_lists_the_same_kinds_and_default() -> None:
    assert set(KIND_TABLE.listed) == set(KIND_TRAITS)
    assert KIND_TABLE.other == KindInfo(CLOSED_TRAITS.self_hosted, CLOSED_TRAITS.supports_prefill)
