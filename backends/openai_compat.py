"""Direct passthrough to OpenAI-compatible servers we run: vLLM, TGI, llama.cpp,
Ollama, or any other ``/v1/chat/completions`` server. No litellm on this path.

The client's JSON is forwarded with only ``model`` rewritten; answers come back
byte for byte; SSE is relayed event by event. Per-kind differences (health and
metrics paths, prefill fields) are declarative (``backends.kinds.KIND_TRAITS``). aiohttp
exceptions are turned into ``backends.errors`` here and nowhere else.

Must not import ``router`` or ``policies``.
"""

from __future__ import annotations

import asyncio

import aiohttp
import orjson

from backends.base import BackendConfig, TimeLimits
from backends.errors import (
    BackendError,
    StreamBroken,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamServerError,
    UpstreamTimeout,
    error_from_status,
)
from backends.kinds import kind_traits
from backends.metrics import LoadSample, load_sample
from backends.sse import DONE, SSESplitter
from backends.types import ENDPOINT_PATHS, BackendRequest, BackendResponse, Health

__all__ = ["OpenAICompatBackend"]


_FINISHED = (b'"finish_reason":"', b'"finish_reason": "',
             b"event: message_stop", b"event: response.completed", b"event: response.incomplete")
_ERROR_EVENT = (b'data: {"error"', b'data:{"error"', b"event: error", b"event: response.failed")


class OpenAICompatBackend:
    """One OpenAI-compatible upstream over a shared, pooled ``aiohttp.ClientSession``."""

    def __init__(self, config: BackendConfig, session: aiohttp.ClientSession) -> None:
        if not config.base_url:
            raise ValueError(f"backend {config.name}: base_url is required")
        self.traits = kind_traits(config.kind)
        if self.traits.health_path is None:
            raise ValueError(f"backend {config.name}: kind {config.kind!r} is not served directly")
        self._health_path: str = self.traits.health_path
        self.name = config.name
        self.self_hosted = config.self_hosted
        self.config = config
        self._session = session
        base = config.base_url.rstrip("/")
        self._base = base
        self._root = base.removesuffix("/v1")
        self._model_json = orjson.dumps(config.model)
        headers = {"Content-Type": "application/json", **dict(config.headers)}
        if config.api_key:
            headers["Authorization"] = f"Bearer {config.api_key}"
        self._headers = headers
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=config.limits.connect_s)

    # -- requests ----------------------------------------------------------------------
    async def complete(self, request: BackendRequest) -> BackendResponse:
        limits = self.config.limits
        try:
            async with asyncio.timeout(limits.total_s):
                async with self._post(request) as resp:
                    await self._raise_for_status(resp)
                    body = await resp.read()
        except TimeoutError:
            raise UpstreamTimeout(f"{self.name} gave no complete answer within {limits.total_s:g} s",
                                  backend=self.name) from None
        except aiohttp.ClientError as exc:
            raise _connection_error(self.name, exc) from exc
        return BackendResponse(body=body)

    async def open_stream(self, request: BackendRequest) -> PassthroughStream:
        limits = self.config.limits
        deadline = asyncio.get_running_loop().time() + limits.first_token_s  # headers + first event
        ctx = self._post(request)
        try:
            async with asyncio.timeout_at(deadline):
                resp = await ctx.__aenter__()
        except TimeoutError:
            raise UpstreamTimeout(f"{self.name} sent no response headers within "
                                  f"{limits.first_token_s:g} s", backend=self.name) from None
        except aiohttp.ClientError as exc:
            raise _connection_error(self.name, exc) from exc
        try:
            await self._raise_for_status(resp)
        except BaseException:
            resp.release()
            raise
        return PassthroughStream(self.name, resp, deadline, limits)

    def _post(self, request: BackendRequest) -> aiohttp.client._RequestContextManager:
        body = dict(request.body)
        body["model"] = self.config.model
        if request.prefill:
            body.update(self.traits.prefill_fields)
        headers = self._headers
        if request.traceparent or request.headers:
            headers = {**headers, **dict(request.headers)}
            if request.traceparent:
                headers["traceparent"] = request.traceparent
        return self._session.post(self._base + ENDPOINT_PATHS[request.endpoint], data=orjson.dumps(body),
                                  headers=headers, timeout=self._timeout)

    async def _raise_for_status(self, resp: aiohttp.ClientResponse) -> None:
        if resp.status < 400:
            return
        raw = await resp.read()
        message, code, param = _parse_error(raw, resp.status)
        retry_after = _retry_after(resp.headers.get("Retry-After"))
        raise error_from_status(resp.status, message, backend=self.name, code=code,
                                retry_after=retry_after, param=param)

    # -- probes ------------------------------------------------------------------------
    async def health(self) -> Health:
        path = self._health_path
        timeout = aiohttp.ClientTimeout(total=self.config.limits.connect_s)
        try:
            async with self._session.get(self._root + path, headers=self._headers, timeout=timeout) as resp:
                await resp.read()
                ok = resp.status == 200
                return Health(ok, f"GET {path} → {resp.status}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            return Health(False, f"GET {path} failed: {exc.__class__.__name__} {exc}")

    async def load(self) -> LoadSample | None:
        """Scrape the server's Prometheus metrics (whole request bounded by ``connect_s``);
        ``None`` for kinds without a metrics endpoint. Failures raise ``UpstreamTimeout``,
        ``UpstreamConnectError`` or ``UpstreamServerError`` (any status but 200)."""
        path = self.traits.metrics_path
        if path is None:
            return None
        limit = self.config.limits.connect_s
        try:
            async with asyncio.timeout(limit):
                async with self._session.get(self._root + path, headers=self._headers,
                                             timeout=self._timeout) as resp:
                    raw = await resp.read()
                    status = resp.status
        except TimeoutError:
            raise UpstreamTimeout(f"{self.name}: GET {path} gave no answer within {limit:g} s",
                                  backend=self.name) from None
        except aiohttp.ClientError as exc:
            raise _connection_error(self.name, exc) from exc
        if status != 200:
            detail = raw.decode("utf-8", "replace").strip()[:200]
            raise UpstreamServerError(f"{self.name}: GET {path} answered {status}"
                                      + (f": {detail}" if detail else ""), backend=self.name)
        return load_sample(self.config.kind, raw.decode("utf-8", "replace"))

    async def close(self) -> None:
        return None


class _Idle(Exception):
    """Set on the response body by the idle watchdog: no event within ``idle_s``."""


class PassthroughStream:
    """Relays an upstream SSE body as complete events. The first event must arrive by
    ``first_deadline`` (loop time, counted from the request); later ones within ``idle_s``.

    An async iterator written out (not an async generator): per event it only pops what the
    last read brought, and ``ready()`` tells the relay that more is already in hand (so it can
    write them to the client in one go). The idle limit is a watchdog timer armed once per
    ``idle_s``, not a timeout per read."""

    __slots__ = ("_backend", "_resp", "_first_deadline", "_limits", "_splitter", "_events", "_next",
                 "_finished", "_first", "_over", "_waiting_since", "_watchdog")

    def __init__(self, backend: str, resp: aiohttp.ClientResponse, first_deadline: float,
                 limits: TimeLimits) -> None:
        self._backend = backend
        self._resp = resp
        self._first_deadline = first_deadline
        self._limits = limits
        self._splitter = SSESplitter()
        self._events: list[bytes] = []
        self._next = 0
        self._finished = self._over = False
        self._first = True
        self._waiting_since: float | None = None  # loop time a read started; None: not reading
        self._watchdog: asyncio.TimerHandle | None = None

    def __aiter__(self) -> PassthroughStream:
        return self

    def ready(self) -> bool:
        """The next event is already here: ``__anext__`` returns it without waiting."""
        return self._next < len(self._events)

    async def __anext__(self) -> bytes:
        while self._next >= len(self._events):
            if self._over:
                raise StopAsyncIteration
            chunk = await self._read()
            if not chunk:
                self._end()
                if not self._finished:
                    raise StreamBroken(f"{self._backend} closed the stream before it was complete",
                                       backend=self._backend)
                self._events, self._next = [DONE], 0  # complete answer, upstream just forgot the sentinel
                break
            self._events, self._next = self._splitter.feed(chunk), 0
        event = self._events[self._next]
        self._next += 1
        if event.startswith(_ERROR_EVENT):
            self._end()
            raise StreamBroken(_event_error(event), backend=self._backend)
        if not self._finished:
            self._finished = any(m in event for m in _FINISHED)
        if event == DONE:
            self._end()
        return event

    def _end(self) -> None:
        """The body is over (or broken): nothing after this is relayed, and the connection
        goes back to the pool."""
        self._events, self._next = [], 0
        if not self._over:
            self._over = True
            self._stop_watchdog()
            self._resp.release()

    async def _read(self) -> bytes:
        content = self._resp.content
        try:
            if self._first:
                self._first = False
                async with asyncio.timeout_at(self._first_deadline):
                    return await content.readany()
            self._waiting_since = asyncio.get_running_loop().time()
            if self._watchdog is None:
                self._arm(self._waiting_since)
            try:
                return await content.readany()
            finally:
                self._waiting_since = None
        except TimeoutError:
            self._end()
            raise UpstreamTimeout(f"{self._backend} sent no first token within {self._limits.first_token_s:g} s",
                                  backend=self._backend) from None
        except _Idle:
            self._end()
            raise UpstreamTimeout(f"{self._backend} sent no next event within {self._limits.idle_s:g} s",
                                  backend=self._backend) from None
        except aiohttp.ClientError as exc:
            self._end()
            raise StreamBroken(f"{self._backend} stream failed: {exc.__class__.__name__}",
                               backend=self._backend) from exc

    def _arm(self, since: float) -> None:
        self._watchdog = asyncio.get_running_loop().call_at(since + self._limits.idle_s, self._check)

    def _check(self) -> None:
        """The watchdog: a read waiting ``idle_s`` or more fails; otherwise look again when the
        current read would reach it (no read now: the next read re-arms)."""
        self._watchdog = None
        since = self._waiting_since
        if since is None or self._over:
            return
        if asyncio.get_running_loop().time() - since >= self._limits.idle_s:
            self._resp.content.set_exception(_Idle())
        else:
            self._arm(since)

    def _stop_watchdog(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    async def aclose(self) -> None:
        self._over = True
        self._stop_watchdog()
        self._resp.close()


def _connection_error(backend: str, exc: aiohttp.ClientError) -> BackendError:
    if isinstance(exc, aiohttp.ServerTimeoutError | aiohttp.ConnectionTimeoutError):
        return UpstreamTimeout(f"{backend}: connect timed out", backend=backend)
    if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ClientResponseError):
        return UpstreamProtocolError(f"{backend}: bad response: {exc}", backend=backend)
    return UpstreamConnectError(f"{backend}: cannot connect ({exc.__class__.__name__}: {exc})",
                                backend=backend)


def _parse_error(raw: bytes, status: int) -> tuple[str, str | None, str | None]:
    """Pull message/code/param out of an OpenAI-shaped (or any) error body."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        text = raw.decode("utf-8", "replace").strip()[:500]
        return (text or f"HTTP {status}"), None, None
    err = data.get("error", data) if isinstance(data, dict) else data
    if isinstance(err, dict):
        code = err.get("code") or err.get("type")
        param = err.get("param")
        return (str(err.get("message") or err)[:2000], str(code) if code else None,
                str(param) if param else None)
    return str(err)[:2000], None, None


def _event_error(event: bytes) -> str:
    payload = event.split(b"data:", 1)[-1].strip()
    message, _, _ = _parse_error(payload, 502)
    return f"upstream error mid-stream: {message}"


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
