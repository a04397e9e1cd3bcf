"""Message classes registered by name: the only types a broker frame may turn into.

Decoding never imports or evaluates anything named by the wire: a frame's class name is
looked up in a :class:`MessageRegistry` the application filled, and the payload is checked
field by field against the class's type hints before the class is called. There is no
pickle, marshal or eval anywhere in the adapters.

Supported field annotations (anything else is accepted as any JSON value): ``Any``,
``str``, ``int``, ``float`` (ints accepted), ``bool``, ``None``, unions / ``Optional``,
``list[T]``, ``tuple[T, ...]``, ``set[T]``/``frozenset[T]`` (sent as lists), ``dict[str, T]``,
``Literal[...]``, ``Enum`` subclasses (sent as their value) and nested dataclasses.
"""

from __future__ import annotations

import dataclasses
import operator
import typing
from collections.abc import Callable
from typing import Any

from ...types import Envelope
from ..messages import DynamicEvent, DynamicQuery
from .fields import Mismatch, field_spec

__all__ = ["MessageRegistry", "WireError", "default_registry", "register_message"]


class WireError(ValueError):
    """A frame could not be encoded or decoded. ``reason`` is the metric label:
    ``malformed``, ``oversized``, ``too_deep``, ``bad_version``, ``unknown_type``,
    ``bad_field``, ``invalid_message``, ``type_mismatch``, ``unencodable``,
    ``bad_headers``, ``bad_traceparent``; the adapters add ``wrong_destination`` and
    ``unexpected_reply`` (see :mod:`.inbound`)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        # What could be read of the frame before it was rejected (to answer a query).
        self.frame_id: str | None = None
        self.reply_to: str | None = None
        self.corr: str | None = None


class _Entry:
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


class MessageRegistry:
    """Names <-> message classes. Every process of a system registers the same classes.

    Dataclasses need nothing more; other classes pass ``to_dict``/``from_dict``. Not
    thread-safe for registration; lookups are plain dict reads.
    """

    def __init__(self, *, builtins: bool = True) -> None:
        self._by_name: dict[str, _Entry] = {}
        self._by_cls: dict[type, _Entry] = {}
        if builtins:
            self.register(DynamicEvent)
            self.register(DynamicQuery)
            self.register(Envelope, to_dict=Envelope.to_dict, from_dict=Envelope.from_dict)

    def register(
        self,
        cls: type,
        name: str | None = None,
        *,
        to_dict: Callable[[Any], dict[str, Any]] | None = None,
        from_dict: Callable[[dict[str, Any]], Any] | None = None,
    ) -> type:
        """Register ``cls`` under ``name`` (default: the class name); returns ``cls``.

        Registering the same class under the same name again is a no-op; another class
        under a taken name is a ``ValueError``.
        """
        name = name or cls.__name__
        if not isinstance(name, str) or not name:
            raise ValueError(f"message class name must be a non-empty string, got {name!r}")
        current = self._by_name.get(name)
        if current is not None:
            if current.cls is cls:
                return cls
            raise ValueError(f"{name!r} is already registered for {current.cls.__qualname__}")
        if (to_dict is None) != (from_dict is None):
            raise ValueError("pass both to_dict and from_dict, or neither")
        if to_dict is not None and from_dict is not None:
            entry = _Entry(name, cls, to_dict, from_dict)
        elif dataclasses.is_dataclass(cls):
            entry = _dataclass_entry(name, cls)
        else:
            raise TypeError(f"{cls.__qualname__} is not a dataclass: pass to_dict and from_dict")
        self._by_name[name] = entry
        self._by_cls.setdefault(cls, entry)
        return cls

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def to_payload(self, obj: Any) -> tuple[str, dict[str, Any]]:
        """``(registered name, JSON-safe dict)`` of a registered message object."""
        entry = self._by_cls.get(type(obj))
        if entry is None:
            raise WireError(
                "unknown_type",
                f"{type(obj).__qualname__} is not registered in the MessageRegistry"
                " (register it in every process)",
            )
        return entry.name, entry.encode(obj)

    def is_registered_object(self, obj: Any) -> bool:
        return type(obj) in self._by_cls

    def from_payload(self, name: str, payload: Any) -> Any:
        """Build the message registered as ``name`` from ``payload``; ``WireError`` on any
        problem (never another exception)."""
        entry = self._by_name.get(name)
        if entry is None:
            raise WireError("unknown_type", f"no message class registered as {name[:100]!r}")
        if not isinstance(payload, dict):
            raise WireError("malformed", f"payload of {name!r} must be an object")
        try:
            return entry.decode(payload)
        except WireError:
            raise
        except Exception as exc:
            raise WireError(
                "invalid_message", f"{name!r} rejected its payload: {type(exc).__name__}: {exc}"
            ) from None


def _dataclass_entry(name: str, cls: type) -> _Entry:
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
    specs = {f.name: field_spec(hints.get(f.name, Any)) for f in fields}
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

    def decode_simple(payload: dict[str, Any]) -> Any:
        if payload.keys() == allowed:  # every field there, as encode sends them
            for key, spec in exact:
                if payload[key].__class__ is not spec:
                    break  # a wrong type: the full check says which
            else:
                return cls(**payload)
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
    return _Entry(name, cls, encode, decode_simple if simple else decode, name if fixed else None)


def _data_descriptor(cls: type, name: str) -> bool:
    """Whether reading ``name`` on an instance of ``cls`` goes through a class-level data
    descriptor (a property, say) rather than the instance's __dict__."""
    kind = type(getattr(cls, name, None))
    return hasattr(kind, "__set__") or hasattr(kind, "__delete__")


default_registry = MessageRegistry()
"""The registry used when a transport is given none."""


def register_message(cls: type, name: str | None = None) -> type:
    """Register a dataclass in :data:`default_registry`; usable as a class decorator."""
    return default_registry.register(cls, name)
