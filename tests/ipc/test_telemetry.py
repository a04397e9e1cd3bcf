"""The telemetry seam (jeeves_control_tower.ipc.telemetry): which instrumentation a new bus
or coordinator gets, and what ``instrument=`` means."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest

from jeeves_control_tower.ipc import CommBusCoordinator, InMemoryCommBus
from jeeves_control_tower.ipc.telemetry import (
    MISSING,
    Instrumentation,
    default_instrumentation,
    get_instrumentation,
    reset_instrumentation,
    set_instrumentation,
)


class Recording:
    """An instrumentation that records what it was asked and hands back a marker."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, dict[str, Any]]] = []

    def instrument_bus(self, bus: Any, options: dict[str, Any]) -> Any:
        self.calls.append(("bus", bus, dict(options)))
        return ("bus handle", options)

    def instrument_coordinator(self, coordinator: Any, options: dict[str, Any]) -> Any:
        self.calls.append(("coordinator", coordinator, dict(options)))
        return ("coordinator handle", options)


@pytest.fixture(autouse=True)
def _default_again() -> Iterator[None]:
    yield
    reset_instrumentation()


def test_a_set_instrumentation_instruments_what_is_built_with_defaults() -> None:
    recording = Recording()
    set_instrumentation(recording)
    assert get_instrumentation() is recording
    bus = InMemoryCommBus(tracer_provider="tp")
    coordinator = CommBusCoordinator(None, bus)
    assert bus.telemetry == ("bus handle", {"tracer_provider": "tp"})
    assert coordinator.telemetry == ("coordinator handle", {})
    assert recording.calls == [
        ("bus", bus, {"tracer_provider": "tp"}),
        ("coordinator", coordinator, {}),
    ]


def test_instrument_false_means_none_and_takes_no_telemetry_keywords() -> None:
    recording = Recording()
    set_instrumentation(recording)
    bus = InMemoryCommBus(instrument=False)
    assert bus.telemetry is None
    assert CommBusCoordinator(None, bus, instrument=False).telemetry is None
    assert recording.calls == []
    with pytest.raises(TypeError, match="registry"):
        InMemoryCommBus(instrument=False, registry=object())
    with pytest.raises(TypeError, match="registry"):
        CommBusCoordinator(None, bus, instrument=False, registry=object())


def test_none_set_means_none_unless_asked_for_then_the_default() -> None:
    set_instrumentation(None)
    assert get_instrumentation() is None
    assert InMemoryCommBus().telemetry is None
    assert CommBusCoordinator(None, InMemoryCommBus(instrument=False)).telemetry is None
    default = default_instrumentation()
    assert default is not None  # the observability extra is installed here
    asked = InMemoryCommBus(instrument=True)
    assert asked.telemetry is not None and asked.middlewares  # the built-in telemetry
    asked.telemetry.close()


def test_reset_brings_the_default_back() -> None:
    set_instrumentation(Recording())
    reset_instrumentation()
    assert get_instrumentation() is default_instrumentation()
    bus = InMemoryCommBus()
    assert type(bus.telemetry).__name__ == "BusTelemetry"
    bus.telemetry.close()


def test_only_an_instrumentation_can_be_set() -> None:
    with pytest.raises(TypeError, match="Instrumentation"):
        set_instrumentation(object())  # type: ignore[arg-type]
    assert isinstance(Recording(), Instrumentation)


def test_the_default_is_the_entry_point() -> None:
    from jeeves_control_tower.instrumentation.builtin import DEFAULT

    assert default_instrumentation() is DEFAULT


WITHOUT_THE_EXTRA = """
import sys
sys.modules["prometheus_client"] = None  # the observability extra is not installed

from jeeves_control_tower.ipc import CommBusCoordinator, InMemoryCommBus
from jeeves_control_tower.ipc.telemetry import MISSING

bus = InMemoryCommBus()
assert bus.telemetry is None, bus.telemetry
assert CommBusCoordinator(None, bus).telemetry is None
for kwargs in ({"instrument": True}, {"tracer_provider": None}):
    try:
        InMemoryCommBus(**kwargs)
    except ImportError as exc:
        assert str(exc) == MISSING, exc
        assert isinstance(exc.__cause__, ImportError), exc.__cause__
    else:
        raise AssertionError(f"no ImportError for {kwargs}")
try:
    CommBusCoordinator(None, bus, instrument=True)
except ImportError as exc:
    assert str(exc) == MISSING, exc
else:
    raise AssertionError("no ImportError for the coordinator")
print("ok")
"""


def test_without_the_extra_defaults_are_quiet_and_asking_is_an_import_error() -> None:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(WITHOUT_THE_EXTRA)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "ok"
    assert "observability extra" in MISSING
