"""Checking a decoded payload's fields against the message class's type hints.

:func:`field_spec` turns an annotation into what the decoder applies to a value: ``None``
(anything goes), an exact ``type`` (``str``, ``int``, ``bool``: checked with ``type(v) is
t``, so ``True`` is not an ``int``), or a converter that returns the value to pass to the
class (``float`` from an int, an ``Enum`` member from its value, a tuple from a list, a
nested dataclass from an object) or raises :class:`Mismatch`. Paths to a bad value are
built only when one is found.

A nested dataclass is decoded by what ``nested(cls)`` returns (the decoder
:mod:`.entries` builds for it, raising :class:`~.errors.WireError`): this module knows how
to check one value, not how a class is registered, so the dependency runs one way only.

Supported: ``Any``, ``str``, ``int``, ``float``, ``bool``, ``None``, unions/``Optional``,
``list[T]``, ``tuple[T, ...]``, ``set[T]``/``frozenset[T]``, ``dict[str, T]``,
``Literal[...]``, ``Enum`` subclasses and nested dataclasses. Any other annotation accepts
any JSON value.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Callable
from typing import Any

from .errors import WireError

__all__ = ["Mismatch", "field_spec"]

Spec = type | Callable[[Any], Any] | None
#: Builds the payload decoder of a nested dataclass (see the module docstring).
Nested = Callable[[type], Callable[[dict[str, Any]], Any]]


class Mismatch(Exception):
    """A value does not fit its annotation; ``path`` grows as it propagates outwards."""

    def __init__(self, expected: str, value: Any, path: str = "") -> None:
        super().__init__(expected)
        self.expected = expected
        self.got = type(value).__name__
        self.path = path


def field_spec(hint: Any, nested: Nested) -> Spec:
    """What the decoder applies to a value annotated ``hint`` (see the module docstring)."""
    if hint is Any or hint is object:
        return None
    if hint is type(None) or hint is None:
        return type(None)
    if hint in (str, int, bool):
        return typing.cast(type, hint)
    if hint is float:
        return _float
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return _enum(hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _dataclass(hint, nested)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        return _union([field_spec(a, nested) for a in args])
    if origin is typing.Literal:
        return _literal(args)
    if origin in (list, tuple, set, frozenset):
        item = field_spec(args[0], nested) if args and args[0] is not Ellipsis else None
        return _sequence(origin, item)
    if origin is dict:
        return _mapping(field_spec(args[1], nested) if len(args) == 2 else None)
    if hint in (list, tuple, set, frozenset):
        return _sequence(hint, None)
    if hint is dict:
        return _mapping(None)
    return None


def apply(spec: Spec, value: Any) -> Any:
    if spec is None:
        return value
    if spec.__class__ is type:
        if type(value) is not spec:
            raise Mismatch(spec.__name__, value)
        return value
    return spec(value)


def _float(value: Any) -> float:
    if type(value) is float or type(value) is int:
        return float(value)
    raise Mismatch("number", value)


def _enum(kind: type[enum.Enum]) -> Callable[[Any], Any]:
    def conv(value: Any) -> Any:
        try:
            return kind(value)
        except (ValueError, TypeError):
            raise Mismatch(f"a {kind.__name__} value", value) from None

    return conv


def _dataclass(kind: type, nested: Nested) -> Callable[[Any], Any]:
    decode = nested(kind)

    def conv(value: Any) -> Any:
        if not isinstance(value, dict):
            raise Mismatch("object", value)
        try:
            return decode(value)
        except WireError as exc:
            raise Mismatch(f"a valid {kind.__name__} ({exc.detail})", value) from None

    return conv


def _union(options: list[Spec]) -> Callable[[Any], Any]:
    def conv(value: Any) -> Any:
        for option in options:
            try:
                return apply(option, value)
            except Mismatch:
                continue
        raise Mismatch("one of the union's types", value)

    return conv


def _literal(allowed: tuple[Any, ...]) -> Callable[[Any], Any]:
    def conv(value: Any) -> Any:
        if isinstance(value, (dict, list)) or value not in allowed:
            raise Mismatch(f"one of {allowed!r}", value)
        return value

    return conv


def _sequence(build: Callable[[Any], Any], item: Spec) -> Callable[[Any], Any]:
    def conv(value: Any) -> Any:
        if not isinstance(value, list):
            raise Mismatch("array", value)
        if item is None:
            return value if build is list else build(value)
        out = []
        for i, x in enumerate(value):
            try:
                out.append(apply(item, x))
            except Mismatch as m:
                m.path = f"[{i}]{m.path}"
                raise
        return out if build is list else build(out)

    return conv


def _mapping(item: Spec) -> Callable[[Any], Any]:
    def conv(value: Any) -> Any:
        if not isinstance(value, dict):
            raise Mismatch("object", value)
        if item is None:
            return value
        out = {}
        for k, x in value.items():
            try:
                out[k] = apply(item, x)
            except Mismatch as m:
                m.path = f".{k}{m.path}"
                raise
        return out

    return conv
