"""Shared state: virtual keys and rate limits behind one ``Store`` protocol."""

from __future__ import annotations

from router.state.store import Budget, KeyRecord, Store, StoreUnavailable, Window, WindowResult

__all__ = ["Budget", "KeyRecord", "Store", "StoreUnavailable", "Window", "WindowResult"]
