"""Byte formats of the wire codec: JSON (default) and MessagePack (optional), and the
nesting-depth walk the codec uses to reject deep frames.

Both encoders turn nested dataclasses into objects, ``Enum`` members into their values
and sets into arrays; JSON refuses ``NaN``/``Infinity`` both ways.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from typing import Any

__all__ = ["Json", "Msgpack", "depth"]


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


class Json:
    """Encoder and decoder built once (``json.dumps``/``loads`` with options build new
    ones on every call)."""

    name = "json"

    def __init__(self) -> None:
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
        self._scan = decoder.scan_once  # type: ignore[attr-defined]  # set by __init__

    def dumps(self, obj: Any) -> bytes:
        return "".join(self._iterencode(obj, 0)).encode()

    def loads(self, data: bytes) -> Any:
        text = data.decode("utf-8")
        # The decoder's own scanner on the whole text: what JSONDecoder.decode does minus
        # its two whitespace regex passes. Anything else (surrounding whitespace, an
        # error) goes through decode itself, so the accepted set and errors are the same.
        try:
            obj, end = self._scan(text, 0)
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
    """How many containers deep ``obj`` nests (a flat object is 1); stops at ``limit``."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        node, level = stack.pop()
        if level > deepest:
            deepest = level
            if deepest >= limit:
                return deepest
        children = node.values() if isinstance(node, dict) else node
        stack.extend((v, level + 1) for v in children if isinstance(v, (dict, list)))
    return deepest
