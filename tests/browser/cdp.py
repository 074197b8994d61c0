"""A small Chrome DevTools Protocol client for headless Chromium, on aiohttp's websocket client.

    async with Chromium() as browser:
        await browser.navigate(url)
        await browser.wait_for("document.querySelector('#x') !== null")
        value = await browser.evaluate("document.title")
        await browser.screenshot(path)
        assert not browser.errors

Chromium is started as a subprocess in its own process group with a throwaway profile, and
stopped by that PID (the group: its renderer and GPU helpers) with the profile removed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import aiohttp

CHROMIUM = "/usr/bin/chromium"
VIEWPORT = (1400, 1800)

__all__ = ["CHROMIUM", "CDPError", "Chromium", "ConsoleMessage"]


class CDPError(RuntimeError):
    """A DevTools command failed, the page threw, or a wait timed out."""


@dataclass(frozen=True)
class ConsoleMessage:
    """One problem the page reported: a console.error/warning, an uncaught exception, or a
    browser log entry (network failures, CSP violations, …) at level error."""

    kind: str  # "console" | "exception" | "log"
    level: str  # "error" | "warning"
    text: str
    source: str = ""  # Log.entryAdded source: "network", "javascript", "security", …
    url: str = ""

    def __str__(self) -> str:
        where = f" ({self.url})" if self.url else ""
        return f"[{self.kind}/{self.source or self.level}] {self.text}{where}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _remote_text(obj: dict[str, Any]) -> str:
    """A console argument (Runtime.RemoteObject) as text."""
    if "value" in obj:
        return str(obj["value"])
    return str(obj.get("description") or obj.get("unserializableValue") or obj.get("type", ""))


class Chromium:
    """Headless Chromium driven over CDP. Use as ``async with Chromium() as browser``."""

    def __init__(self, binary: str = CHROMIUM, viewport: tuple[int, int] = VIEWPORT,
                 command_s: float = 30.0, startup_s: float = 30.0) -> None:
        self.binary = binary
        self.viewport = viewport
        self.command_s = command_s
        self.startup_s = startup_s
        self.messages: list[ConsoleMessage] = []
        self._proc: asyncio.subprocess.Process | None = None
        self._tmp: Path | None = None
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._next_id = 0
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._waiters: list[tuple[str, asyncio.Future[dict[str, Any]]]] = []

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Chromium:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    async def start(self) -> None:
        self._tmp = Path(tempfile.mkdtemp(prefix="switchyard-chromium-"))
        port = _free_port()
        log = self._open_log()
        try:
            self._proc = await asyncio.create_subprocess_exec(
                self.binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--no-default-browser-check", "--disable-dev-shm-usage", "--hide-scrollbars",
                f"--remote-debugging-port={port}", f"--user-data-dir={self._tmp / 'profile'}", "about:blank",
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        finally:
            log.close()
        self._http = aiohttp.ClientSession()
        ws_url = await self._page_target(port, self.startup_s)
        self._ws = await self._http.ws_connect(ws_url, max_msg_size=0, autoping=True)
        self._reader = asyncio.create_task(self._read())
        for method in ("Runtime.enable", "Log.enable", "Page.enable"):
            await self.send(method)
        width, height = self.viewport
        await self.send("Emulation.setDeviceMetricsOverride",
                        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})

    def _open_log(self) -> BinaryIO:
        assert self._tmp is not None
        return (self._tmp / "chromium.log").open("wb")

    async def _page_target(self, port: int, seconds: float) -> str:
        """Poll /json until the browser lists a page target; its websocket URL."""
        assert self._http is not None and self._proc is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        last: object = None
        while loop.time() < deadline:
            if self._proc.returncode is not None:
                raise CDPError(f"chromium exited with {self._proc.returncode}: {self._log_tail()}")
            try:
                async with self._http.get(f"http://127.0.0.1:{port}/json",
                                          timeout=aiohttp.ClientTimeout(total=2)) as r:
                    targets = await r.json(content_type=None)
                for target in targets:
                    if target.get("type") == "page" and target.get("webSocketDebuggerUrl"):
                        return str(target["webSocketDebuggerUrl"])
                last = targets
            except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError) as exc:
                last = exc
            await asyncio.sleep(0.1)
        raise CDPError(f"no page target on port {port} after {seconds} s ({last!r}): {self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            assert self._tmp is not None
            return (self._tmp / "chromium.log").read_text(errors="replace")[-2000:]
        except (OSError, AssertionError):
            return ""

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
            self._reader = None
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
            self._ws = None
        if self._http is not None:
            await self._http.close()
            self._http = None
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            # Our own process group (start_new_session): the browser and its helpers, by PID.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        if proc is not None:  # helpers that outlived the browser
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(CDPError("browser stopped"))
        self._pending.clear()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    # -- protocol -------------------------------------------------------------------------

    async def send(self, method: str, params: dict[str, Any] | None = None,
                   seconds: float | None = None) -> dict[str, Any]:
        """One CDP command; its result (raises CDPError on a protocol error)."""
        if self._ws is None:
            raise CDPError("not connected")
        self._next_id += 1
        msg_id = self._next_id
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = future
        try:
            await self._ws.send_str(json.dumps({"id": msg_id, "method": method, "params": params or {}}))
            reply = await asyncio.wait_for(future, seconds or self.command_s)
        finally:
            self._pending.pop(msg_id, None)
        if "error" in reply:
            raise CDPError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    def _expect(self, event: str) -> asyncio.Future[dict[str, Any]]:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters.append((event, future))
        return future

    async def _read(self) -> None:
        assert self._ws is not None
        async for msg in self._ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                    break
                continue
            data = json.loads(msg.data)
            if "id" in data:
                future = self._pending.get(data["id"])
                if future is not None and not future.done():
                    future.set_result(data)
                continue
            method = data.get("method", "")
            params = data.get("params", {})
            self._on_event(method, params)
            for entry in [w for w in self._waiters if w[0] == method]:
                self._waiters.remove(entry)
                if not entry[1].done():
                    entry[1].set_result(params)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(CDPError("the DevTools connection closed"))

    def _on_event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "warning", "assert"):
            text = " ".join(_remote_text(arg) for arg in params.get("args", []))
            frames = (params.get("stackTrace") or {}).get("callFrames") or [{}]
            level = "warning" if params["type"] == "warning" else "error"
            self.messages.append(ConsoleMessage("console", level, text, "console-api", frames[0].get("url", "")))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            exception = details.get("exception") or {}
            text = str(exception.get("description") or details.get("text", "exception"))
            self.messages.append(ConsoleMessage("exception", "error", text, "javascript", details.get("url", "")))
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            if entry.get("level") == "error":
                self.messages.append(ConsoleMessage("log", "error", str(entry.get("text", "")),
                                                    str(entry.get("source", "")), str(entry.get("url", ""))))

    @property
    def errors(self) -> list[ConsoleMessage]:
        """Everything the page reported at error or warning level so far."""
        return list(self.messages)

    # -- page helpers ---------------------------------------------------------------------

    async def navigate(self, url: str, seconds: float = 20.0) -> None:
        """Open ``url`` and wait for its load event."""
        loaded = self._expect("Page.loadEventFired")
        try:
            result = await self.send("Page.navigate", {"url": url})
            if result.get("errorText"):
                raise CDPError(f"navigating to {url}: {result['errorText']}")
            await asyncio.wait_for(loaded, seconds)
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(("Page.loadEventFired", loaded))
            loaded.cancel()

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (promises awaited, returned by value)."""
        result = await self.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                                      "returnByValue": True})
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = (details.get("exception") or {}).get("description") or details.get("text")
            raise CDPError(f"evaluating {expression!r}: {text}")
        return result.get("result", {}).get("value")

    async def wait_for(self, expression: str, seconds: float = 15.0, interval: float = 0.1) -> Any:
        """Poll ``expression`` until it is truthy *in JavaScript* (an element counts); its value
        (objects as their string form). CDPError after ``seconds``."""
        probe = (f"(async () => {{ const v = await ({expression}); "
                 "return [!!v, v !== null && typeof v === 'object' ? String(v) : v]; })()")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while True:
            truthy, value = await self.evaluate(probe)
            if truthy:
                return value
            if loop.time() >= deadline:
                problems = "; ".join(map(str, self.messages)) or "none"
                raise CDPError(f"timed out after {seconds} s waiting for {expression!r} "
                               f"(last value {value!r}; page errors: {problems})")
            await asyncio.sleep(interval)

    async def screenshot(self, path: str | os.PathLike[str]) -> Path:
        """A PNG of the viewport, written to ``path``."""
        result = await self.send("Page.captureScreenshot", {"format": "png"})
        return _write(Path(path), base64.b64decode(result["data"]))
