"""``router.deadline.Deadline``: at the drain deadline only the work inside a ``cuttable()``
block (waiting on an upstream) is cut; settlement outside it always runs to its end; the
cut is told apart from a client's cancellation. No network."""

from __future__ import annotations

import asyncio

import pytest

from router.deadline import CUT, Deadline


async def test_a_task_waiting_inside_a_block_is_cut_and_absorbs_it():
    deadline, entered = Deadline(), asyncio.Event()
    seen: list[str] = []

    async def request() -> str:
        try:
            with deadline.cuttable():
                entered.set()
                await asyncio.Event().wait()  # the upstream never answers
        except asyncio.CancelledError as exc:
            assert exc.args == (CUT,)
            assert deadline.absorb()
            seen.append("cut")
        await asyncio.sleep(0)  # the task is no longer being cancelled: it can go on awaiting
        return "ended cleanly"

    task = asyncio.create_task(request())
    await entered.wait()
    assert deadline.pass_now() == 1
    assert await task == "ended cleanly" and seen == ["cut"]
    assert task.cancelling() == 0


async def test_settlement_outside_the_block_is_never_interrupted():
    deadline, settling, settled = Deadline(), asyncio.Event(), asyncio.Event()
    proceed = asyncio.Event()

    async def request() -> None:
        with deadline.cuttable():
            await asyncio.sleep(0)  # the upstream answered
        settling.set()
        await proceed.wait()  # the store round trip of the settlement
        settled.set()

    task = asyncio.create_task(request())
    await settling.wait()
    assert deadline.pass_now() == 0  # nothing waits on an upstream
    proceed.set()
    await task
    assert settled.is_set()


async def test_entering_a_block_after_the_deadline_is_cut_at_once():
    deadline = Deadline()
    deadline.pass_now()

    async def late() -> bool:
        try:
            with deadline.cuttable():
                raise AssertionError("the block ran after the deadline")
        except asyncio.CancelledError:
            return deadline.absorb()

    assert await asyncio.create_task(late()) is True


async def test_nested_blocks_keep_the_task_cuttable_until_the_outermost_ends():
    deadline, inner_done = Deadline(), asyncio.Event()

    async def request() -> str:
        try:
            with deadline.cuttable():
                with deadline.cuttable():
                    await asyncio.sleep(0)
                inner_done.set()
                await asyncio.Event().wait()
        except asyncio.CancelledError:
            return "cut" if deadline.absorb() else "other"
        return "not cut"

    task = asyncio.create_task(request())
    await inner_done.wait()
    deadline.pass_now()
    assert await task == "cut"


async def test_a_client_cancellation_is_not_absorbed():
    deadline, entered = Deadline(), asyncio.Event()

    async def request() -> None:
        try:
            with deadline.cuttable():
                entered.set()
                await asyncio.Event().wait()
        except asyncio.CancelledError:
            assert not deadline.absorb()
            raise

    task = asyncio.create_task(request())
    await entered.wait()
    task.cancel()  # the client went away
    with pytest.raises(asyncio.CancelledError):
        await task
