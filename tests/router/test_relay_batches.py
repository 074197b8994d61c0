"""Events that arrive together are written to the client together (issue 16).

A backend stream's ``ready()`` says its next event is already received; the relay then
keeps feeding the tracker and writes what it has in one ``write_many`` when the next event
would have to be waited for. What the client receives is the same bytes, in the same order,
as one write per event; a break in the middle of a batch still writes every event before it
ahead of the continuation.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from backends import BackendRequest
from backends.errors import StreamBroken
from router import pipeline
from tests.router.test_pipeline import WORDS, FakeBackend, ListSink, Script, call, chunk, gateway_for, in_flight

USAGE = (b'data: {"id":"c","object":"chat.completion.chunk","model":"m","choices":[],'
         b'"usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}\n\n')
DONE = b"data: [DONE]\n\n"
ROLE = chunk({"role": "assistant", "content": ""})
CONTENT = [chunk({"content": w}) for w in WORDS]


class ReadsStream:
    """A stream whose events come in reads: every event of a read is ``ready`` at once."""

    def __init__(self, backend: FakeBackend, reads: list[list[bytes]], broken: bool = False) -> None:
        self._backend, self._reads, self._broken = backend, [list(r) for r in reads], broken
        self._current: list[bytes] = []
        backend.open_streams += 1

    def __aiter__(self) -> ReadsStream:
        return self

    def ready(self) -> bool:
        return bool(self._current)

    async def __anext__(self) -> bytes:
        if not self._current:
            if not self._reads:
                if self._broken:
                    raise StreamBroken(f"{self._backend.name} stream failed", backend=self._backend.name)
                raise StopAsyncIteration
            self._current = self._reads.pop(0)
        return self._current.pop(0)

    async def aclose(self) -> None:
        self._backend.open_streams -= 1


class ReadsBackend(FakeBackend):
    def __init__(self, name: str, script: Script, reads: list[list[bytes]], broken: bool = False) -> None:
        super().__init__(name, script)
        self.reads, self.broken = reads, broken

    async def open_stream(self, request: BackendRequest) -> ReadsStream:  # type: ignore[override]
        await self._step(request)
        return ReadsStream(self, self.reads, self.broken)


class WritesSink(ListSink):
    """Records each write to the client: a single event, or several written together."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[list[bytes]] = []

    async def write(self, event: bytes) -> None:
        self.writes.append([event])
        await super().write(event)

    async def write_many(self, events: list[bytes]) -> None:
        self.writes.append(list(events))
        for event in events:
            await ListSink.write(self, event)


async def relayed(reads: list[list[bytes]], broken: bool = False, spare: str = "ok"
                  ) -> tuple[WritesSink, pipeline.Call, dict[str, FakeBackend], object]:
    gateway, backends, _ = gateway_for({"gpu": Script("ok"), "spare": Script(spare)})
    gpu = ReadsBackend("gpu", Script("ok"), reads, broken)
    gateway.runtime.backends["gpu"] = gpu  # type: ignore[index]
    backends["gpu"] = gpu
    c = call(stream=True)
    outcome = await pipeline.run(gateway, c)
    assert isinstance(outcome, pipeline.StreamReply)
    sink = WritesSink()
    await outcome.send(sink)
    return sink, c, backends, gateway


async def test_events_that_arrive_together_are_written_in_one_write() -> None:
    everything = [ROLE, *CONTENT, chunk({}, "stop"), USAGE, DONE]
    sink, c, backends, gateway = await relayed([everything[:1], everything[1:]])
    # the first event is read before the relay starts (time to first token); the rest came together
    assert sink.writes == [[ROLE], everything[1:]]
    assert sink.events == everything and sink.text() == "".join(WORDS)
    assert c.record.output_tokens == 5 and c.record.outcome == "ok"
    assert in_flight(gateway) == {} and backends["gpu"].open_streams == 0  # type: ignore[arg-type]


async def test_events_that_arrive_one_at_a_time_are_written_one_at_a_time() -> None:
    everything = [ROLE, *CONTENT, chunk({}, "stop"), USAGE, DONE]
    sink, _, _, _ = await relayed([[e] for e in everything])
    # once the answer is whole (finish reason and the usage asked for), [DONE] goes with it
    assert sink.writes == [[e] for e in everything[:-2]] + [[USAGE, DONE]]


async def test_a_break_inside_a_batch_writes_what_came_before_it_then_the_continuation() -> None:
    """The tracker has seen "Hello from": those events reach the client before the
    continuation, which is stitched after them (nothing lost, nothing repeated)."""
    sink, c, backends, _ = await relayed([[ROLE], CONTENT[:2]], broken=True)
    assert sink.writes[:2] == [[ROLE], CONTENT[:2]]
    assert backends["spare"].requests[0].prefill
    assert c.record.recovered and c.record.backend == "spare"
    assert sink.events[-1] == DONE and b'"error"' not in b"".join(sink.events)
    assert sink.text().startswith("Hello from")


@pytest.mark.parametrize("spare", ["fail"])
async def test_a_break_inside_a_batch_that_cannot_be_continued_still_delivers_what_came_before_it(
        spare: str) -> None:
    sink, c, _, _ = await relayed([[ROLE], CONTENT[:2]], broken=True, spare=spare)
    assert sink.writes[:2] == [[ROLE], CONTENT[:2]]
    assert sink.text() == "Hello from"
    assert b'"error"' in sink.events[-2] and sink.events[-1] == DONE
    assert c.record.error_type == "stream_interrupted"


def test_a_stream_without_ready_is_never_batched() -> None:
    from backends import stream_ready

    class Plain:
        def __aiter__(self) -> AsyncIterator[bytes]:
            raise NotImplementedError

        async def aclose(self) -> None:
            return None

    assert stream_ready(Plain())() is False  # type: ignore[arg-type]


def _native(kind: str, payload: dict[str, object]) -> bytes:
    import orjson

    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **payload}) + b"\n\n"


async def test_a_native_stream_writes_what_arrived_together_in_one_write() -> None:
    """Anthropic Messages events from a backend that speaks them: relayed unchanged, those of
    one read written together; the adapter's [DONE] is not relayed."""
    from router.engine import StreamAnswer
    from router.streaming import relay_native

    gateway, backends, _ = gateway_for({"gpu": Script("ok"), "spare": Script("ok")})
    start = _native("message_start", {"message": {"usage": {"input_tokens": 3, "output_tokens": 1}}})
    deltas = [_native("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": w}})
              for w in WORDS]
    stop = [_native("message_delta", {"delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 5}}),
            _native("message_stop", {})]
    stream = ReadsStream(backends["gpu"], [deltas[:1], deltas[1:] + stop, [DONE]])
    answer = StreamAnswer("gpu", stream, stream, start, gateway.engine.lease("gpu"),  # type: ignore[arg-type]
                          api="messages")
    sink = WritesSink()
    outcome = await relay_native(sink, gateway.engine, answer, {})
    assert sink.writes == [[start], deltas[:1], deltas[1:] + stop]
    assert outcome.delivered and not outcome.broken and outcome.usage is not None
    assert backends["gpu"].open_streams == 0
