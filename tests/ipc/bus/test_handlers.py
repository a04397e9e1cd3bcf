"""Registered handler entries and the registration argument checks."""

from __future__ import annotations

import functools
import math
from typing import Any

import pytest

from jeeves_control_tower.ipc.bus.handlers import (
    HandlerEntry,
    check_handler,
    check_name,
    check_timeout,
)


async def on_event(_: Any) -> None:
    return None


class Service:
    async def handle(self, _: Any) -> None:
        return None

    def __call__(self, _: Any) -> None:
        return None


def test_entry_precomputes_kind_and_a_readable_name() -> None:
    entry = HandlerEntry(on_event)
    assert entry.is_async and entry.fn is on_event
    assert entry.name == f"{__name__}.on_event"
    method = HandlerEntry(Service().handle)
    assert method.is_async and method.name == f"{__name__}.Service.handle"
    instance = HandlerEntry(Service())
    assert not instance.is_async and instance.name == f"{__name__}.Service"
    partial = HandlerEntry(functools.partial(on_event))
    assert partial.is_async  # a partial of a coroutine function is still awaited
    assert partial.name


@pytest.mark.parametrize("value", ["", None, 3, b"x"])
def test_names_must_be_non_empty_strings(value: Any) -> None:
    with pytest.raises(ValueError, match="must be a non-empty string"):
        check_name(value, "event_type")


def test_handlers_must_be_callable() -> None:
    check_handler(on_event)
    with pytest.raises(TypeError, match="handler must be callable, got str"):
        check_handler("on_event")


@pytest.mark.parametrize("value", [0, -1, -0.5, math.nan, math.inf, True, "1", None])
def test_timeouts_must_be_positive_finite_numbers(value: Any) -> None:
    with pytest.raises(ValueError, match="must be a positive number of seconds"):
        check_timeout(value, "timeout")


@pytest.mark.parametrize("value", [0.001, 1, 30.0])
def test_valid_timeouts_pass(value: float) -> None:
    check_timeout(value, "timeout")
