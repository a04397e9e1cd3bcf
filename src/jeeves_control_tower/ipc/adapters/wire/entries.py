"""How one message class goes to and from a payload: :class:`ClassEntry`, and the entry
:func:`dataclass_entry` builds for a dataclass (fields checked against its type hints).
"""

from __future__ import annotations

import dataclasses
import operator
import typing
import weakref
from collections.abc import Callable
from typing import Any

from .errors import WireError
from .fields import Mismatch, field_spec

__all__ = ["ClassEntry", "dataclass_entry"]


class ClassEntry:
    """``fixed_type``: the routing type (``get_message_type``) of every instance the
    entry decodes, when it cannot vary (a dataclass registered under its own name, with
    no ``message_type`` attribute or field and no ``__post_init__``/``__getattr__`` that
    could add one); ``None`` when the decoder must check each message."""

    __slots__ = ("cls", "decode", "encode", "fixed_type", "name")

    def __init__(
        self,
        name: str,
        cls: type,
        encode: Callable[[Any], dict[str, Any]],
        decode: Callable[[dict[str, Any]], Any],
        fixed_type: str | None = None,
    ) -> None:
        self.name = name
        self.cls = cls
        self.encode = encode
        self.decode = decode
        self.fixed_type = fixed_type


def dataclass_entry(name: str, cls: type) -> ClassEntry:
    """The entry of dataclass ``cls`` registered as ``name``: its ``__init__`` fields,
    each checked against its type hint (:mod:`.fields`) when decoded."""
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # unresolvable forward references: fall back to "any JSON value"
        hints = {}
    fields = [f for f in dataclasses.fields(cls) if f.init]
    names = tuple(f.name for f in fields)
    required = frozenset(
        f.name
        for f in fields
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    )
    specs = {f.name: field_spec(hints.get(f.name, Any), _nested) for f in fields}
    allowed = frozenset(specs)

    if len(names) >= 2:
        values = operator.attrgetter(*names)  # a tuple of the fields, read in C

        def by_attribute(obj: Any) -> dict[str, Any]:
            return dict(zip(names, values(obj)))  # noqa: B905 - same length by construction

    else:

        def by_attribute(obj: Any) -> dict[str, Any]:
            return {n: getattr(obj, n) for n in names}

    encode = by_attribute
    if "__slots__" not in cls.__dict__ and not any(_data_descriptor(cls, n) for n in names):
        # Fields live in the instance's __dict__: copying it (in C) and dropping the
        # fields that are not __init__ arguments is the fastest way to the payload. An
        # instance whose __dict__ holds anything else, or lacks a field, takes the
        # attribute path (same result, or the same AttributeError).
        wanted = frozenset(names)
        others = tuple(f.name for f in dataclasses.fields(cls) if not f.init)

        def encode(obj: Any) -> dict[str, Any]:
            payload: dict[str, Any] = obj.__dict__.copy()
            for name in others:
                payload.pop(name, None)
            if payload.keys() == wanted:
                return payload
            return by_attribute(obj)

    # Fields whose check is an exact type (str, int, bool, None) or nothing: the common
    # case is checked in one pass and the payload itself becomes the keyword arguments.
    simple = all(s is None or s.__class__ is type for s in specs.values())
    exact = tuple((n, s) for n, s in specs.items() if s is not None)
    count = len(allowed)
    # every field has an exact type: the right number of keys, each a field, is all of them
    all_exact = len(exact) == count

    def decode_simple(payload: dict[str, Any]) -> Any:
        if len(payload) == count:  # as many keys as fields, as encode sends them
            try:
                for key, spec in exact:
                    if payload[key].__class__ is not spec:
                        break  # a wrong type: the full check says which
                else:
                    if all_exact or payload.keys() == allowed:
                        return cls(**payload)
            except KeyError:
                pass  # a field is missing (another key in its place): the full check
        return decode(payload)  # the full check: the instance, or the WireError

    def decode(payload: dict[str, Any]) -> Any:
        keys = payload.keys()
        if not keys <= allowed:
            raise WireError("bad_field", f"{name}: unknown field(s) {sorted(keys - allowed)[:5]}")
        if not required <= keys:
            raise WireError("bad_field", f"{name}: missing field(s) {sorted(required - keys)}")
        kwargs = {}
        for key, value in payload.items():
            spec = specs[key]
            try:
                if spec is None:
                    pass
                elif spec.__class__ is type:
                    if type(value) is not spec:
                        raise Mismatch(spec.__name__, value)
                else:
                    value = spec(value)
            except Mismatch as m:
                raise WireError(
                    "bad_field", f"{name}.{key}{m.path}: expected {m.expected}, got {m.got}"
                ) from None
            kwargs[key] = value
        return cls(**kwargs)

    fixed = (
        name == cls.__name__
        and "message_type" not in {f.name for f in dataclasses.fields(cls)}
        and not any(hasattr(cls, a) for a in ("message_type", "__post_init__", "__getattr__"))
    )
    chosen = decode_simple if simple else decode
    return ClassEntry(name, cls, encode, chosen, name if fixed else None)


def _data_descriptor(cls: type, name: str) -> bool:
    """Whether reading ``name`` on an instance of ``cls`` goes through a class-level data
    descriptor (a property, say) rather than the instance's __dict__."""
    kind = type(getattr(cls, name, None))
    return hasattr(kind, "__set__") or hasattr(kind, "__delete__")


#: The decoders of nested dataclasses, built once per class (see :func:`_nested`).
_NESTED: weakref.WeakKeyDictionary[type, Callable[[dict[str, Any]], Any]] = (
    weakref.WeakKeyDictionary()
)


def _nested(kind: type) -> Callable[[dict[str, Any]], Any]:
    """The payload decoder of a dataclass nested in a message's field, built on its first
    use and kept, one per class: a class that refers to itself (a tree node), or classes
    that refer to each other, would otherwise build their decoders without end. The depth
    of what it decodes is bounded by the format's own depth limit."""

    decode: Callable[[dict[str, Any]], Any] | None = None

    def lazy(payload: dict[str, Any]) -> Any:
        nonlocal decode
        if decode is None:
            decode = _NESTED.get(kind)
            if decode is None:
                decode = _NESTED[kind] = dataclass_entry(kind.__name__, kind).decode
        return decode(payload)

    return lazy
