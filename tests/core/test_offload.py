"""Tests for the codec offload: in order, off the loop, errors as results."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
import threading
import time

import pytest

from custom_components.xiaozhi.core.offload import DELIVERY_SLICE, MAX_BATCH, Offload


async def test_results_come_back_in_order_across_batches() -> None:
    loop = asyncio.get_running_loop()
    offload = Offload.of(loop)
    assert Offload.of(loop) is offload
    threads: set[int] = set()
    results: list[int] = []

    def square(value: int) -> int:
        threads.add(threading.get_ident())
        return value * value

    count = MAX_BATCH * 3 + 5
    done = asyncio.Event()

    def collect(result: int, _: float) -> None:
        results.append(result)
        if len(results) == count:
            done.set()

    for value in range(count):
        offload.submit(square, value, collect)
    await asyncio.wait_for(done.wait(), 5)
    assert results == [value * value for value in range(count)]
    assert threading.get_ident() not in threads


async def test_an_error_is_its_jobs_result_only() -> None:
    offload = Offload.of(asyncio.get_running_loop())

    def fail(_: object) -> None:
        raise ValueError("bad packet")

    with pytest.raises(ValueError, match="bad packet"):
        await offload.run(fail, None)
    result, seconds = await offload.run(len, b"abc")
    assert result == 3
    assert seconds >= 0


async def test_results_are_handed_back_a_slice_at_a_time() -> None:
    """Between slices the loop runs what else is due (a pacing timer), in order still."""
    loop = asyncio.get_running_loop()
    offload = Offload.of(loop)
    events: list[object] = []
    count = DELIVERY_SLICE * 3
    done = asyncio.Event()

    def collect(result: int, _: float) -> None:
        if not events:
            loop.call_soon(events.append, "other")
        events.append(result)
        if len(events) == count + 1:
            done.set()

    gate = threading.Event()
    offload.submit(gate.wait, None, lambda *_: None)  # holds the executor: one batch follows
    for value in range(count):
        offload.submit(abs, value, collect)
    gate.set()
    await asyncio.wait_for(done.wait(), 5)
    assert events.index("other") == DELIVERY_SLICE
    assert [event for event in events if event != "other"] == list(range(count))


async def test_a_failing_callback_does_not_stop_the_others() -> None:
    """A device's handler that raises is reported by the loop; every other device goes on."""
    loop = asyncio.get_running_loop()
    offload = Offload.of(loop)
    reported: list[object] = []
    loop.set_exception_handler(lambda _, context: reported.append(context.get("exception")))
    results: list[int] = []
    done = asyncio.Event()

    def collect(result: int, _: float) -> None:
        if result == 1:
            raise RuntimeError("a handler bug")
        results.append(result)
        if len(results) == DELIVERY_SLICE * 2:
            done.set()

    try:
        for value in range(DELIVERY_SLICE * 2 + 1):
            offload.submit(abs, value, collect)
        await asyncio.wait_for(done.wait(), 5)
        result, _ = await offload.run(abs, -7)  # and later jobs still come back
    finally:
        loop.set_exception_handler(None)
    assert result == 7
    assert results == [value for value in range(DELIVERY_SLICE * 2 + 1) if value != 1]
    assert [str(error) for error in reported] == ["a handler bug"]


async def test_urgent_jobs_go_ahead_of_a_backlog() -> None:
    """A reply's next frames do not wait behind a batch of decoded microphone audio being
    handed back a slice at a time; each kind keeps its own order."""
    loop = asyncio.get_running_loop()
    offload = Offload.of(loop)
    events: list[str] = []
    count = DELIVERY_SLICE * 4
    done = asyncio.Event()

    def collect(kind: str) -> Callable[[int, float], None]:
        def collected(result: int, _: float) -> None:
            events.append(f"{kind}{result}")
            if len(events) == count + 3:
                done.set()

        return collected

    gate = threading.Event()
    offload.submit(gate.wait, None, lambda *_: None)  # holds the executor: the rest queue up
    for value in range(count):
        offload.submit(abs, value, collect("mic"))
    for value in range(3):
        offload.submit(abs, value, collect("reply"), urgent=True)
    gate.set()
    await asyncio.wait_for(done.wait(), 5)
    assert events[:3] == ["reply0", "reply1", "reply2"]  # first, though queued last
    assert events[3:] == [f"mic{value}" for value in range(count)]


async def test_urgent_jobs_queued_during_a_hand_back_are_not_held_behind_it() -> None:
    """Urgent results go back at the next pass of the loop, whatever backlog is still there."""
    loop = asyncio.get_running_loop()
    offload = Offload.of(loop)
    mic: list[int] = []
    reply_back_after = asyncio.get_running_loop().create_future()
    count = DELIVERY_SLICE * 8

    def collected_mic(result: int, _: float) -> None:
        mic.append(result)
        if len(mic) == 1:  # the hand-back of a long backlog has begun: a reply frame is due
            offload.submit(abs, -1, lambda *_: reply_back_after.set_result(len(mic)), urgent=True)

    gate = threading.Event()
    offload.submit(gate.wait, None, lambda *_: None)
    for value in range(count):
        offload.submit(abs, value, collected_mic)
    gate.set()
    handed_back_before = await asyncio.wait_for(reply_back_after, 5)
    assert handed_back_before < count // 2  # not after the whole backlog


async def test_a_busy_loop_does_not_let_the_backlog_grow_without_end() -> None:
    """With every pass of the loop slow, a batch comes back each pass: handing back a fixed
    slice per pass would fall further behind at each one (an overloaded host's devices then
    waited seconds for their audio); a share of the backlog keeps up."""
    loop = asyncio.get_running_loop()
    offload = Offload.of(loop)
    count = MAX_BATCH * 10
    passes = 0
    delivered: list[int] = []
    done = asyncio.Event()

    def busy_pass() -> None:  # the rest of a busy loop's work, on every pass
        nonlocal passes
        passes += 1
        time.sleep(0.002)
        if not done.is_set():
            loop.call_soon(busy_pass)

    def collect(result: int, _: float) -> None:
        delivered.append(result)
        if len(delivered) == count:
            done.set()

    loop.call_soon(busy_pass)
    for value in range(count):
        offload.submit(abs, value, collect)
    await asyncio.wait_for(done.wait(), 10)
    assert delivered == list(range(count))
    assert passes < count // DELIVERY_SLICE // 2  # a fixed slice needs count / slice passes
