"""The adapters' own Prometheus metrics, declared once, registered lazily.

| name | type | labels |
| --- | --- | --- |
| ``commbus_wire_rejected_total`` | counter | ``transport``, ``reason`` (see :class:`WireError`) |
| ``commbus_transport_reconnects_total`` | counter | ``transport`` |
| ``commbus_transport_redeliveries_total`` | counter | ``transport`` (commands delivered again) |
| ``commbus_transport_buffered_messages`` | gauge | ``transport`` (waiting for the broker) |
| ``commbus_wire_messages_total`` | counter | ``transport``, ``direction``, ``pattern`` (below) |
| ``commbus_transport_dropped_events_total`` | counter | ``transport`` (lost after publish) |
| ``commbus_dead_letters_total`` | counter | ``transport``, ``message_type``, ``reason`` |
| ``commbus_dead_letter_messages`` | gauge | ``transport``, ``queue`` (depth as last measured) |

``commbus_dead_letters_total`` counts the messages this process moved to its broker's
dead-letter queue; ``reason`` is ``rejected`` (could not be decoded, or read from the wrong
destination) or ``max_deliveries``, and ``message_type`` is the type of the destination it
was read from (never a value from the frame), at most 200 distinct values per collector,
later ones folded into ``other`` (as in :mod:`jeeves_control_tower.observability`).
``commbus_dead_letter_messages`` is the dead-letter queue's depth (Redis ``XLEN``,
JetStream stream messages), measured when the transport connects and after each message it
dead-letters (and whenever ``await transport.dead_letter_depth()`` is called); ``queue`` is
the dead-letter stream's name, one per transport.

``commbus_wire_messages_total`` counts the frames that crossed the wire. ``direction`` is
``sent`` (the broker client accepted the frame: a publish or send once the transport
returned, a query request once the broker took it for a responder, a reply once handed to
the broker) or ``received`` (a frame that arrived and decoded fine; a frame that fails to
decode is counted in ``commbus_wire_rejected_total`` instead). ``pattern`` is ``publish``,
``send``, ``query`` (the request) or ``reply`` (the answer to a query); each event of a
batch frame counts as one. The adapters' own
traffic (service heartbeats, remote dispatch) is counted too. The child of each
``(direction, pattern)`` is bound once; counting a frame is one dict lookup and one
increment.

``prometheus_client`` is optional: without it every method is a no-op. The collectors are
created in ``registry`` (default: ``prometheus_client.REGISTRY``) the first time a transport
is built, and reused when this package already declared them there, so any number of
transports in one process share them. With ``PROMETHEUS_MULTIPROC_DIR`` set (a pre-fork
server), the gauges aggregate across workers as :data:`GAUGE_MODES` says. Every method
swallows its own errors: metrics never break messaging.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["GAUGE_MODES", "MAX_LABEL_VALUES", "OTHER", "RECEIVED", "SENT", "AdapterMetrics"]

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
    (
        "counter",
        "commbus_wire_messages",
        "Frames that crossed the wire (sent: accepted by the broker client; received: decoded)",
        ("transport", "direction", "pattern"),
    ),
    (
        "counter",
        "commbus_transport_dropped_events",
        "Events accepted by publish and lost before the broker client took them"
        " (the connection closed in the same loop iteration)",
        ("transport",),
    ),
    (
        "counter",
        "commbus_dead_letters",
        "Messages moved to a dead-letter queue",
        ("transport", "message_type", "reason"),
    ),
    (
        "gauge",
        "commbus_dead_letter_messages",
        "Messages held in a dead-letter queue (as last measured)",
        ("transport", "queue"),
    ),
)

#: The message_type label values admitted by each dead-letter counter (shared by the
#: transports that share the collector, so the bound holds per collector).
_DEAD_LETTER_TYPES: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()
MAX_LABEL_VALUES = 200
_MAX_LABEL_LENGTH = 200
OTHER = "other"

#: ``direction`` values of ``commbus_wire_messages_total``.
SENT = "sent"
RECEIVED = "received"


#: How each gauge aggregates across the worker processes of a pre-fork server
#: (``PROMETHEUS_MULTIPROC_DIR`` set; see ``docs/observability.md``).
GAUGE_MODES = {
    # Held in each live worker's memory: the sum; a dead worker's buffer is gone with it.
    "commbus_transport_buffered_messages": "livesum",
    # The depth of a queue on the broker, which every worker may measure: the latest
    # measurement (a sum would count the same queue once per worker).
    "commbus_dead_letter_messages": "mostrecent",
}


def _collector(registry: Any, kind: str, name: str, doc: str, labels: tuple[str, ...]) -> Any:
    import prometheus_client as prom

    from ..._collectors import declare

    if kind == "counter":
        return declare(prom.Counter, name, doc, labels, registry)
    return declare(prom.Gauge, name, doc, labels, registry, multiprocess_mode=GAUGE_MODES[name])


class AdapterMetrics:
    """The metrics of one transport (``transport`` is the label value: redis, nats...)."""

    def __init__(self, transport: str, registry: Any = None, *, enabled: bool = True) -> None:
        self.transport = transport
        self._c: dict[str, Any] = {}
        # (direction, pattern) -> the bound child's ``inc`` (None: metrics off)
        self._wire: dict[tuple[str, str], Any] = {}
        self._dead_letter_types: set[str] = set()
        if not enabled:
            return
        try:
            import prometheus_client as prom
        except ImportError:
            return
        reg = registry if registry is not None else prom.REGISTRY
        for kind, name, doc, labels in _DECLARED:
            self._c[name] = _collector(reg, kind, name, doc, labels)
        counter = self._c["commbus_dead_letters"]
        admitted = _DEAD_LETTER_TYPES.get(counter)
        if admitted is None:
            admitted = _DEAD_LETTER_TYPES[counter] = set()
        self._dead_letter_types = admitted

    def rejected(self, reason: str) -> None:
        c = self._c.get("commbus_wire_rejected")
        if c is not None:
            with contextlib.suppress(Exception):
                c.labels(self.transport, reason).inc()

    def reconnected(self) -> None:
        self._inc("commbus_transport_reconnects")

    def redelivered(self, n: int = 1) -> None:
        self._inc("commbus_transport_redeliveries", n)

    def dropped(self, n: int = 1) -> None:
        self._inc("commbus_transport_dropped_events", n)

    def dead_lettered(self, message_type: str, reason: str) -> None:
        """Count one message moved to the dead-letter queue (``reason``: ``rejected`` or
        ``max_deliveries``; ``message_type``: of the destination it was read from)."""
        c = self._c.get("commbus_dead_letters")
        if c is not None:
            with contextlib.suppress(Exception):
                c.labels(self.transport, self._bounded(message_type), reason).inc()

    def _bounded(self, message_type: str) -> str:
        """``message_type``, or ``other`` once the collector admitted
        :data:`MAX_LABEL_VALUES` others (or when it is too long)."""
        admitted = self._dead_letter_types
        if message_type in admitted:
            return message_type
        if len(admitted) >= MAX_LABEL_VALUES or len(message_type) > _MAX_LABEL_LENGTH:
            return OTHER
        admitted.add(message_type)
        return message_type

    def dead_letter_depth(self, queue: str, depth: int) -> None:
        """Set the measured depth of the dead-letter queue ``queue``."""
        c = self._c.get("commbus_dead_letter_messages")
        if c is not None:
            with contextlib.suppress(Exception):
                c.labels(self.transport, queue).set(depth)

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

    def wire(self, direction: str, pattern: str, n: int = 1) -> None:
        """Count ``n`` frames in ``commbus_wire_messages_total`` (``direction`` is
        :data:`SENT` or :data:`RECEIVED`). Never raises."""
        try:
            inc = self._wire[direction, pattern]
        except KeyError:
            inc = self._bind_wire(direction, pattern)
        except Exception:  # an unhashable label: nothing to count
            return
        if inc is not None:
            try:  # noqa: SIM105 - not contextlib.suppress: this runs for every frame
                inc(n)
            except Exception:
                pass

    def wire_counter(self, direction: str, pattern: str) -> Callable[[], None] | None:
        """The bound increment of one ``commbus_wire_messages_total`` child, for a caller
        that counts on a hot path (``None`` when metrics are off). It never raises."""
        inc = self._wire.get((direction, pattern)) or self._bind_wire(direction, pattern)
        if inc is None:
            return None

        def count() -> None:
            try:  # noqa: SIM105 - not contextlib.suppress: this runs for every frame
                inc()
            except Exception:
                pass

        return count

    def _bind_wire(self, direction: str, pattern: str) -> Any:
        inc = None
        c = self._c.get("commbus_wire_messages")
        if c is not None:
            try:
                inc = c.labels(self.transport, direction, pattern).inc
            except Exception:
                inc = None
        self._wire[direction, pattern] = inc
        return inc
