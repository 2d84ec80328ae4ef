"""cancel_and_wait: background tasks are cancelled and awaited, even one that loses a cancellation."""

from __future__ import annotations

import asyncio

import pytest

import dispatch.aio as aio


async def test_tasks_are_cancelled_and_their_errors_swallowed() -> None:
    async def forever() -> None:
        await asyncio.sleep(3600)

    async def fails() -> None:
        raise RuntimeError("boom")

    a, b = asyncio.create_task(forever()), asyncio.create_task(fails())
    await asyncio.sleep(0)
    await aio.cancel_and_wait([a, b])
    assert a.cancelled() and isinstance(b.exception(), RuntimeError)


async def test_a_task_that_swallows_one_cancellation_is_cancelled_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aio, "RECANCEL_S", 0.05)
    lost: list[int] = []

    async def retries_forever() -> None:
        # like a connect loop whose wait_for lost the cancellation (CPython gh-86296 in 3.11)
        while True:
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                if not lost:
                    lost.append(1)
                    continue  # the first cancellation is lost
                raise

    t = asyncio.create_task(retries_forever())
    await asyncio.sleep(0)
    await asyncio.wait_for(aio.cancel_and_wait([t]), 5)
    assert lost and t.cancelled()


async def test_a_task_that_never_ends_is_left_behind_instead_of_hanging_the_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aio, "RECANCEL_S", 0.01)
    monkeypatch.setattr(aio, "RECANCEL_TIMES", 3)
    stop = asyncio.Event()

    async def stubborn() -> None:
        while not stop.is_set():
            try:
                await asyncio.sleep(0.005)
            except asyncio.CancelledError:
                continue

    t = asyncio.create_task(stubborn())
    await asyncio.wait_for(aio.cancel_and_wait([t]), 5)
    assert not t.done()
    stop.set()
    await t
