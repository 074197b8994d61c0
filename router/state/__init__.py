"""Shared state: virtual keys, rate-limit windows, budgets, the response cache and dashboard
counters, behind role-sized store protocols (``router.state.store``) with an in-memory and a
Redis implementation; admission (``Gatekeeper``, ``Hold``) composes them per request."""

from __future__ import annotations

from router.state.store import (
    BlobStore,
    Budget,
    CounterStore,
    KeyRecord,
    KeyStore,
    StatsStore,
    Store,
    StoreLifecycle,
    StoreUnavailable,
    Window,
    WindowResult,
)

__all__ = ["BlobStore", "Budget", "CounterStore", "KeyRecord", "KeyStore", "StatsStore", "Store", "StoreLifecycle",
           "StoreUnavailable", "Window", "WindowResult"]
