"""Adapters, one per upstream: direct OpenAI-compatible passthrough for self-hosted
servers, litellm for closed providers. Each translates its own errors into
``backends.errors``. What each kind is lives in ``backends.kinds``.

Must not import ``router`` or ``policies`` (checked by import-linter in CI).
"""

from __future__ import annotations

from backends.base import Backend, BackendConfig, TimeLimits
from backends.errors import BackendError
from backends.kinds import CLOSED_TRAITS, DIRECT_KINDS, KIND_TRAITS, KindTraits, kind_traits
from backends.pool import Discovery, PlacementSpec, ReplicaPool, session_of
from backends.registry import build_backend, check_kind, provider_price
from backends.scrub import Scrubber
from backends.types import Api, BackendRequest, BackendResponse, BackendStream, Health, stream_ready

__all__ = [
    "CLOSED_TRAITS",
    "DIRECT_KINDS",
    "KIND_TRAITS",
    "Api",
    "Backend",
    "BackendConfig",
    "BackendError",
    "BackendRequest",
    "BackendResponse",
    "BackendStream",
    "Health",
    "KindTraits",
    "Discovery",
    "PlacementSpec",
    "ReplicaPool",
    "Scrubber",
    "TimeLimits",
    "build_backend",
    "check_kind",
    "kind_traits",
    "provider_price",
    "session_of",
    "stream_ready",
]
