"""The package's telemetry as an OpenTelemetry instrumentation, and the trace-context
propagation it uses.

- :class:`CommBusInstrumentor` (:mod:`.instrumentor`): a ``BaseInstrumentor``, registered
  for ``opentelemetry-instrument``; ``instrument(tracer_provider=..., meter_provider=...,
  registry=...)`` / ``uninstrument()``.
- :mod:`.builtin`: the built-in telemetry behind the core's seam
  (:mod:`jeeves_control_tower.ipc.telemetry`); its ``DEFAULT`` is what a bus or coordinator
  built with defaults gets.
- :mod:`.propagation`: inject/extract of the trace context, in one place.

Importing this package imports nothing: :class:`CommBusInstrumentor` is loaded on first
access (it needs the observability extra), so :mod:`.propagation` can be used by the
telemetry without an import circle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .instrumentor import CommBusInstrumentor

__all__ = ["CommBusInstrumentor"]


def __getattr__(name: str) -> Any:
    if name == "CommBusInstrumentor":
        from .instrumentor import CommBusInstrumentor

        return CommBusInstrumentor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
