"""Pre-fork servers (gunicorn and the like, one process per worker): one scrape for all.

With ``PROMETHEUS_MULTIPROC_DIR`` set in the environment *before* ``prometheus_client`` is
imported (gunicorn: in the master, so every worker inherits it), prometheus_client keeps
every counter, histogram and gauge value in a file per process in that directory.
:func:`exposition_registry` is what ``/metrics`` renders: in that mode a fresh
:class:`~prometheus_client.CollectorRegistry` holding one
:class:`~prometheus_client.multiprocess.MultiProcessCollector`, built per scrape as
prometheus_client documents, so whichever worker answers the scrape reports the sums of all
workers; otherwise the endpoint's own registry, unchanged.

Counters and histograms add up over every worker that ever ran (dead ones too, as a
restarted single process would keep counting). Gauges aggregate as their
``multiprocess_mode`` says (:data:`.metrics.GAUGE_MODES`,
:data:`jeeves_control_tower.ipc.adapters.metrics.GAUGE_MODES`); the ``live*`` ones drop a
worker's values once :func:`mark_process_dead` is called with its pid (gunicorn:
``child_exit``). In that mode exemplars are not exposed (prometheus_client's multiprocess
values do not keep them; observing with one still works), and custom collectors
registered in the endpoint's registry are not in the aggregate.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, multiprocess

__all__ = [
    "ENV",
    "MultiprocessUnavailable",
    "exposition_registry",
    "mark_process_dead",
    "multiprocess_dir",
]

#: The environment variable prometheus_client's multiprocess mode is keyed on.
ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> str | None:
    """The multiprocess directory, or ``None`` when the process is not in that mode."""
    return os.environ.get(ENV) or None


class MultiprocessUnavailable(RuntimeError):
    """``PROMETHEUS_MULTIPROC_DIR`` is set but is not a readable directory: no aggregate
    can be rendered (the endpoints answer ``503`` and log the path)."""


def exposition_registry(registry: CollectorRegistry) -> CollectorRegistry:
    """What one scrape renders: the aggregate of every worker's files in multiprocess mode
    (a new registry each call), else ``registry`` itself. :class:`MultiprocessUnavailable`
    when the directory is missing or unreadable."""
    path = multiprocess_dir()
    if path is None:
        return registry
    if not (os.path.isdir(path) and os.access(path, os.R_OK | os.X_OK)):
        raise MultiprocessUnavailable(f"{ENV}={path!r} is not a readable directory")
    aggregate = CollectorRegistry()
    multiprocess.MultiProcessCollector(aggregate, path=path)  # type: ignore[no-untyped-call]
    return aggregate


def mark_process_dead(pid: int, path: str | None = None) -> None:
    """Drop the ``live*`` gauge values of the dead worker ``pid`` (prometheus_client's
    ``multiprocess.mark_process_dead``; ``path`` defaults to the multiprocess directory).
    Call it from the server's master when a worker exits (gunicorn: ``child_exit``)."""
    directory = path if path is not None else multiprocess_dir()
    if directory is None:
        raise ValueError(f"{ENV} is not set and no path was given")
    multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
