"""The attempt loop: the only module that meets both ``policies`` and ``backends``.

Given a ``Plan``, try its targets in order. A retryable failure (connect error,
timeout, 429, 5xx) moves on to the next target; a failure that would repeat anywhere
(the request itself was rejected) is returned at once. Nothing outside the plan is
ever tried. For streams, failover happens before the first byte reaches the client:
the first event is read here, and only then is the stream handed to the relay.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from backends import BackendError, BackendRequest, BackendResponse, BackendStream
from backends.errors import UpstreamProtocolError
from policies import Plan
from router.errors import AllBackendsFailed, NoBackendAvailable
from router.runtime import Runtime

__all__ = ["Answer", "Engine", "StreamAnswer"]

Failures = list[tuple[str, BackendError]]


@dataclass(slots=True)
class Answer:
    backend: str
    response: BackendResponse
    failures: Failures = field(default_factory=list)


@dataclass(slots=True)
class StreamAnswer:
    backend: str
    stream: BackendStream
    events: AsyncIterator[bytes]
    first: bytes
    failures: Failures = field(default_factory=list)


class Engine:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def complete(self, plan: Plan, request: BackendRequest) -> Answer:
        failures: Failures = []
        for name in _targets(plan):
            try:
                response = await self.runtime.backends[name].complete(request)
            except BackendError as exc:
                _record(failures, name, exc)
                continue
            return Answer(name, response, failures)
        raise AllBackendsFailed(plan.alias, failures)

    async def open_stream(self, plan: Plan, request: BackendRequest) -> StreamAnswer:
        failures: Failures = []
        for name in _targets(plan):
            stream = None
            try:
                stream = await self.runtime.backends[name].open_stream(request)
                events = aiter(stream)
                first = await anext(events, None)
                if first is None:
                    raise UpstreamProtocolError(f"{name} sent an empty stream", backend=name)
            except BackendError as exc:
                if stream is not None:
                    await stream.aclose()
                _record(failures, name, exc)
                continue
            return StreamAnswer(name, stream, events, first, failures)
        raise AllBackendsFailed(plan.alias, failures)


def _targets(plan: Plan) -> tuple[str, ...]:
    if not plan.targets:
        why = "; ".join(f"{name} ({reason})" for name, reason in plan.skipped) or "no targets"
        raise NoBackendAvailable(f"no usable backend for model {plan.alias!r}: {why}")
    return plan.targets


def _record(failures: Failures, name: str, exc: BackendError) -> None:
    """Remember a failure; re-raise it if no other target could do better."""
    failures.append((name, exc))
    if not exc.retryable:
        raise exc
