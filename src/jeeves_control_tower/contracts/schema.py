"""JSON Schema (2020-12) of a message class, from its dataclass fields.

The schema says exactly what the wire decoder (:mod:`...ipc.adapters.wire.fields`) accepts:
the class's ``__init__`` fields as properties, those without a default ``required``, no
other property; per annotation:

==================================  ======================================================
annotation                          schema
==================================  ======================================================
``str`` / ``int`` / ``bool``        ``string`` / ``integer`` / ``boolean``
``float``                           ``number`` (integers accepted, as the decoder does)
``None``                            ``null``
``X | Y``, ``Optional[X]``          ``anyOf``
``list[T]``, ``tuple[T, ...]``,     ``array`` of ``T`` (the decoder checks every item
``set[T]``, ``frozenset[T]``        against the first argument)
``dict[str, T]``                    ``object`` with ``additionalProperties: T``
``Literal[...]``, ``Enum``          ``enum`` of the values
nested dataclass                    ``$ref`` to ``#/$defs/<name>`` (collected in ``defs``)
``Any``, anything else              ``{}`` (any JSON value)
==================================  ======================================================

A registered class that is not a dataclass (it came with its own ``to_dict``/``from_dict``)
is described as any JSON object unless a schema is given for it.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from typing import Any

__all__ = ["JsonSchema", "class_schema", "field_schema"]

JsonSchema = dict[str, Any]
_SIMPLE: dict[Any, JsonSchema] = {
    str: {"type": "string"},
    int: {"type": "integer"},
    bool: {"type": "boolean"},
    float: {"type": "number"},
    type(None): {"type": "null"},
    None: {"type": "null"},
}
_JSON_SCALARS = (str, int, float, bool, type(None))


def class_schema(
    cls: type, defs: dict[str, JsonSchema], ref_prefix: str = "#/$defs/"
) -> JsonSchema:
    """The object schema of dataclass ``cls`` (``{"type": "object"}`` for any other
    class); nested dataclasses land in ``defs`` under their class name, referenced with
    ``ref_prefix``."""
    if not dataclasses.is_dataclass(cls):
        return {"type": "object"}
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # unresolvable forward references: the decoder accepts anything too
        hints = {}
    properties: dict[str, JsonSchema] = {}
    required: list[str] = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        schema = field_schema(hints.get(f.name, Any), defs, ref_prefix)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            required.append(f.name)
        elif f.default is not dataclasses.MISSING:
            default = f.default.value if isinstance(f.default, enum.Enum) else f.default
            if isinstance(default, _JSON_SCALARS):
                schema = {**schema, "default": default}
        properties[f.name] = schema
    out: JsonSchema = {
        "type": "object",
        "title": cls.__name__,
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        out["required"] = required
    doc = (cls.__doc__ or "").strip()
    if doc and not doc.startswith(f"{cls.__name__}("):  # not the dataclass's generated doc
        out["description"] = doc
    return out


def field_schema(
    hint: Any, defs: dict[str, JsonSchema], ref_prefix: str = "#/$defs/"
) -> JsonSchema:
    """The schema of a value annotated ``hint`` (see the module docstring)."""
    if hint is Any or hint is object:
        return {}
    simple = _SIMPLE.get(hint) if _hashable(hint) else None
    if simple is not None:
        return dict(simple)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        values = [m.value for m in hint]
        return {"enum": values} if all(isinstance(v, _JSON_SCALARS) for v in values) else {}
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        name = hint.__name__
        if name not in defs:
            defs[name] = {}  # placeholder: a recursive dataclass refers to itself
            defs[name] = class_schema(hint, defs, ref_prefix)
        return {"$ref": f"{ref_prefix}{name}"}
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        return {"anyOf": [field_schema(a, defs, ref_prefix) for a in args]}
    if origin is typing.Literal:
        return {"enum": list(args)}
    if origin in (list, tuple, set, frozenset):
        item = args[0] if args and args[0] is not Ellipsis else Any
        return {"type": "array", "items": field_schema(item, defs, ref_prefix)}
    if origin is dict:
        value = args[1] if len(args) == 2 else Any
        return {"type": "object", "additionalProperties": field_schema(value, defs, ref_prefix)}
    if hint in (list, tuple, set, frozenset):
        return {"type": "array"}
    if hint is dict:
        return {"type": "object"}
    return {}


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True
