"""Which message types a contract describes, with their pattern and payload schema.

A registered type's *patterns* come from its class's ``category`` default: ``"event"`` is
published, ``"command"`` sent, ``"query"`` queried; a class without one (or with another
value) is listed under all three, since routing never depends on ``category``. The
built-in classes (``DynamicEvent``, ``DynamicQuery``: their routing type is chosen at run
time; ``Envelope``: dispatch's own) are left out unless named in ``types``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..ipc.adapters.wire import MessageRegistry, default_registry
from .schema import JsonSchema, class_schema

__all__ = ["BUILTIN_TYPES", "PATTERNS", "MessageContract", "catalog", "patterns_of"]

PATTERNS = ("publish", "send", "query")
BUILTIN_TYPES = frozenset({"DynamicEvent", "DynamicQuery", "Envelope"})
_BY_CATEGORY = {"event": ("publish",), "command": ("send",), "query": ("query",)}


@dataclass(frozen=True)
class MessageContract:
    """One registered message type: its wire name, class, patterns and payload schema."""

    name: str
    cls: type
    patterns: tuple[str, ...]
    schema: JsonSchema


def patterns_of(cls: type) -> tuple[str, ...]:
    """The patterns ``cls`` is used with (see the module docstring)."""
    category: Any = None
    if dataclasses.is_dataclass(cls):
        for f in dataclasses.fields(cls):
            if f.name == "category":
                category = f.default
    else:
        category = getattr(cls, "category", None)
    return _BY_CATEGORY.get(category, PATTERNS) if isinstance(category, str) else PATTERNS


def catalog(
    registry: MessageRegistry | None = None,
    *,
    types: Iterable[str] | None = None,
    defs: dict[str, JsonSchema] | None = None,
    ref_prefix: str = "#/$defs/",
) -> list[MessageContract]:
    """The contracts of ``registry``'s types (default: every registered type but the
    built-ins), sorted by name; nested classes' schemas are collected in ``defs``."""
    registry = registry if registry is not None else default_registry
    entries = registry.entries_by_name
    if types is None:
        names = [n for n in sorted(entries) if n not in BUILTIN_TYPES]
    else:
        names = sorted(set(types))
        unknown = [n for n in names if n not in entries]
        if unknown:
            raise ValueError(f"not registered: {unknown[:5]}")
    defs = defs if defs is not None else {}
    out = []
    for name in names:
        cls = entries[name].cls
        out.append(
            MessageContract(name, cls, patterns_of(cls), class_schema(cls, defs, ref_prefix))
        )
    return out
