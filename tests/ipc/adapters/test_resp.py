from __future__ import annotations

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

from jeeves_control_tower.ipc.adapters.redis.resp import RespReader

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
    """A stream that hands out ``step`` bytes per read, then EOF."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data = data
        self.step = step

    async def read(self, n: int) -> bytes:
        chunk, self.data = self.data[: self.step], self.data[self.step :]
        return chunk


@pytest.mark.parametrize("step", [1, 2, 3, 7, 64, 1 << 16])
async def test_replies_survive_any_chunking(step: int) -> None:
    reader = RespReader(Trickle(WIRE, step))
    for expected in EXPECTED:
        got = await reader.read()
        if isinstance(expected, type):
            assert type(got) is expected
        else:
            assert got == expected
    with pytest.raises(RedisConnectionError):
        await reader.read()


async def test_an_unknown_type_byte_is_a_protocol_error() -> None:
    with pytest.raises(RedisConnectionError, match="protocol"):
        await RespReader(Trickle(b"?what\r\n", 100)).read()
