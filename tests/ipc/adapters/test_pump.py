"""OrderedPump: frames handled in order, one at a time, and a failing frame stops nothing."""

from __future__ import annotations

import asyncio

from jeeves_control_tower.ipc.adapters.pump import OrderedPump


def _pump(handled: list[bytes], errors: list[BaseException], fail_on: bytes) -> OrderedPump:
    async def handler(frame: bytes) -> None:
        await asyncio.sleep(0)
        if frame == fail_on:
            raise asyncio.CancelledError  # what awaiting a cancelled future raises
        handled.append(frame)

    return OrderedPump(handler, asyncio.get_running_loop().create_task, errors.append)


async def test_frames_keep_their_order_and_a_cancelled_error_fails_only_its_frame() -> None:
    handled: list[bytes] = []
    errors: list[BaseException] = []
    pump = _pump(handled, errors, fail_on=b"1")
    for i in range(5):
        pump.push(str(i).encode())
    for _ in range(50):
        await asyncio.sleep(0)
        if len(handled) == 4:
            break
    assert handled == [b"0", b"2", b"3", b"4"]
    assert [type(e) for e in errors] == [asyncio.CancelledError]
    assert pump.offer(b"5")  # the worker is still there
    for _ in range(20):
        await asyncio.sleep(0)
    assert handled[-1] == b"5"
    await pump.close()


async def test_close_still_stops_a_worker_inside_a_frame() -> None:
    handled: list[bytes] = []
    errors: list[BaseException] = []
    gate = asyncio.Event()

    async def handler(frame: bytes) -> None:
        await gate.wait()
        handled.append(frame)

    pump = OrderedPump(handler, asyncio.get_running_loop().create_task, errors.append)
    pump.push(b"0")
    pump.push(b"1")
    await asyncio.sleep(0)
    await asyncio.wait_for(pump.close(), 5)  # the worker's own cancellation is not a failure
    gate.set()
    await asyncio.sleep(0)
    assert handled == [] and errors == []
    assert pump.pending == 0


async def test_offer_refuses_frames_beyond_the_byte_bound() -> None:
    gate = asyncio.Event()
    handled: list[bytes] = []

    async def handler(frame: bytes) -> None:
        await gate.wait()
        handled.append(frame)

    errors: list[BaseException] = []
    pump = OrderedPump(
        handler, asyncio.get_running_loop().create_task, errors.append, 100, max_pending_bytes=10
    )
    assert pump.offer(b"12345")
    assert pump.offer(b"123456")  # 11 bytes queued: the next one is refused
    assert not pump.offer(b"x")
    await asyncio.sleep(0)  # the worker takes the first frame (and waits in its handler)
    assert pump.offer(b"y")  # 6 bytes queued now
    gate.set()
    for _ in range(20):
        await asyncio.sleep(0)
    assert handled == [b"12345", b"123456", b"y"]
    assert pump.offer(b"0123456789")  # all taken: the bound is free again
    await pump.close()
    assert errors == []
