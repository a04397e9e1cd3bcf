"""Byte formats of the wire codec: JSON (default) and MessagePack (optional), and the
nesting-depth walk the codec uses to reject deep frames.

Both encoders turn nested dataclasses into objects (their ``init=True`` fields), ``Enum``
members into their values and sets into arrays; JSON refuses ``NaN``/``Infinity`` both ways.

JSON uses `orjson <https://github.com/ijl/orjson>`_ when it is installed (the ``redis``
and ``nats`` extras bring it) and the standard library's ``json`` otherwise. The stdlib
path is the reference: with orjson, the same inputs are accepted, the refused ones raise
the same exception types, and what is decoded is equal (the bytes may differ: orjson
writes non-ASCII characters unescaped). orjson only takes the inputs where it provably
agrees; for everything else the stdlib path runs and its result or exception stands:

* ``dumps``: orjson hands dataclasses, datetimes and subclasses of builtins to the
  ``default`` hook (the passthrough options), which converts dataclasses and sets the way
  the stdlib path does and gives everything else back. The stdlib path then runs when
  orjson raised (a type it does not know, a non-``str`` key, an int beyond 64 bits, a
  lone surrogate, deep nesting...), when its output contains ``null`` (orjson writes
  ``NaN``/``Infinity`` as ``null``, the stdlib path refuses them) and when it contains
  text shaped like a UUID (orjson serialises ``uuid.UUID`` itself, the stdlib path
  refuses it).
* ``loads``: the stdlib path runs when orjson raised (it refuses lone surrogate escapes
  and numbers beyond the float range, which the stdlib accepts), when the text holds a
  run of 20 digits or minus signs (orjson turns integers beyond 64 bits into floats) and
  when it has :data:`DEEP` or more brackets (orjson parses up to 1024 levels, deeper than
  the stdlib's recursion limit may allow: the stdlib decides, value or ``RecursionError``;
  walking the result to find its depth would cost more than the stdlib parse).

Two corners stay orjson's: an ``orjson.Fragment`` is written as its raw bytes (the stdlib
path refuses it), and an ``Enum`` member whose class mixes in ``int``/``str``/``float`` is
written as its ``value`` where the stdlib writes the mixed-in value (the two differ only
for enums that set ``_value_`` to something else); with an orjson that has
``OPT_PASSTHROUGH_ENUM`` such members go to the stdlib path too. Both paths also depend on
the recursion headroom left to the caller: they agree as long as more than :data:`DEEP`
levels are left.

``Json(fast=False)`` forces the stdlib path; ``Json.fast`` says which one is in use.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import re
from collections.abc import Callable
from typing import Any

__all__ = ["DEEP", "Json", "Msgpack", "depth"]

_orjson_dumps: Callable[..., bytes] | None
_orjson_loads: Callable[[bytes], Any] | None
try:
    import orjson
except ImportError:  # pragma: no cover - orjson is optional (the redis/nats extras)
    _orjson_dumps = _orjson_loads = None
    _ORJSON_OPTIONS = 0
else:
    _orjson_dumps, _orjson_loads = orjson.dumps, orjson.loads
    _ORJSON_OPTIONS = (
        orjson.OPT_PASSTHROUGH_DATACLASS
        | orjson.OPT_PASSTHROUGH_DATETIME
        | orjson.OPT_PASSTHROUGH_SUBCLASS
        | getattr(orjson, "OPT_PASSTHROUGH_ENUM", 0)  # not in every version
    )

DEEP = 255
"""Nesting (or, for ``loads``, bracket count) from which the stdlib path decides: orjson
encodes at most 254 levels, and the stdlib parses at least 254 when that much recursion
headroom is left."""

# Digits and "-" become "0", every other byte " ": 20 zeros in a row then mark a number
# that may not fit in 64 bits (20+ digits, or "-" and 19+), which orjson parses as a float.
NUMERALS = bytes(48 if 48 <= b <= 57 or b == 45 else 32 for b in range(256))
BIG_NUMBER = b"0" * 20
# What orjson writes for a uuid.UUID (lowercase, hyphenated): one more check than needed
# for the text around it (a false positive only costs the stdlib path).
_UUID_TEXT = re.compile(rb"-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\"")
# What the stdlib encoder writes itself, subclasses included (in its own way).
_STDLIB_NATIVE = (str, int, float, list, tuple, dict)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _default(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")


def _orjson_default(obj: Any) -> Any:
    # A subclass of a type the stdlib encodes natively (an IntEnum, a dict subclass, a
    # dataclass that is also a tuple...): the stdlib path encodes it its own way.
    if isinstance(obj, _STDLIB_NATIVE):
        raise TypeError(f"{type(obj).__name__}: for the stdlib encoder")
    return _default(obj)


class Json:
    """JSON encoder and decoder: orjson when installed and ``fast``, else the stdlib's
    (see the module docstring for why both give the same results).

    The stdlib encoder and decoder are built once (``json.dumps``/``loads`` with options
    build new ones on every call)."""

    name = "json"

    def __init__(self, *, fast: bool = True) -> None:
        c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
        if c_make_encoder is not None:  # CPython: the C encoder, made once
            self._iterencode = c_make_encoder(
                None, _default, json.encoder.encode_basestring_ascii, None, ":", ",",
                False, False, False,
            )  # fmt: skip
        else:  # pragma: no cover - other interpreters
            encoder = json.JSONEncoder(separators=(",", ":"), allow_nan=False, default=_default)
            self._iterencode = lambda obj, _level: (encoder.encode(obj),)
        decoder = json.JSONDecoder(parse_constant=_reject_constant)
        self._decode = decoder.decode
        #: The stdlib decoder's ``scan_once(text, 0) -> (value, end)`` (the codec inlines
        #: ``loads`` with it on the per-message path).
        self.scan_once: Any = decoder.scan_once  # type: ignore[attr-defined]  # set by __init__
        self.fast: bool = fast and _orjson_loads is not None
        # orjson's functions when fast, else None (the codec inlines loads).
        self._orjson_dumps = _orjson_dumps if self.fast else None
        #: orjson's ``loads`` when ``fast``, else ``None`` (the codec inlines it).
        self.orjson_loads = _orjson_loads if self.fast else None

    def dumps(self, obj: Any) -> bytes:
        odumps = self._orjson_dumps
        if odumps is None:
            return self.stdlib_dumps(obj)
        try:
            out = odumps(obj, default=_orjson_default, option=_ORJSON_OPTIONS)
        except Exception:  # orjson.JSONEncodeError, or what default raised: the stdlib's turn
            return self.stdlib_dumps(obj)
        if b"null" in out or _UUID_TEXT.search(out) is not None:
            return self.stdlib_dumps(obj)  # maybe a NaN/Infinity or a UUID
        return out

    def dumps_plain(self, obj: Any) -> bytes:
        """:meth:`dumps` of an object the caller checked to hold, besides dicts with
        ``str`` keys, only ``str``, ``int``, ``bool``, ``None`` and finite ``float``
        values (exact types): orjson then writes what the stdlib would (no NaN, no UUID
        to guard against), so its output is used without the scans; an orjson error still
        falls back to the stdlib."""
        odumps = self._orjson_dumps
        if odumps is None:
            return self.stdlib_dumps(obj)
        try:
            out: bytes = odumps(obj)
        except Exception:
            return self.stdlib_dumps(obj)
        return out

    def loads(self, data: bytes) -> Any:
        oloads = self.orjson_loads
        if (
            oloads is None
            or data.__class__ is not bytes
            or data.count(b"[") + data.count(b"{") >= DEEP  # maybe too deep for the stdlib
            or BIG_NUMBER in data.translate(NUMERALS)
        ):
            return self.stdlib_loads(data)
        try:
            obj = oloads(data)
        except Exception:  # orjson.JSONDecodeError: the stdlib may still accept it
            return self.stdlib_loads(data)
        return obj

    def stdlib_dumps(self, obj: Any) -> bytes:
        """``dumps`` with the stdlib encoder: the reference."""
        return "".join(self._iterencode(obj, 0)).encode()

    def stdlib_loads(self, data: bytes) -> Any:
        """``loads`` with the stdlib decoder: the reference."""
        text = data.decode("utf-8")
        # The decoder's own scanner on the whole text: what JSONDecoder.decode does minus
        # its two whitespace regex passes. Anything else (surrounding whitespace, an
        # error) goes through decode itself, so the accepted set and errors are the same.
        try:
            obj, end = self.scan_once(text, 0)
        except RecursionError:
            raise
        except Exception:
            return self._decode(text)
        if end != len(text):
            return self._decode(text)
        return obj


class Msgpack:
    name = "msgpack"

    def __init__(self) -> None:
        import msgpack  # type: ignore[import-untyped]  # optional dependency

        self._packb = msgpack.packb
        self._unpackb = msgpack.unpackb

    def dumps(self, obj: Any) -> bytes:
        out: bytes = self._packb(obj, default=_default, use_bin_type=True)
        return out

    def loads(self, data: bytes) -> Any:
        return self._unpackb(data, raw=False, strict_map_key=True)


def depth(obj: Any, limit: int) -> int:
    """How many containers deep ``obj`` nests (a flat object is 1); stops at ``limit``.
    Tuples count as the arrays both formats write them as. Walked a level at a time (no
    frame per node: the encoder runs it on every frame that could be too deep)."""
    level, nodes = 1, [obj]
    while level < limit:
        below: list[Any] = []
        add = below.append
        for node in nodes:
            for value in node.values() if isinstance(node, dict) else node:
                if isinstance(value, _CONTAINERS):
                    add(value)
        if not below:
            return level
        nodes = below
        level += 1
    return level


_CONTAINERS = (dict, list, tuple)


def deeper_than(obj: Any, data: bytes, limit: int, *, json_text: bool) -> bool:
    """Whether ``obj``, the value ``data`` encodes, nests deeper than ``limit``. JSON text
    with no more brackets than ``limit`` cannot (counting them is C-fast), so only a value
    that could is walked; other formats always are."""
    if json_text and data.count(b"{") + data.count(b"[") <= limit:
        return False
    return depth(obj, limit + 1) > limit
