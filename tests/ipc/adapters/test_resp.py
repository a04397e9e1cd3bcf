from __future__ import annotations

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


class Unconnected:
    """A connection that does not expose its streams."""

    async def read_response(self) -> Any:
        raise ResponseError("ERR from redis-py")


async def test_a_connection_without_streams_is_read_by_redis_py() -> None:
    conn = Unconnected()
    assert isinstance(await make_reader(conn, 1 << 20).read(), ResponseError)
    assert make_writer(conn, lambda exc: None) is not None


def test_the_installed_redis_py_gets_the_fast_path() -> None:
    """The dev environment (redis extra) must exercise the fast path; CI would notice."""
    assert resp.FAST_PATH
