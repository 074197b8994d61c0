"""``Serving``: which policy is being served, and safe reloads of it.

A reload (SIGHUP, a change of the policy file — polled and debounced — or
``POST /admin/policy/reload``) loads and validates the file and builds a complete new
``Gateway`` before swapping it in with one assignment: requests in flight finish on the
gateway they started with. A policy that does not load is rejected: the old one keeps
serving, and the error (file, line, path) is logged, kept for ``/readyz`` and
``/admin/policy``, and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
from aiohttp import web

from policies import LoadedPolicy, PolicyError, load_policy
from router.gateway import Gateway, open_gateway
from router.runtime import KIND_TABLE, check_backends
from router.state.store import Store

__all__ = ["SERVING", "Serving"]

log = logging.getLogger("switchyard.reload")


class Serving:
    def __init__(self, gateway: Gateway, path: Path | None, session: aiohttp.ClientSession, store: Store,
                 env: Mapping[str, str] | None = None) -> None:
        self.gateway = gateway
        self.path = path
        self.store = store
        self._session = session
        self._env = env if env is not None else os.environ
        self._lock = asyncio.Lock()
        self._watch: asyncio.Task[None] | None = None
        self._old: list[Gateway] = []
        self.loaded_at = datetime.now(UTC)
        self.reloads = 0
        self.failures = 0
        self.last_error: dict[str, object] | None = None

    @property
    def loaded(self) -> LoadedPolicy:
        return self.gateway.runtime.loaded

    def status(self) -> dict[str, object]:
        loaded = self.loaded
        return {"ok": self.last_error is None, "source": loaded.source, "sha256": loaded.sha256,
                "version": loaded.policy.version, "loaded_at": self.loaded_at.isoformat(),
                "rules": [r.name for r in loaded.rules], "reloads": self.reloads,
                "reload_failures": self.failures, "last_error": self.last_error}

    async def reload(self, trigger: str) -> dict[str, object]:
        """Load the policy file again and swap it in if valid; returns ``status()``. Never
        raises: whatever goes wrong is a rejected reload (``last_error``), the old policy serving.
        The file is read, parsed and validated in a worker thread (``policies.loader`` bounds its
        size, nesting and alias expansion), so a hostile file cannot stall the event loop."""
        if self.path is None:
            self.last_error = {"at": _now(), "trigger": trigger, "issues": ["no policy file to reload"]}
            return self.status()
        async with self._lock:
            try:
                loaded = await asyncio.to_thread(self._load, self.path)
                if loaded.sha256 == self.loaded.sha256 and trigger == "file":
                    return self.status()
                new = await open_gateway(loaded, self._session, self.store, previous=self.gateway)
            except PolicyError as exc:
                self._rejected(trigger, [str(i) for i in exc.issues])
                return self.status()
            except Exception as exc:  # noqa: BLE001 - a reload must never take the gateway down
                log.exception("policy reload (%s) failed", trigger)
                self._rejected(trigger, [f"{self.path}: cannot load the policy: {type(exc).__name__}: {exc}"[:500]])
                return self.status()
            old, self.gateway = self.gateway, new
            self._retire(old)
            self.loaded_at, self.last_error = datetime.now(UTC), None
            self.reloads += 1
            log.info("policy reloaded (%s): %s sha256 %s, rules: %s", trigger, loaded.source, loaded.sha256[:12],
                     ", ".join(r.name for r in loaded.rules) or "none")
            return self.status()

    def _load(self, path: Path) -> LoadedPolicy:
        """Read and validate ``path`` (runs in a worker thread: pure, no event loop)."""
        loaded = load_policy(path, self._env, kinds=KIND_TABLE)
        check_backends(loaded)
        return loaded

    def _rejected(self, trigger: str, issues: list[str]) -> None:
        self.failures += 1
        self.last_error = {"at": _now(), "trigger": trigger, "issues": issues}
        log.error("policy reload (%s) rejected; the previous policy keeps serving:\n  %s", trigger,
                  "\n  ".join(issues))

    def _retire(self, old: Gateway) -> None:
        """Stop the old gateway's background work; its requests in flight finish on their own."""
        self._old.append(old)
        task = asyncio.get_running_loop().create_task(old.close())
        task.add_done_callback(lambda _: self._old.remove(old) if old in self._old else None)

    # -- triggers ------------------------------------------------------------------------
    def start(self, watch: bool) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not the main thread
            loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(self.reload("SIGHUP")))
        if watch and self.path is not None:
            self._watch = loop.create_task(self._watch_file(self.path))

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        await self.gateway.close()

    async def _watch_file(self, path: Path, interval_s: float = 1.0, settle_s: float = 0.5) -> None:
        """Poll the file; reload once it changed and then stayed unchanged for ``settle_s``
        (editors write files in several steps)."""
        seen = _stamp(path)
        while True:
            await asyncio.sleep(interval_s)
            stamp = _stamp(path)
            if stamp == seen:
                continue
            await asyncio.sleep(settle_s)
            if _stamp(path) != stamp:
                continue  # still being written: look again next round
            seen = stamp
            try:
                await self.reload("file")
            except Exception:  # noqa: BLE001 - the watcher must survive anything
                log.exception("policy reload failed")


def _stamp(path: Path) -> tuple[float, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime, st.st_size


def _now() -> str:
    return datetime.fromtimestamp(time.time(), UTC).isoformat()


SERVING = web.AppKey("serving", Serving)
