"""The runnable example of docs/testing.md runs, and passes."""

from __future__ import annotations

import re
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from jeeves_control_tower.ipc import InMemoryCommBus

DOC = Path(__file__).resolve().parents[2] / "docs" / "testing.md"


@pytest.fixture
def example() -> Iterator[types.ModuleType]:
    """The doc's one ```python block, executed as a module."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 1, "docs/testing.md has one runnable block"
    module = types.ModuleType("docs_testing_example")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    try:
        exec(compile(blocks[0], str(DOC), "exec"), module.__dict__)
        yield module
    finally:
        del sys.modules[module.__name__]


async def test_the_testing_guide_example_passes(example: types.ModuleType) -> None:
    await example.test_placing_an_order()


async def test_the_example_fails_when_the_handler_is_wrong(example: types.ModuleType) -> None:
    # The example's assertions can fail: a handler that forgets to publish breaks it.
    def forgetful_wire(bus: InMemoryCommBus) -> None:
        bus.register_handler("PlaceOrder", lambda cmd: None)
        bus.register_handler("OrderTotal", lambda q: 0)

    example.__dict__["wire"] = forgetful_wire  # what test_placing_an_order wires
    with pytest.raises(AssertionError):
        await example.test_placing_an_order()
