"""The Switchyard service: HTTP surface, attempt engine, settings and CLI.

The only package that imports both ``policies`` and ``backends``.
"""

from __future__ import annotations

__all__: list[str] = []
