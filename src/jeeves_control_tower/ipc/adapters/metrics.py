"""The adapters' own Prometheus metrics, declared once, registered lazily.

| name | type | labels |
| --- | --- | --- |
| ``commbus_wire_rejected_total`` | counter | ``transport``, ``reason`` (see :class:`WireError`) |
| ``commbus_transport_reconnects_total`` | counter | ``transport`` |
| ``commbus_transport_redeliveries_total`` | counter | ``transport`` (commands delivered again) |
| ``commbus_transport_buffered_messages`` | gauge | ``transport`` (waiting for the broker) |

``prometheus_client`` is optional: without it every method is a no-op. The collectors are
created in ``registry`` (default: ``prometheus_client.REGISTRY``) the first time a transport
is built, and reused when they already exist there, so any number of transports in one
process share them. Every method swallows its own errors: metrics never break messaging.
"""

from __future__ import annotations

import contextlib
from typing import Any

__all__ = ["AdapterMetrics"]

_DECLARED = (
    (
        "counter",
        "commbus_wire_rejected",
        "Frames rejected by the wire codec",
        ("transport", "reason"),
    ),
    ("counter", "commbus_transport_reconnects", "Broker reconnections", ("transport",)),
    (
        "counter",
        "commbus_transport_redeliveries",
        "Commands delivered again after a consumer failed to acknowledge them",
        ("transport",),
    ),
    (
        "gauge",
        "commbus_transport_buffered_messages",
        "Messages held in memory while the broker is unreachable",
        ("transport",),
    ),
)


def _collector(registry: Any, kind: str, name: str, doc: str, labels: tuple[str, ...]) -> Any:
    import prometheus_client as prom

    cls = prom.Counter if kind == "counter" else prom.Gauge
    try:
        return cls(name, doc, labels, registry=registry)
    except ValueError:  # already registered (another transport, another bus): reuse it
        names = getattr(registry, "_names_to_collectors", {})
        existing = names.get(name) or names.get(f"{name}_total")
        if existing is None:
            raise
        return existing


class AdapterMetrics:
    """The metrics of one transport (``transport`` is the label value: redis, nats...)."""

    def __init__(self, transport: str, registry: Any = None, *, enabled: bool = True) -> None:
        self.transport = transport
        self._c: dict[str, Any] = {}
        if not enabled:
            return
        try:
            import prometheus_client as prom
        except ImportError:
            return
        reg = registry if registry is not None else prom.REGISTRY
        for kind, name, doc, labels in _DECLARED:
            self._c[name] = _collector(reg, kind, name, doc, labels)

    def rejected(self, reason: str) -> None:
        c = self._c.get("commbus_wire_rejected")
        if c is not None:
            with contextlib.suppress(Exception):
                c.labels(self.transport, reason).inc()

    def reconnected(self) -> None:
        self._inc("commbus_transport_reconnects")

    def redelivered(self, n: int = 1) -> None:
        self._inc("commbus_transport_redeliveries", n)

    def buffered(self, delta: int) -> None:
        c = self._c.get("commbus_transport_buffered_messages")
        if c is not None and delta:
            with contextlib.suppress(Exception):
                c.labels(self.transport).inc(delta)

    def _inc(self, name: str, n: int = 1) -> None:
        c = self._c.get(name)
        if c is not None:
            with contextlib.suppress(Exception):
                c.labels(self.transport).inc(n)
