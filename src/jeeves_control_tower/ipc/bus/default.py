"""The process-wide bus: :func:`get_commbus` and :func:`reset_commbus`."""

from __future__ import annotations

from ...types import LoggerProtocol
from .bus import InMemoryCommBus

__all__ = ["get_commbus", "reset_commbus"]

_global_bus: InMemoryCommBus | None = None


def get_commbus(logger: LoggerProtocol | None = None) -> InMemoryCommBus:
    """Get the process-wide CommBus, creating it on first use (with ``logger``, if given).

    A ``logger`` passed once the bus exists is ignored.
    """
    global _global_bus
    if _global_bus is None:
        _global_bus = InMemoryCommBus(logger=logger)
    return _global_bus


def reset_commbus() -> None:
    """Forget the process-wide CommBus (for tests); the next :func:`get_commbus` builds a
    new one."""
    global _global_bus
    bus = _global_bus
    _global_bus = None
    if bus is not None and bus.telemetry is not None:
        close = getattr(bus.telemetry, "close", None)
        if callable(close):
            close()
