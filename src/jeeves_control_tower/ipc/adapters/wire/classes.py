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
from collections.abc import Callable, Mapping
from typing import Any

from ....types import Envelope
from ... import DynamicEvent, DynamicQuery
from .entries import ClassEntry, dataclass_entry
from .errors import WireError

__all__ = ["MessageRegistry", "WireError", "default_registry", "register_message"]


class MessageRegistry:
    """Names <-> message classes. Every process of a system registers the same classes.

    Dataclasses need nothing more; other classes pass ``to_dict``/``from_dict``. Not
    thread-safe for registration; lookups are plain dict reads.
    """

    def __init__(self, *, builtins: bool = True) -> None:
        self._by_name: dict[str, ClassEntry] = {}
        self._by_cls: dict[type, ClassEntry] = {}
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
            entry = ClassEntry(name, cls, to_dict, from_dict)
        elif dataclasses.is_dataclass(cls):
            entry = dataclass_entry(name, cls)
        else:
            raise TypeError(f"{cls.__qualname__} is not a dataclass: pass to_dict and from_dict")
        self._by_name[name] = entry
        self._by_cls.setdefault(cls, entry)
        return cls

    @property
    def entries_by_name(self) -> Mapping[str, ClassEntry]:
        """The live name -> entry table (read it, never write it: :meth:`register` does);
        the codec looks each incoming frame's class up in it."""
        return self._by_name

    @property
    def entries_by_class(self) -> Mapping[type, ClassEntry]:
        """The live class -> entry table (read-only, as :attr:`entries_by_name`)."""
        return self._by_cls

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


default_registry = MessageRegistry()
"""The registry used when a transport is given none."""


def register_message(cls: type, name: str | None = None) -> type:
    """Register a dataclass in :data:`default_registry`; usable as a class decorator."""
    return default_registry.register(cls, name)
