"""What policy needs to know about backend kinds, as data the caller hands in.

What a kind is belongs to ``backends`` (``backends.kinds``), which policy code must not
import: the router turns that table into a ``KindTable`` and passes it to ``load_policy``.
Loading stores each backend's ``KindInfo`` on its ``BackendSpec``, so nothing after
loading needs the table.

Pure data. Must not import ``router`` or ``backends``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["KindInfo", "KindTable"]


@dataclass(frozen=True, slots=True)
class KindInfo:
    """The traits of one kind that policy decisions depend on."""

    #: A server we run, reached directly (no litellm); the default of a backend's
    #: ``self_hosted``, and its ``base_url`` is required.
    self_hosted: bool
    #: Continues a partial assistant message sent as the last message (prefill);
    #: the default of a backend's ``supports_prefill``.
    supports_prefill: bool


@dataclass(frozen=True, slots=True)
class KindTable:
    """Every kind with traits of its own, and the traits of any other kind (a closed provider;
    whether one is known at all is checked when backends are built, not here)."""

    listed: Mapping[str, KindInfo]
    other: KindInfo

    def info(self, kind: str) -> KindInfo:
        return self.listed.get(kind, self.other)
