"""``RequestFacts``: the only view of a request that policy code sees.

Built by the router from the parsed body; frozen, small, no raw text beyond what
routing needs. Must not import ``router`` or ``backends``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Endpoint", "RequestFacts"]

Endpoint = Literal["chat", "completions", "embeddings"]


@dataclass(frozen=True, slots=True)
class RequestFacts:
    model: str
    endpoint: Endpoint
    stream: bool = False
