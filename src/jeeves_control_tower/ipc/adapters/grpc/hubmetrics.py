"""The hub's own metrics (beside the adapters' ``commbus_wire_*`` series, ``transport="grpc"``).

- ``commbus_grpc_clients`` (gauge): processes connected to the hub now;
- ``commbus_grpc_disconnects_total{reason}`` (counter): ``closed`` (the client's stream
  ended), ``slow_consumer`` (its queue was full), ``hub_closed``;
- ``commbus_grpc_refused_total{reason}`` (counter): ``unauthenticated``, ``no_hello``,
  ``too_many_clients``, ``duplicate_process``.

``prometheus_client`` is optional; every method swallows its own errors.
"""

from __future__ import annotations

import contextlib
from typing import Any

__all__ = ["HubMetrics"]


class HubMetrics:
    def __init__(self, registry: Any = None, *, enabled: bool = True) -> None:
        self._clients: Any = None
        self._disconnects: Any = None
        self._refused: Any = None
        if not enabled:
            return
        try:
            import prometheus_client as prom
        except ImportError:
            return
        from ...._collectors import declare

        reg = registry if registry is not None else prom.REGISTRY
        self._clients = declare(
            prom.Gauge, "commbus_grpc_clients", "Processes connected to the gRPC hub", (), reg,
            multiprocess_mode="livesum",
        )  # fmt: skip
        self._disconnects = declare(
            prom.Counter, "commbus_grpc_disconnects", "Client streams the gRPC hub ended",
            ("reason",), reg,
        )  # fmt: skip
        self._refused = declare(
            prom.Counter, "commbus_grpc_refused", "Connections the gRPC hub refused",
            ("reason",), reg,
        )  # fmt: skip

    def clients(self, delta: int) -> None:
        if self._clients is not None:
            with contextlib.suppress(Exception):
                self._clients.inc(delta)

    def disconnected(self, reason: str) -> None:
        if self._disconnects is not None:
            with contextlib.suppress(Exception):
                self._disconnects.labels(reason).inc()

    def refused(self, reason: str) -> None:
        if self._refused is not None:
            with contextlib.suppress(Exception):
                self._refused.labels(reason).inc()
