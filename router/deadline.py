"""``Deadline``: the drain deadline of one gateway process, and the work it may cut short.

On SIGTERM the gateway stops accepting connections and lets the requests in flight finish
(``router.inflight``). When the drain deadline passes, only what is *waiting on an upstream*
is cut: the tasks inside a ``cuttable()`` block — an attempt waiting for its answer, a stream
being relayed — are cancelled with the message ``CUT``. Work outside such a block
(admission, settlement, the cache fill) is never interrupted, so every budget reservation is
settled or released before the store closes.

Whoever catches the ``CancelledError`` asks ``absorb()``: ``True`` means the deadline cut this
task (the cancellation is taken back) and the request must end cleanly now — a stream with
an SSE error event and ``[DONE]`` (``router.streaming``), a request with no answer yet with a
503 ``shutting_down`` (``router.inflight``). ``False``: somebody else cancelled it (the client
went away): re-raise.

No I/O and no aiohttp: the engine and the relay use it.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Any

__all__ = ["CUT", "Deadline"]

#: The cancellation message of a task cut at the drain deadline.
CUT = "switchyard: the drain deadline passed"


class Deadline:
    """Set once per process, when the drain deadline passes (``pass_now``)."""

    __slots__ = ("passed", "_waiting", "_cut")

    def __init__(self) -> None:
        self.passed = False
        self._waiting: set[asyncio.Task[Any]] = set()  # tasks inside a cuttable block now
        #: tasks cut by this deadline, not yet absorbed: True when cut by ``Task.cancel``
        self._cut: dict[asyncio.Task[Any], bool] = {}

    def cuttable(self) -> _Block:
        """``with deadline.cuttable():`` — the block waits on an upstream: cut it when the
        deadline passes (at once, when it already has). Blocks nest: the outermost one owns
        the task. (A class, not ``@contextmanager``: it is on every request's path.)"""
        return _Block(self)

    def pass_now(self) -> int:
        """The deadline has passed: cut every task inside a cuttable block (and any that
        enters one later). Returns how many were cut now."""
        self.passed = True
        waiting = list(self._waiting)
        for task in waiting:
            self._cut_task(task)
        return len(waiting)

    def _cut_task(self, task: asyncio.Task[Any]) -> None:
        """Cancel a task that waits inside a cuttable block: it is suspended there, so the
        ``CancelledError`` is raised there, never in the code after the block."""
        if task not in self._cut:
            self._cut[task] = True
            task.cancel(CUT)

    def cutting(self) -> bool:
        """Whether the current task is being cut by this deadline (asks, takes nothing back)."""
        return asyncio.current_task() in self._cut

    def absorb(self) -> bool:
        """In an ``except CancelledError``: was the current task cut by this deadline? If so,
        the cancellation is taken back (``Task.uncancel``) and the caller ends the request."""
        task = asyncio.current_task()
        if task is None or task not in self._cut:
            return False
        if self._cut.pop(task):
            task.uncancel()
        return True


class _Block:
    __slots__ = ("_deadline", "_task")

    def __init__(self, deadline: Deadline) -> None:
        self._deadline = deadline
        self._task: asyncio.Task[Any] | None = None

    def __enter__(self) -> None:
        deadline, task = self._deadline, asyncio.current_task()
        if task is None or task in deadline._waiting:
            return
        if deadline.passed:
            deadline._cut[task] = False
            raise asyncio.CancelledError(CUT)
        deadline._waiting.add(task)
        self._task = task

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._task is not None:
            self._deadline._waiting.discard(self._task)
