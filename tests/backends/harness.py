"""Shared pieces of the backend contract suite: the adapters under contract (``SPECS``), the
``Harness`` that wires one adapter to a local fake upstream speaking its real wire format,
and request/stream helpers. The ``adapter`` fixture itself lives in ``conftest.py``.

The shared suite (``test_backend_contract.py``) runs every case against every adapter in
``SPECS`` (the TensorZero habit: one suite, every provider). A case that an adapter fails
because of a known bug is parametrised with ``adapters(bugs={...})``, which marks just
those adapters ``xfail(strict=True)`` so the mark must be removed when the bug is fixed.

The fakes are the stock ``tests.fakes`` servers; ``aclose()`` is observable because they
run with aiohttp handler cancellation (a parked handler ends when its client goes away).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
import orjson
import pytest

from backends.base import Backend, BackendConfig, TimeLimits
from backends.errors import BackendError
from backends.registry import build_backend
from backends.sse import DONE
from backends.types import BackendRequest
from tests.fakes.base import FakeUpstream

KEY = "sk-contract-key"
UPSTREAM_MODEL = {"openai": "upstream-openai-model", "anthropic": "claude-upstream-1"}
MESSAGES = [{"role": "user", "content": "Say hello."}]
#: Time limits for ordinary cases: generous, so only a scripted fault can trip them.
CALM = TimeLimits(connect_s=2.0, first_token_s=10.0, idle_s=10.0, total_s=10.0)


def free_port() -> int:
    """A loopback port nobody listens on (bound, read, released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Spec:
    """One adapter under contract."""

    id: str
    kind: str
    wire: Literal["openai", "anthropic"]
    model: str  # what the gateway is configured to ask the upstream for
    passthrough: bool
    health_path: str | None = None  # None: the adapter does not probe

    def base_url(self, origin: str) -> str:
        return origin + "/v1" if self.wire == "openai" else origin


SPECS: tuple[Spec, ...] = (
    Spec("vllm", "vllm", "openai", "served/vllm-model", True, "/health"),
    Spec("llamacpp", "llamacpp", "openai", "served-gguf", True, "/health"),
    Spec("openai_compatible", "openai_compatible", "openai", "served-compat", True, "/v1/models"),
    Spec("litellm-openai", "openai", "openai", "gpt-4o-mini", False),
    Spec("litellm-anthropic", "anthropic", "anthropic", "claude-sonnet-4-5", False),
)
SPEC_IDS = tuple(s.id for s in SPECS)
LITELLM = tuple(s.id for s in SPECS if not s.passthrough)
PASSTHROUGH = tuple(s.id for s in SPECS if s.passthrough)


def adapters(bugs: Mapping[str | Iterable[str], str] | None = None,
             only: Iterable[str] = SPEC_IDS) -> list[Any]:
    """Params for ``@pytest.mark.parametrize("adapter", adapters(...), indirect=True)``;
    ``bugs`` maps a spec id (or a tuple of ids) to the xfail reason; ``only`` narrows the set."""
    only = tuple(only)
    reasons: dict[str, str] = {}
    for ids, reason in (bugs or {}).items():
        for one in (ids,) if isinstance(ids, str) else ids:
            assert one in SPEC_IDS, one
            reasons[one] = reason
    return [
        pytest.param(s, id=s.id, marks=[pytest.mark.xfail(strict=True, reason=reasons[s.id])]
                     if s.id in reasons else [])
        for s in SPECS if s.id in only
    ]


@dataclass
class Harness:
    """An adapter (``backend``) wired to its fake upstream (``fake``)."""

    spec: Spec
    fake: FakeUpstream
    session: aiohttp.ClientSession
    backend: Backend = field(init=False)
    _built: list[Backend] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.backend = self.make()

    def make(self, *, base_url: str | None = None, api_key: str | None = KEY,
             limits: TimeLimits = CALM) -> Backend:
        """Another adapter of the same kind (other URL, key or limits), on the same session."""
        spec = self.spec
        config = BackendConfig(name=f"contract-{spec.id}", kind=spec.kind, model=spec.model,
                               base_url=base_url or spec.base_url(self.fake.origin), api_key=api_key,
                               self_hosted=spec.passthrough, limits=limits)
        backend = build_backend(config, self.session)
        self._built.append(backend)
        return backend

    def dead_base_url(self) -> str:
        return self.spec.base_url(f"http://127.0.0.1:{free_port()}")

    @property
    def api_path(self) -> str:
        return "/v1/chat/completions" if self.spec.wire == "openai" else "/v1/messages"

    def api_calls(self) -> list[Any]:
        return self.fake.calls(self.api_path)

    def all_requests(self) -> list[Any]:
        """API calls and operational probes (/health, /metrics) the fake recorded."""
        return [*self.fake.received, *getattr(self.fake, "probes", [])]


# -- requests and stream helpers ---------------------------------------------------------------

def chat(stream: bool = False, **extra: Any) -> BackendRequest:
    body: dict[str, Any] = {"model": "client-alias", "messages": MESSAGES, "max_tokens": 64, **extra}
    if stream:
        body["stream"] = True
    return BackendRequest(endpoint="chat", body=body, stream=stream, request_id="req-contract")


@dataclass
class Drained:
    """What a consumer saw from one streaming attempt."""

    events: list[bytes]
    error: BackendError | None
    opened: bool
    elapsed: float

    def json_chunks(self) -> list[dict[str, Any]]:
        """Every event's JSON payload ([DONE] and unparsable events left out)."""
        out = []
        for event in self.events:
            if event == DONE:
                continue
            try:
                out.append(orjson.loads(event.removeprefix(b"data: ")))
            except orjson.JSONDecodeError:
                continue
        return out

    def text(self) -> str:
        return text_of(self.json_chunks())

    def finish_reasons(self) -> list[str]:
        return [c["choices"][0]["finish_reason"] for c in self.json_chunks()
                if c.get("choices") and c["choices"][0].get("finish_reason")]


def text_of(chunks: Iterable[Mapping[str, Any]]) -> str:
    return "".join((c["choices"][0].get("delta") or {}).get("content") or ""
                   for c in chunks if c.get("choices"))


async def drain(backend: Backend, request: BackendRequest, *, bound_s: float = 8.0) -> Drained:
    """Open a stream and read it to the end, recording the events and the BackendError that
    ended it (anything else propagates). ``bound_s`` only keeps a broken adapter from hanging
    the suite; it is far above every limit the cases use."""
    events: list[bytes] = []
    error: BackendError | None = None
    opened = False
    started = time.monotonic()
    async with asyncio.timeout(bound_s):
        try:
            stream = await backend.open_stream(request)
            opened = True
            try:
                async for event in stream:
                    events.append(event)
            finally:
                await stream.aclose()
        except BackendError as exc:
            error = exc
    return Drained(events, error, opened, time.monotonic() - started)


async def wait_until(predicate, timeout_s: float = 2.0) -> bool:  # type: ignore[no-untyped-def]
    """Poll ``predicate`` every 10 ms for at most ``timeout_s``; True once it holds."""
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.01)
