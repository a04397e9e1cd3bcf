"""The built-in telemetry as an :class:`~jeeves_control_tower.ipc.telemetry.Instrumentation`.

:data:`DEFAULT` is what the core's seam finds through the entry point ``default`` of the
group ``jeeves_control_tower.telemetry`` (so every bus and coordinator built with defaults
gets it when the observability extra is installed); the
:class:`~.instrumentor.CommBusInstrumentor` installs its own :class:`BuiltinInstrumentation`
with the providers it was given. Importing this module imports the observability extra
(``ImportError`` when it is not installed: the seam then finds no default).
"""

from __future__ import annotations

import weakref
from typing import Any

from ..observability.instrument import instrument_bus, instrument_coordinator

__all__ = ["DEFAULT", "BuiltinInstrumentation"]


class BuiltinInstrumentation:
    """Attaches :func:`~jeeves_control_tower.observability.instrument_bus` /
    :func:`~jeeves_control_tower.observability.instrument_coordinator` to new buses and
    coordinators, with ``defaults`` (their keyword arguments) under the options a
    constructor passes. It remembers, weakly, the handles it made, so that :meth:`close`
    can remove that telemetry again. Thread-safe as the functions it calls."""

    def __init__(self, **defaults: Any) -> None:
        self.defaults = {k: v for k, v in defaults.items() if v is not None}
        self._handles: weakref.WeakSet[Any] = weakref.WeakSet()

    def instrument_bus(self, bus: Any, options: dict[str, Any]) -> Any:
        handle = instrument_bus(bus, **{**self.defaults, **options})
        self._handles.add(handle)
        return handle

    def instrument_coordinator(self, coordinator: Any, options: dict[str, Any]) -> Any:
        handle = instrument_coordinator(coordinator, **{**self.defaults, **options})
        self._handles.add(handle)
        return handle

    def close(self) -> None:
        """Close every live handle this instrumentation made (their middleware and
        observers are removed; a message or dispatch in flight finishes as it started)."""
        for handle in list(self._handles):
            handle.close()
        self._handles.clear()


#: The default instrumentation: the global tracer and meter providers, the default
#: Prometheus registry and flow recorder (see :mod:`jeeves_control_tower.observability`).
DEFAULT = BuiltinInstrumentation()
