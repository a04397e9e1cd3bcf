"""JSON Schema from dataclass fields: each supported annotation, defaults, nesting, and
the built-ins left out of the catalog."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

import pytest

from jeeves_control_tower.contracts import catalog, class_schema, field_schema, patterns_of
from jeeves_control_tower.ipc.adapters.wire import MessageRegistry


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclass
class Node:
    name: str
    children: list[Node] = field(default_factory=list)


@pytest.mark.parametrize(
    ("hint", "schema"),
    [
        (str, {"type": "string"}),
        (int, {"type": "integer"}),
        (float, {"type": "number"}),
        (bool, {"type": "boolean"}),
        (None, {"type": "null"}),
        (Any, {}),
        (Optional[int], {"anyOf": [{"type": "integer"}, {"type": "null"}]}),  # noqa: UP045
        (int | str, {"anyOf": [{"type": "integer"}, {"type": "string"}]}),
        (list[int], {"type": "array", "items": {"type": "integer"}}),
        (tuple[str, ...], {"type": "array", "items": {"type": "string"}}),
        (frozenset[int], {"type": "array", "items": {"type": "integer"}}),
        (list, {"type": "array"}),
        (dict[str, float], {"type": "object", "additionalProperties": {"type": "number"}}),
        (dict, {"type": "object"}),
        (Literal["a", 1], {"enum": ["a", 1]}),
        (Colour, {"enum": ["red", "blue"]}),
        (bytes, {}),  # unsupported: any JSON value, as the decoder
    ],
)
def test_field_schema(hint: Any, schema: dict[str, Any]) -> None:
    assert field_schema(hint, {}) == schema


def test_class_schema_with_defaults_and_recursive_nesting() -> None:
    @dataclass
    class Tree:
        """A tree."""

        root: Node
        colour: Colour = Colour.RED
        depth: int = 3
        category: str = field(default="event", init=False)

    defs: dict[str, Any] = {}
    schema = class_schema(Tree, defs)
    assert schema == {
        "type": "object",
        "title": "Tree",
        "description": "A tree.",
        "properties": {
            "root": {"$ref": "#/$defs/Node"},
            "colour": {"enum": ["red", "blue"], "default": "red"},
            "depth": {"type": "integer", "default": 3},
        },
        "required": ["root"],
        "additionalProperties": False,
    }
    assert defs["Node"]["properties"]["children"] == {
        "type": "array",
        "items": {"$ref": "#/$defs/Node"},
    }
    assert patterns_of(Tree) == ("publish",)
    assert class_schema(int, {}) == {"type": "object"}


def test_catalog_leaves_out_builtins_unless_asked() -> None:
    @dataclass
    class Leaf:
        name: str

    reg = MessageRegistry()
    reg.register(Leaf)
    assert [c.name for c in catalog(reg)] == ["Leaf"]
    assert [c.name for c in catalog(reg, types=["DynamicEvent"])] == ["DynamicEvent"]
    assert catalog(reg)[0].patterns == ("publish", "send", "query")
    with pytest.raises(ValueError):
        catalog(reg, types=["Missing"])
