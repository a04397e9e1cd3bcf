"""Json with orjson (the fast path) against Json on the stdlib (the reference): the same
inputs accepted, equal values, the same exception types."""

from __future__ import annotations

import datetime
import decimal
import enum
import math
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jeeves_control_tower.ipc.adapters import MessageRegistry, WireCodec, WireError
from jeeves_control_tower.ipc.adapters.wire.formats import DEEP, Json

pytest.importorskip("orjson")

FAST, STD = Json(), Json(fast=False)


class Color(enum.Enum):
    RED = "red"
    NAN = math.nan


class Level(enum.IntEnum):
    LOW = 1


@dataclass
class Inner:
    x: Any
    hidden: int = field(default=7, init=False)


@dataclass
class Outer:
    inner: Inner
    items: Any = None


def outcome(fn: Any, arg: Any) -> tuple[str, Any]:
    """("ok", repr of the decoded value) or ("err", exception type); repr tells -0.0
    from 0.0 and 1 from 1.0, and NaN from NaN compares equal."""
    try:
        value = fn(arg)
    except (TypeError, ValueError, OverflowError, RecursionError, UnicodeDecodeError) as exc:
        return "err", type(exc)
    return "ok", value


def same_dumps(obj: Any) -> None:
    fast, std = outcome(FAST.dumps, obj), outcome(STD.dumps, obj)
    if std[0] == "err":
        assert fast == std
    else:
        assert fast[0] == "ok", fast
        assert repr(STD.loads(fast[1])) == repr(STD.loads(std[1]))


def same_loads(data: bytes) -> None:
    fast, std = outcome(FAST.loads, data), outcome(STD.loads, data)
    assert fast[0] == std[0], (fast, std)
    if fast[0] == "ok":
        assert repr(fast[1]) == repr(std[1])
        if isinstance(std[1], dict):
            assert list(fast[1]) == list(std[1])  # key order too (duplicate keys)
    else:
        assert fast[1] is std[1]


def test_fast_path_is_in_use() -> None:
    assert FAST.fast and not STD.fast
    assert WireCodec().decoder.uses_orjson
    assert not WireCodec(max_depth=DEEP).decoder.uses_orjson
    assert not WireCodec(fast=False).decoder.uses_orjson


scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(-(2**65), 2**65)
    | st.floats()
    | st.text()
    | st.sampled_from([Color.RED, Color.NAN, Level.LOW, uuid.UUID(int=5), b"x", 1j])
)
keys = st.text(max_size=4) | st.integers(-3, 3) | st.floats() | st.booleans() | st.none()


def containers(inner: Any) -> Any:
    return (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(keys, inner, max_size=4)
        | st.frozensets(st.integers() | st.text(max_size=3), max_size=3)
        | st.builds(Inner, inner)
        | st.builds(Outer, st.builds(Inner, inner), inner)
    )


values = st.recursive(scalars, containers, max_leaves=25)


@settings(max_examples=500, deadline=None)
@given(values)
def test_dumps_parity(obj: Any) -> None:
    same_dumps(obj)


@pytest.mark.parametrize(
    "obj",
    [
        math.nan,
        {"a": [1.0, -math.inf]},
        Color.NAN,
        uuid.uuid4(),
        {"id": uuid.uuid4()},
        datetime.datetime(2024, 1, 1),
        datetime.date(2024, 1, 1),
        datetime.time(1, 2),
        decimal.Decimal("1.5"),
        b"bytes",
        bytearray(b"x"),
        object(),
        2**64,
        -(2**63) - 1,
        "\ud800",
        {1: "a", "1": "b"},
        {None: 1, True: 2, 1.5: 3},
        Inner(1),
        Outer(Inner([1, {2, 3}]), items=Level.LOW),
        [[[[[[1]]]]]],
    ],
)
def test_dumps_special_cases(obj: Any) -> None:
    same_dumps(obj)


@pytest.mark.parametrize(
    "obj", [math.nan, math.inf, Color.NAN, uuid.uuid4(), datetime.date.today()]
)
def test_what_the_stdlib_refuses_stays_refused(obj: Any) -> None:
    for v in (obj, [obj], {"k": obj}, Inner(obj)):
        with pytest.raises((TypeError, ValueError)):
            FAST.dumps(v)


def test_dataclass_init_false_fields_are_left_out_and_uuid_text_still_travels() -> None:
    assert FAST.loads(FAST.dumps(Inner(1))) == {"x": 1}
    text = str(uuid.uuid4())
    assert FAST.loads(FAST.dumps({"id": text})) == {"id": text}


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=60))
def test_loads_parity_on_random_bytes(data: bytes) -> None:
    same_loads(data)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet='0123456789-+.eE[]{}",: \t\n\rnulltrfasNIiy\\u', max_size=40))
def test_loads_parity_on_json_like_text(text: str) -> None:
    same_loads(text.encode())


@settings(max_examples=500, deadline=None)
@given(values)
def test_loads_parity_on_valid_json(obj: Any) -> None:
    try:
        data = STD.dumps(obj)
    except (TypeError, ValueError, OverflowError, RecursionError):
        return
    same_loads(data)
    same_loads(b" \n" + data + b"\t\r ")


@settings(max_examples=300, deadline=None)
@given(st.integers(), st.floats(allow_nan=False, allow_infinity=False))
def test_loads_parity_on_numbers(n: int, x: float) -> None:
    for text in (str(n), repr(x), f"{x:.25e}", f"[{n},{x!r}]"):
        same_loads(text.encode())


@pytest.mark.parametrize(
    "data",
    [
        b"18446744073709551615",
        b"18446744073709551616",
        b"-9223372036854775808",
        b"-9223372036854775809",
        b'{"n": 123456789012345678901234567890}',
        b"1e400",
        b"-1e400",
        b"1.7976931348623159e308",
        b"NaN",
        b"[Infinity]",
        b"-Infinity",
        b'"\\ud800"',
        b'"\\udc00\\ud800"',
        b'"\\ud83d\\ude00"',
        b'{"a": 1, "b": 2, "a": 3}',
        b" \t\n\r{} \n",
        b"\xef\xbb\xbf{}",
        b'"\xed\xa0\x80"',
        b"\x0c{}",
        b"[" * 254 + b"]" * 254,
        b"[" * 900 + b"]" * 900,
        b"[" * 1024 + b"]" * 1024,
        b"[" * 5000 + b"]" * 5000,
    ],
)
def test_loads_special_cases(data: bytes) -> None:
    same_loads(data)


def test_loads_refuses_nan_and_big_ints_stay_ints() -> None:
    with pytest.raises(ValueError):
        FAST.loads(b"[NaN]")
    assert FAST.loads(b"[18446744073709551616, -9223372036854775809]") == [2**64, -(2**63) - 1]
    assert FAST.loads(b'"\\ud800"') == "\ud800"


@dataclass
class Msg:
    n: Any
    note: str | None = None


def make_codec(**kw: Any) -> WireCodec:
    registry = MessageRegistry()
    registry.register(Msg)
    return WireCodec(registry, **kw)


FRAME = b'{"v":1,"id":"m","type":"Msg","pattern":"send","payload":%s}'


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{", "malformed"),
        (b'{"n": NaN}', "malformed"),
        (b'{"n": 1}, "v": 2', "bad_version"),
        (b'{"n": ' + b"[" * 40 + b"]" * 40 + b"}", "too_deep"),
        (b'{"n": ' + b"[" * 600 + b"]" * 600 + b"}", "too_deep"),
        (b'{"n": ' + b"[" * 5000 + b"]" * 5000 + b"}", "too_deep"),
        (b'{"n": "\xff"}', "malformed"),
    ],
)
@pytest.mark.parametrize("fast", [True, False])
def test_codec_reasons_are_the_same(payload: bytes, reason: str, fast: bool) -> None:
    c = make_codec(fast=fast)
    assert c.decoder.uses_orjson is fast
    with pytest.raises(WireError) as info:
        c.decode(FRAME % payload)
    assert info.value.reason == reason


@pytest.mark.parametrize("fast", [True, False])
def test_codec_values_are_the_same(fast: bool) -> None:
    c = make_codec(fast=fast)
    assert c.decoder.uses_orjson is fast
    for n in (2**70, -(2**64), 1.5, "\ud800", "é", None, [1, {"a": None}]):
        assert c.decode(c.encode(Msg(n), pattern="send", message_id="m")).message == Msg(n)
    assert c.decode(FRAME % b'{"n": "\\udc00", "n": 18446744073709551616}').message == Msg(2**64)
    for bad in (math.nan, math.inf, uuid.uuid4(), datetime.date.today()):
        with pytest.raises(WireError) as info:
            c.encode(Msg(bad), pattern="send", message_id="m")
        assert info.value.reason == "unencodable"


def test_message_ids_never_look_like_big_numbers_to_the_guard(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The big-integer guard sends a frame holding 20 digits (or "-") in a row to the
    # stdlib parser; a message id must never trip it, whatever its random prefix.
    import itertools

    from jeeves_control_tower.ipc.adapters.wire.formats import BIG_NUMBER, NUMERALS
    from jeeves_control_tower.ipc.bus import middleware

    worst = "012345678901" + middleware._id_head[-1]  # a prefix of digits only
    monkeypatch.setattr(middleware, "_id_head", worst)
    monkeypatch.setattr(middleware, "_id_counter", itertools.count(10**15))
    mid = middleware.new_message_id()
    assert BIG_NUMBER not in mid.encode().translate(NUMERALS)
    c = make_codec()
    data = c.encode(Msg(1), pattern="send", message_id=mid)
    assert BIG_NUMBER not in data.translate(NUMERALS)  # the fast parser takes it
