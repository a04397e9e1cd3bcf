"""How a bus or coordinator created with defaults gets its built-in telemetry.

The core never imports the observability extra at module import time; this hook imports it
lazily when a bus or coordinator is constructed.
"""

from __future__ import annotations

from typing import Any

_MISSING = (
    "telemetry needs the observability extra: pip install 'jeeves-control-tower[observability]'"
)


def _load() -> Any:
    try:
        from . import observability
    except ImportError:
        return None
    return observability


def auto_instrument_bus(bus: Any, *, explicit: bool, **options: Any) -> Any:
    """Instrument ``bus`` with the built-in telemetry; ``None`` when the observability
    extra is not installed (an ``ImportError`` instead when ``instrument=True`` asked for
    it explicitly)."""
    obs = _load()
    if obs is None or not hasattr(obs, "instrument_bus"):
        if explicit or options:
            raise ImportError(_MISSING)
        return None
    return obs.instrument_bus(bus, **options)


def auto_instrument_coordinator(coordinator: Any, *, explicit: bool, **options: Any) -> Any:
    """As :func:`auto_instrument_bus`, for a coordinator."""
    obs = _load()
    if obs is None or not hasattr(obs, "instrument_coordinator"):
        if explicit or options:
            raise ImportError(_MISSING)
        return None
    return obs.instrument_coordinator(coordinator, **options)
