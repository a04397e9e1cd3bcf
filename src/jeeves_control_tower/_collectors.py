"""One container of Prometheus collectors per registry, shared by every module of the
package that declares metrics (the bus/dispatch families and the adapters' families).

:func:`declare` creates a collector in a registry the first time its name is asked for and
returns that same collector afterwards, so any number of buses, coordinators and transports
share one registry without a "Duplicated timeseries" error. It reads no private attribute of
``prometheus_client``: what this package registered is remembered here (weakly keyed by the
registry), and a name registered in the registry by anyone else is the registry's
``ValueError``. Asking again for a name with another type or other labels is a ``ValueError``.

Imports nothing optional: ``cls`` is the caller's ``prometheus_client`` class.
Thread-safe.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

__all__ = ["declare"]

_lock = threading.Lock()
_by_registry: weakref.WeakKeyDictionary[Any, dict[str, tuple[Any, tuple[str, ...], Any]]] = (
    weakref.WeakKeyDictionary()
)


def declare(
    cls: Any, name: str, doc: str, labels: tuple[str, ...], registry: Any, **kw: Any
) -> Any:
    """The collector ``cls(name, doc, labels, registry=registry, **kw)``, created once per
    registry. ``ValueError`` when ``name`` was declared here with another ``cls`` or other
    ``labels``, or registered in ``registry`` by someone else."""
    with _lock:
        declared = _by_registry.get(registry)
        if declared is None:
            declared = _by_registry[registry] = {}
        found = declared.get(name)
        if found is not None:
            kind, labelnames, collector = found
            if kind is not cls or labelnames != labels:
                raise ValueError(
                    f"{name} is already declared as a {kind.__name__} with labels {labelnames}"
                )
            return collector
        collector = cls(name, doc, labels, registry=registry, **kw)
        declared[name] = (cls, labels, collector)
        return collector
