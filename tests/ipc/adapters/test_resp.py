from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

from jeeves_control_tower.ipc.adapters.redis import resp
from jeeves_control_tower.ipc.adapters.redis.resp import (
    HiredisReader,
    ReplyTooLarge,
    Skipped,
    SkippingReader,
    fast_path_available,
    make_reader,
    make_writer,
)
from jeeves_control_tower.testing import eventually
from tests.helpers import traced_memory

WIRE = (
    b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nhe\r\nl\r\n"  # a bulk string holding CRLF
    b":42\r\n+OK\r\n$-1\r\n*-1\r\n*0\r\n"
    b"-NOSCRIPT No matching script\r\n-ERR wrong\r\n"
    b"*2\r\n*1\r\n:1\r\n$0\r\n\r\n"
)
EXPECTED = [
    [b"message", b"ch", b"he\r\nl"],
    42,
    b"OK",
    None,
    None,
    [],
    NoScriptError,
    ResponseError,
    [[1], b""],
]


class Trickle:
    """A stream that hands out up to ``step`` bytes per read, then EOF; counts what it gave."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data = data
        self.step = step
        self.given = 0

    async def read(self, n: int) -> bytes:
        size = min(n, self.step)
        chunk, self.data = self.data[:size], self.data[size:]
        self.given += len(chunk)
        return chunk


@pytest.mark.parametrize("step", [1, 2, 3, 7, 64, 1 << 16])
async def test_replies_survive_any_chunking(step: int) -> None:
    reader = HiredisReader(Trickle(WIRE, step), max_reply=1 << 20)
    for expected in EXPECTED:
        got = await reader.read()
        if isinstance(expected, type):
            assert type(got) is expected
        else:
            assert got == expected
    with pytest.raises(RedisConnectionError):
        await reader.read()


async def test_an_unknown_type_byte_is_a_protocol_error() -> None:
    with pytest.raises(RedisConnectionError, match=r"[Pp]rotocol"):
        await HiredisReader(Trickle(b"?what\r\n", 100), max_reply=1 << 20).read()


def message(payload: bytes) -> bytes:
    return b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$%d\r\n%s\r\n" % (len(payload), payload)


async def test_a_reply_over_the_bound_is_refused_before_it_is_read_whole() -> None:
    limit = 1 << 20
    stream = Trickle(message(b"x" * (8 << 20)) + message(b"next"), 1 << 16)
    reader = HiredisReader(stream, max_reply=limit)
    with pytest.raises(ReplyTooLarge):
        await reader.read()
    assert stream.given <= limit + 2 * (1 << 16)  # never the 8 MB


async def test_replies_up_to_the_bound_pass_one_after_another() -> None:
    payload = b"y" * ((1 << 20) - 100)
    stream = Trickle(message(payload) * 3 + message(b"z"), 1 << 16)
    reader = HiredisReader(stream, max_reply=1 << 20)
    for _ in range(3):
        assert await reader.read() == [b"message", b"ch", payload]
    assert await reader.read() == [b"message", b"ch", b"z"]


class Lazy:
    """A stream of ``parts`` (bytes, or ``(byte, count)`` for ``count`` repeats made as
    they are read), up to ``step`` bytes per read, then EOF."""

    def __init__(self, parts: list[Any], step: int) -> None:
        self.parts = list(parts)
        self.step = step

    async def read(self, n: int) -> bytes:
        size = min(n, self.step)
        out = b""
        while self.parts and len(out) < size:
            part = self.parts[0]
            if isinstance(part, bytes):
                take = part[: size - len(out)]
                self.parts[0] = part[len(take) :]
            else:
                byte, count = part
                take = byte * min(count, size - len(out))
                self.parts[0] = (byte, count - len(take))
            out += take
            if not self.parts[0] or self.parts[0][1:] == (0,):
                self.parts.pop(0)
        return out


def big_message(size: int, kind: bytes = b"message") -> list[Any]:
    """A Pub/Sub message with a ``size``-byte payload (pmessage: with its pattern)."""
    head = b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n"
    if kind == b"pmessage":
        head = b"*4\r\n$8\r\npmessage\r\n$3\r\nc*h\r\n$2\r\nch\r\n"
    return [head + b"$%d\r\n" % size, (b"x", size), b"\r\n"]


@pytest.mark.parametrize("step", [1, 7, 1000, 1 << 16])
@pytest.mark.parametrize("kind", [b"message", b"pmessage"])
async def test_a_reply_over_the_bound_is_skipped_and_the_stream_goes_on(
    step: int, kind: bytes
) -> None:
    limit = 1 << 12 if step < 1000 else 1 << 20
    sizes = [*range(12), 99, 100, 999, 1000, 3000] + [99_999, 100_000] * (limit > 1 << 16)
    before = [message(b"a" * n) for n in sizes] + [b":7\r\n$-1\r\n"]
    after = [message(b"next"), b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:3\r\n"]
    oversized = big_message(3 * limit, kind)
    stream = Lazy([*before, *oversized, *after, *big_message(limit // 2)], step)
    reader = SkippingReader(stream, max_reply=limit)
    for n in sizes:  # each size of a length's digits: where the reader adds them up
        assert await reader.read() == [b"message", b"ch", b"a" * n]
    assert await reader.read() == 7
    assert await reader.read() is None
    skipped = await reader.read()
    assert isinstance(skipped, Skipped)
    assert skipped.size == sum(len(p) if isinstance(p, bytes) else p[1] for p in oversized)
    assert await reader.read() == [b"message", b"ch", b"next"]
    assert await reader.read() == [b"subscribe", b"ch", 3]
    assert await reader.read() == [b"message", b"ch", b"x" * (limit // 2)]
    with pytest.raises(RedisConnectionError):
        await reader.read()


async def test_a_skipped_reply_is_never_held() -> None:
    limit = 1 << 20
    stream = Lazy([*big_message(64 << 20), message(b"next")], 1 << 16)
    reader = SkippingReader(stream, max_reply=limit)
    with traced_memory() as memory:
        skipped = await reader.read()
        peak = memory.read()[1]
    assert isinstance(skipped, Skipped) and skipped.size > 64 << 20
    assert peak < 1 << 20, f"{peak} bytes allocated at the peak for a 64 MB message"
    assert await reader.read() == [b"message", b"ch", b"next"]


async def test_a_reply_that_cannot_be_located_is_refused_as_before() -> None:
    limit = 1 << 12
    # After an error reply its size is not known until the stream reaches a boundary
    # again: here it does not (the next message follows in the same read).
    stream = Lazy([b"-ERR bad\r\n", *big_message(1 << 18), message(b"z")], 1 << 16)
    reader = SkippingReader(stream, max_reply=limit)
    assert isinstance(await reader.read(), ResponseError)
    with pytest.raises(ReplyTooLarge):
        await reader.read()
    # A message whose structure goes on past the first 64 KiB kept of it (a 200 KB
    # channel name, then the oversized payload)
    head = b"*3\r\n$7\r\nmessage\r\n$200000\r\n"
    parts = [head, (b"c", 200_000), b"\r\n$2000000\r\n", (b"x", 2_000_000), b"\r\n"]
    reader = SkippingReader(Lazy(parts, 1 << 16), max_reply=1 << 20)
    with pytest.raises(ReplyTooLarge):
        await reader.read()
    # ... and once the stream was read up to a boundary, the start is known again
    stream = Lazy([b"-ERR bad\r\n", message(b"z"), *big_message(1 << 18)], 1 << 16)
    reader = SkippingReader(stream, max_reply=limit)
    stream.step = len(b"-ERR bad\r\n")
    assert isinstance(await reader.read(), ResponseError)
    stream.step = 1 << 16
    assert await reader.read() == [b"message", b"ch", b"z"]
    assert isinstance(await reader.read(), Skipped)


async def test_a_bad_type_byte_while_skipping_is_a_protocol_error() -> None:
    head = b"*4\r\n$7\r\nmessage\r\n$2\r\nch\r\n$20000\r\n"
    stream = Lazy([head, (b"y", 20000), b"\r\n?what\r\n"], 1000)
    with pytest.raises(RedisConnectionError, match="Protocol"):
        await SkippingReader(stream, max_reply=1 << 12).read()


def test_the_fast_path_needs_hiredis_and_a_tested_redis_py(monkeypatch: Any) -> None:
    assert fast_path_available("8.2.0")
    assert not fast_path_available("9.0.0")  # an untested major: redis-py's own parsing
    assert not fast_path_available("7.4.1")
    assert not fast_path_available("dev")
    monkeypatch.setitem(sys.modules, "hiredis", None)  # as if hiredis were not installed
    assert not fast_path_available("8.2.0")


class Unexposed:
    """A connection that does not expose its streams: only redis-py's public calls."""

    def __init__(self, fail_on: bytes = b"") -> None:
        self.is_connected = True
        self.sent: list[bytes] = []
        self.fail_on = fail_on

    async def read_response(self) -> Any:
        raise ResponseError("ERR from redis-py")

    async def send_packed_command(self, packed: list[bytes], check_health: bool) -> None:
        await asyncio.sleep(0)  # a real write may yield: order must hold anyway
        if packed[0] == self.fail_on:
            raise RedisConnectionError("broken pipe")
        self.sent += packed


async def test_without_streams_replies_are_read_by_redis_py() -> None:
    assert isinstance(await make_reader(Unexposed(), 1 << 20).read(), ResponseError)


async def test_without_streams_writes_keep_their_order_and_report_failures() -> None:
    conn = Unexposed(fail_on=b"bad")
    errors: list[BaseException] = []
    write = make_writer(conn, errors.append)
    for i in range(5):
        write([b"%d" % i, b"."])
    await eventually(lambda: len(conn.sent) == 10)
    assert conn.sent == [b"0", b".", b"1", b".", b"2", b".", b"3", b".", b"4", b"."]
    write([b"bad"])
    write([b"lost"])  # queued behind the failure: the connection is being dropped
    await eventually(lambda: len(errors) == 1)
    assert isinstance(errors[0], RedisConnectionError) and b"lost" not in conn.sent
    conn.is_connected = False  # dropped: never written again (redis-py would reconnect)
    write([b"late"])
    await eventually(lambda: len(errors) == 2)
    assert b"late" not in conn.sent


def test_the_installed_redis_py_gets_the_fast_path() -> None:
    """The dev environment (redis extra) must exercise the fast path; CI would notice."""
    assert resp.FAST_PATH
