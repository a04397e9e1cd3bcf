"""EventBatcher: order, batch bounds, end-of-iteration hand-over, back-pressure, failures."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from jeeves_control_tower.ipc.adapters.wire.batching import EventBatcher
from tests.helpers import ListLogger


def wrap(frames: list[bytes]) -> bytes:
    return b"[" + b",".join(frames) + b"]"


class Client:
    """A broker client stand-in: records what it was handed; can fail or push back."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []
        self.fail: Exception | None = None
        self.fail_later = False  # fail after a suspension (once the caller had to wait)
        self.gate: asyncio.Event | None = None

    async def send(self, item: tuple[str, bytes]) -> None:
        if self.fail is not None:
            if self.fail_later:
                await asyncio.sleep(0)
            raise self.fail
        self.sent.append(item)  # in the client's buffer before any suspension
        if self.gate is not None:
            await self.gate.wait()


def batcher(client: Client, log: ListLogger, dropped: list[int], **bounds: Any) -> EventBatcher:
    return EventBatcher(
        client.send,
        wrap,
        max_bytes=bounds.get("max_bytes", 1000),
        max_frames=bounds.get("max_frames", 4),
        spawn=asyncio.get_running_loop().create_task,
        logger=log,
        on_dropped=dropped.append,
    )


async def test_frames_of_one_iteration_travel_together_and_a_lone_frame_unwrapped() -> None:
    client, log, dropped = Client(), ListLogger(), list[int]()
    b = batcher(client, log, dropped)
    for frame in (b"1", b"2", b"3"):
        assert b.add("a", frame) is None
    assert b.add("b", b"x") is None
    assert client.sent == [] and b.pending == 4  # nothing leaves before the iteration ends
    await asyncio.sleep(0)
    assert client.sent == [("a", b"[1,2,3]"), ("b", b"x")]
    assert b.pending == 0 and dropped == [] and log.records == []


async def test_a_full_batch_is_handed_over_at_once_in_order() -> None:
    client, log, dropped = Client(), ListLogger(), list[int]()
    b = batcher(client, log, dropped, max_frames=2)
    assert b.add("a", b"1") is None
    assert b.add("a", b"2") is None
    assert b.add("a", b"3") is None  # [1,2] handed over synchronously, 3 starts the next
    assert client.sent == [("a", b"[1,2]")]
    await asyncio.sleep(0)
    assert client.sent == [("a", b"[1,2]"), ("a", b"3")]


async def test_the_byte_bound_counts_separators_and_overhead() -> None:
    client, log, dropped = Client(), ListLogger(), list[int]()
    b = batcher(client, log, dropped, max_bytes=EventBatcher.overhead + 8, max_frames=100)
    assert b.add("a", b"12345678") is False  # never fits: the caller sends it alone
    assert b.pending == 0
    b.add("a", b"123")  # 4 bytes with its separator
    b.add("a", b"456")  # 8: still fits
    b.add("a", b"7")  # 10: over, the first two leave
    assert client.sent == [("a", b"[123,456]")]
    await asyncio.sleep(0)
    assert client.sent[-1] == ("a", b"7")


async def test_take_hands_over_one_destination_before_a_frame_sent_alone() -> None:
    client, log, dropped = Client(), ListLogger(), list[int]()
    b = batcher(client, log, dropped)
    b.add("a", b"1")
    b.add("b", b"2")
    assert b.take("a") is None
    assert b.take("a") is None  # nothing left there
    assert client.sent == [("a", b"1")]
    await b.flush()
    assert client.sent == [("a", b"1"), ("b", b"2")]
    await asyncio.sleep(0)  # the end-of-iteration callback finds nothing to do
    assert len(client.sent) == 2


async def test_back_pressure_reaches_the_publisher_that_filled_the_batch() -> None:
    client, log, dropped = Client(), ListLogger(), list[int]()
    client.gate = asyncio.Event()
    b = batcher(client, log, dropped, max_frames=1)
    b.add("a", b"1")
    pending = b.add("a", b"2")  # [1] handed over; the client holds on to it
    assert pending is not None and pending is not False
    assert client.sent == [("a", b"1")]
    waiter = asyncio.ensure_future(pending)
    await asyncio.sleep(0.01)
    assert not waiter.done()
    client.gate.set()
    await waiter
    # the end-of-iteration hand-over of [2] was pushed back too: finished in a task
    await asyncio.sleep(0.01)
    assert client.sent == [("a", b"1"), ("a", b"2")]


@pytest.mark.parametrize("where", ["end of iteration", "full batch", "pushed back"])
async def test_a_refused_batch_is_logged_and_counted_never_raised(where: str) -> None:
    client, log, dropped = Client(), ListLogger(), list[int]()
    b = batcher(client, log, dropped, max_frames=2)
    b.add("a", b"1")
    b.add("a", b"2")
    client.fail = ConnectionResetError("gone")
    client.fail_later = where == "pushed back"
    if where == "full batch":
        assert b.add("a", b"3") is None  # [1,2] refused: counted, not raised here
        assert dropped == [2]
        await asyncio.sleep(0)
        assert dropped == [2, 1]
    elif where == "pushed back":
        pending = b.add("a", b"3")  # [1,2] handed over; the client fails it after a wait
        assert pending is not None and pending is not False
        await pending  # never raises
        assert dropped == [2]
        await asyncio.sleep(0.01)  # [3] at the end of the iteration: in a task, then fails
        assert dropped == [2, 1]
    else:
        await asyncio.sleep(0)
        assert dropped == [2]
    assert log.messages("error")[0] == "event_batch_dropped"
    assert all(r[2]["error_type"] == "ConnectionResetError" for r in log.records)


def test_bounds_are_checked() -> None:
    with pytest.raises(ValueError, match="max_frames"):
        EventBatcher(
            Client().send,
            wrap,
            max_bytes=EventBatcher.overhead,
            spawn=lambda c: None,
            logger=ListLogger(),
            on_dropped=lambda n: None,
        )
