"""Built-in observability for the bus and the coordinator.

- :func:`instrument_bus` / :func:`instrument_coordinator`: OpenTelemetry spans (messaging
  semantic conventions), Prometheus metrics, OpenTelemetry messaging metrics
  (:mod:`.otel_metrics`) and the live flow feed. Called automatically for a bus or
  coordinator built with defaults; every dependency is injectable (``tracer_provider``,
  ``meter_provider``, ``registry``, ``flow``, ``logger``).
- :func:`serve`: the HTTP endpoint (``/metrics``, ``/api/services``, ``/api/flow``,
  ``/api/stats``, ``/healthz``); ``observability.asgi.create_app`` serves the same as an
  ASGI app to mount in your own service (``asgi`` extra; not imported here).

Telemetry never breaks the application: a failing exporter, metric or flow sink is caught,
logged (rate-limited) and counted in ``commbus_telemetry_errors_total``.
"""

from .bus_metrics import MetricsMiddleware
from .dispatch_metrics import DispatchMetrics
from .dispatch_tracing import DispatchTracer
from .flow import FlowRecorder
from .flow_default import default_flow
from .instrument import BusTelemetry, CoordinatorTelemetry, instrument_bus, instrument_coordinator
from .metrics import METRIC_NAMES, CommBusMetrics, get_metrics
from .server import ObservabilityServer, serve
from .tracing import TracingMiddleware, trace_carrier

__all__ = [
    "METRIC_NAMES",
    "BusTelemetry",
    "CommBusMetrics",
    "CoordinatorTelemetry",
    "DispatchMetrics",
    "DispatchTracer",
    "FlowRecorder",
    "MetricsMiddleware",
    "ObservabilityServer",
    "TracingMiddleware",
    "default_flow",
    "get_metrics",
    "instrument_bus",
    "instrument_coordinator",
    "serve",
    "trace_carrier",
]
