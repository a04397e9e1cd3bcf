"""CommBusInstrumentor: the package's telemetry as an OpenTelemetry instrumentation.

Registered under the ``opentelemetry_instrumentor`` entry-point group (name
``jeeves_control_tower``), so ``opentelemetry-instrument python app.py`` finds it and calls
``instrument()`` before the application runs: every bus and coordinator the application
builds with defaults then reports spans and metrics to the providers the distro configured,
with no code change. By hand::

    CommBusInstrumentor().instrument(tracer_provider=tp, meter_provider=mp, registry=reg)
    ...
    CommBusInstrumentor().uninstrument()

``instrument(...)`` installs, through the core's seam
(:func:`jeeves_control_tower.ipc.telemetry.set_instrumentation`), the built-in telemetry with
these defaults for every bus and coordinator built **afterwards** (a constructor's own
telemetry keywords still win; ``instrument=False`` still means none). Objects built before
keep the telemetry they have. Other keywords accepted: ``flow``, ``logger``,
``record_payloads``, ``max_label_values``, ``tracing``, ``metrics`` (as for
:func:`~jeeves_control_tower.observability.instrument_bus`).

``uninstrument()`` closes the telemetry that the seam attached (by this instrumentor or
by the default) to every bus and coordinator still alive, and buses and coordinators built
afterwards get none unless they ask (``instrument=True``). Telemetry attached by calling
``instrument_bus`` / ``instrument_coordinator`` by hand is left alone.
:func:`jeeves_control_tower.ipc.telemetry.reset_instrumentation` brings the default back.

Like every ``BaseInstrumentor`` it is a singleton; ``instrument()`` twice without
``uninstrument()`` in between does nothing the second time (OpenTelemetry logs a warning).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

# The module opens with "# type: ignore": mypy sees no names in it, so BaseInstrumentor is Any.
from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)

from ..ipc.telemetry import set_instrumentation
from .builtin import DEFAULT, BuiltinInstrumentation

__all__ = ["INSTRUMENTS", "CommBusInstrumentor"]

#: What the instrumentation needs beyond the core: the observability extra's packages that
#: it imports (the same bounds as in pyproject.toml; the SDK is the application's choice).
INSTRUMENTS = (
    "opentelemetry-semantic-conventions >= 0.54b0",
    "prometheus-client >= 0.20",
)

_OPTIONS = frozenset(
    {
        "tracer_provider",
        "meter_provider",
        "registry",
        "flow",
        "logger",
        "record_payloads",
        "max_label_values",
        "tracing",
        "metrics",
    }
)


class CommBusInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """See the module docstring."""

    _installed: BuiltinInstrumentation | None = None

    def instrumentation_dependencies(self) -> Collection[str]:
        return INSTRUMENTS

    def _instrument(self, **kwargs: Any) -> None:
        unknown = set(kwargs) - _OPTIONS
        if unknown:
            raise TypeError(f"CommBusInstrumentor.instrument: unexpected {sorted(unknown)}")
        self._installed = BuiltinInstrumentation(**kwargs)
        set_instrumentation(self._installed)

    def _uninstrument(self, **kwargs: Any) -> None:
        set_instrumentation(None)
        if self._installed is not None:
            self._installed.close()
            self._installed = None
        DEFAULT.close()
