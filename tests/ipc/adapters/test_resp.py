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
    fast_path_available,
    make_reader,
    make_writer,
)
from tests.conformance.conftest import eventually

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
