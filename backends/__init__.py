"""Adapters, one per upstream: direct OpenAI-compatible passthrough for self-hosted
servers, litellm for closed providers. Each translates its own errors into
``backends.errors``.

Must not import ``router`` or ``policies`` (checked by import-linter in CI).
"""

from __future__ import annotations

from backends.base import Backend, BackendConfig, Limits
from backends.errors import BackendError
from backends.registry import DIRECT_KINDS, build_backend, check_kind, provider_price
from backends.types import BackendRequest, BackendResponse, BackendStream, Endpoint, Health

__all__ = [
    "DIRECT_KINDS",
    "Backend",
    "BackendConfig",
    "BackendError",
    "BackendRequest",
    "BackendResponse",
    "BackendStream",
    "Endpoint",
    "Health",
    "Limits",
    "build_backend",
    "check_kind",
    "provider_price",
]
