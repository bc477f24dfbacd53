"""Tests for the codec offload: in order, off the loop, errors as results."""

from __future__ import annotations

import asyncio
import threading

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
