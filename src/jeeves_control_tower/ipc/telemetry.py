"""The telemetry seam: the one way telemetry attaches to the core.

The core (``jeeves_control_tower.ipc``, ``jeeves_control_tower.types``) never imports
telemetry code, not even lazily. A bus or a coordinator asks this module, when it is
constructed, for the *instrumentation* of the process: an object with two methods,

- ``instrument_bus(bus, options) -> handle`` and
- ``instrument_coordinator(coordinator, options) -> handle``,

whose handle becomes ``bus.telemetry`` / ``coordinator.telemetry``. ``options`` are the
constructor's telemetry keywords (``tracer_provider``, ``registry``, ...), which override
the instrumentation's own defaults.

Which instrumentation a new object gets:

- after :func:`set_instrumentation` (``CommBusInstrumentor().instrument(...)`` calls it):
  that one; ``set_instrumentation(None)`` (``uninstrument()`` calls it) means none;
- otherwise the **default**: the object named ``default`` in the entry-point group
  :data:`ENTRY_POINT_GROUP`, found once per process. This package declares it (the built-in
  telemetry); loading it fails with ``ImportError`` when the observability extra is not
  installed, and then there is none. That is the design card's promise: a bus built with
  defaults is instrumented out of the box when the extra is installed.

Per object: ``instrument=False`` means no telemetry (and no telemetry keywords);
``instrument=True`` or any telemetry keyword asks for it explicitly, so it uses the set
instrumentation or, when there is none (never set, or set to ``None``), the default, and
raises ``ImportError`` (:data:`MISSING`) when there is no default either.

**Metrics and flow attach without middleware**: a bus handle may give the bus a
:class:`MessageProbe` (``bus.set_message_probe(probe)``). The bus then reports every message
to it once, from the step that delivered it (or handed it to a transport), with what
happened: one Python call per message, and the handlers' own path otherwise unchanged.
Middleware (tracing spans) stays for what must run *around* the handlers. A coordinator
handle likewise may give the coordinator a :class:`DispatchProbe`
(``coordinator.set_dispatch_probe(probe)``), told of each dispatch once, at its end; dispatch
spans stay a dispatch observer (``coordinator.add_observer``).

Switching the instrumentation changes what objects built *afterwards* get; an existing
object keeps its handle (``CommBusInstrumentor().uninstrument()`` closes the handles the
built-in instrumentations made, default included: see
:mod:`jeeves_control_tower.instrumentation.instrumentor`).
Thread-safe; the entry point is looked up at most once until :func:`reset_instrumentation`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence, Sized
from importlib.metadata import entry_points
from typing import Any, NamedTuple, Protocol, runtime_checkable

__all__ = [
    "ENTRY_POINT_GROUP",
    "MISSING",
    "DispatchProbe",
    "Instrumentation",
    "LoadLog",
    "LoadStep",
    "MessageProbe",
    "default_instrumentation",
    "get_instrumentation",
    "instrument_new",
    "reset_instrumentation",
    "set_instrumentation",
]

#: The entry-point group holding the default instrumentation (the entry named ``default``).
ENTRY_POINT_GROUP = "jeeves_control_tower.telemetry"
#: The message of the ``ImportError`` raised when telemetry is asked for and there is none.
MISSING = (
    "telemetry needs the observability extra: pip install 'jeeves-control-tower[observability]'"
)


@runtime_checkable
class Instrumentation(Protocol):
    """What attaches telemetry to a new bus or coordinator (see the module docstring).

    A bus handle may also offer what the broker transports ask of it, each optional:
    ``inject(headers) -> headers`` (the current trace context added, for the transports'
    own traffic outside the middleware chain), ``attach(headers) -> token`` /
    ``detach(token)`` (the context in ``headers`` made current around such traffic
    arriving) and ``receive_batch(settings, count)`` (a batch read at once). Neither the
    methods nor the handles' may raise into the core."""

    def instrument_bus(self, bus: Any, options: dict[str, Any]) -> Any: ...

    def instrument_coordinator(self, coordinator: Any, options: dict[str, Any]) -> Any: ...


@runtime_checkable
class MessageProbe(Protocol):
    """The one observation seam of a bus for metrics and flow (see the module docstring).

    For every message of every pattern and direction, on the bus's event-loop thread:

    - when it enters the bus: ``probe.inflight[pattern] += 1`` (the bus does this itself:
      ``inflight`` is a plain ``dict[str, int]`` that only this bus writes, so a reader on
      another thread may read it at any time, and no lock is needed);
    - when it is done (its handlers finished, failed or timed out, or it was handed to the
      transport, or it was aborted or cancelled): one call of :meth:`message`, which takes
      it out of ``inflight`` again (``probe.inflight[pattern] -= 1``) and reads the clock
      for its duration.

    A probe that raises is logged by the bus (``message_probe_failed``), never raised into
    the message path; it should never raise, and it must be cheap: it runs once per
    message, inside the caller's ``publish``/``send``/``query``.

    Optionally, for the common ending of a message produced and handled here with no
    middleware, a probe may offer ``ended_ok(pattern, direction, system) -> ok``: the bus
    asks for it once per route when it compiles its routes, and then, for each message of
    that route that ended ``"ok"`` with no error and no trace id looked up, calls
    ``ok(message_type, started, handlers, message)`` (``handlers`` a tuple) instead of
    ``message(pattern, direction, system, message_type, started, "ok", handlers, None, None,
    message)``, which it must equal (fewer arguments per message: perf). Without it, or
    when it raises, the bus calls :meth:`message`.
    """

    inflight: dict[str, int]

    def message(
        self,
        pattern: str,
        direction: str,
        system: str,
        message_type: str,
        started: float,
        outcome: str,
        handlers: Sequence[Any],
        error: BaseException | Sequence[BaseException] | None,
        trace_id: int | None,
        message: Any,
    ) -> None:
        """One message done: its ``pattern`` ("publish", "send", "query"), ``direction``
        ("local", "out", "in"), messaging ``system``, ``message_type``, ``started`` (the
        ``time.perf_counter()`` reading when it entered the bus: the duration is from then to
        this call), ``outcome`` ("ok", "error", "timeout", "no_handler", "aborted",
        "cancelled"), the ``handlers`` it reached (handler entries with a ``name``, or
        names), ``error``: what its handlers or middleware raised (one exception, or, for a
        publish delivered here with no middleware, the list of the failing subscribers'
        errors; ``None`` for none), ``trace_id``: the trace id of its recording span when a
        tracing middleware set one (``None``: not looked up; the current context is the
        caller's), and the ``message`` itself."""


@runtime_checkable
class DispatchProbe(Protocol):
    """The one observation seam of a coordinator for metrics and flow: the dispatch twin of
    :class:`MessageProbe` (``coordinator.set_dispatch_probe(probe)``).

    For every dispatch, on the coordinator's event-loop thread:

    - when it starts: ``probe.inflight["dispatch"] += 1`` (the coordinator does this
      itself: ``inflight`` is a plain ``dict[str, int]`` holding the key ``"dispatch"``,
      written only by this coordinator, so a reader on another thread may read it at any
      time);
    - when it ends (whatever the outcome, cancellation included): one call of
      :meth:`dispatched`, which takes it out of ``inflight`` again. It runs in the
      dispatch's own context, before the dispatch observers' ``dispatch_end``, so a
      dispatch span an observer made current is current still.

    The probe is also a
    :class:`~jeeves_control_tower.ipc.dispatch.service_registry.RegistryObserver` (registry
    changes, and a change of a service's load alone through ``load_log`` (a
    :class:`LoadLog`), ``load_changed`` or ``observes_load``, read when the probe is set).
    A probe that raises is logged by the coordinator (``telemetry_observer_failed``), never
    raised into the dispatch; it should never raise, and it must be cheap: it runs once per
    dispatch and per slot change.
    """

    inflight: dict[str, int]

    def dispatched(
        self,
        target: Any,
        outcome: str,
        attempts: int,
        error: BaseException | None,
        started: float,
    ) -> None:
        """One dispatch done: its ``target`` (a ``DispatchTarget``), ``outcome`` (one of
        ``DISPATCH_OUTCOMES``), ``attempts`` made, ``error`` (what ended it, when it did not
        end ``ok``; ``None`` otherwise), ``started`` (the ``time.perf_counter()`` reading
        when it started: the duration is from then to this call)."""

    def service_changed(self, service: Any, queue_depth: int) -> None: ...

    def service_removed(self, service: Any) -> None: ...


#: One change of a service's load alone: ``(at, name, load, queue_depth, capacity)``,
#: ``at`` read from the log's ``clock`` when the change was made, ``load`` the slots in use
#: after it, ``queue_depth`` and ``capacity`` as last told (see :class:`LoadLog`).
LoadStep = tuple[float, str, int, int, int]


class LoadLog(NamedTuple):
    """Where a registry observer takes each change of a service's load alone, as a
    :data:`LoadStep` (the per-dispatch case, twice per dispatch: a slot taken, a slot given
    back), at no call into Python when ``append``, ``clock`` and ``len(pending)`` are C
    functions (a ``deque``'s ``append``, ``time.time``, the deque). The registry calls
    ``append(step)`` on its event-loop thread right after the change, then ``drain()`` when
    ``pending`` holds ``limit`` steps or more: that keeps the log bounded whoever else
    drains it. Neither may raise (a failure is logged, never raised into the dispatch)."""

    append: Callable[[LoadStep], Any]
    clock: Callable[[], float]
    pending: Sized
    limit: int
    drain: Callable[[], Any]


_lock = threading.Lock()
_UNSET: Any = object()
_chosen: Any = _UNSET  # _UNSET: the default; None: none; else the set instrumentation
_found: Any = _UNSET  # the default once looked up: an Instrumentation, or the ImportError


def set_instrumentation(instrumentation: Instrumentation | None) -> None:
    """Make ``instrumentation`` the one buses and coordinators built from now on get
    (``None``: none, unless one asks explicitly)."""
    global _chosen
    if instrumentation is not None and not isinstance(instrumentation, Instrumentation):
        raise TypeError(f"not an Instrumentation: {type(instrumentation).__name__}")
    _chosen = instrumentation


def reset_instrumentation() -> None:
    """Back to the default instrumentation, looked up again on next use."""
    global _chosen, _found
    with _lock:
        _chosen = _found = _UNSET


def default_instrumentation() -> Instrumentation | None:
    """The default instrumentation (entry point ``default`` of :data:`ENTRY_POINT_GROUP`),
    or ``None`` when there is none or it cannot be imported."""
    found = _default()
    return None if isinstance(found, BaseException) else found


def get_instrumentation() -> Instrumentation | None:
    """The instrumentation a bus or coordinator built now with defaults gets."""
    chosen = _chosen
    return default_instrumentation() if chosen is _UNSET else chosen


def _default() -> Any:
    global _found
    found = _found
    if found is not _UNSET:
        return found
    with _lock:
        if _found is _UNSET:
            _found = _load()
        return _found


def _load() -> Any:
    """The ``default`` entry point of the group, loaded: an :class:`Instrumentation`, or the
    ``ImportError`` that says why there is none."""
    for entry in entry_points(group=ENTRY_POINT_GROUP, name="default"):
        try:
            loaded = entry.load()
        except ImportError as exc:
            return exc
        if not isinstance(loaded, Instrumentation):
            return ImportError(f"{entry.value} is not an Instrumentation")
        return loaded
    return ImportError(f"no 'default' entry point in the group {ENTRY_POINT_GROUP!r}")


def instrument_new(kind: str, target: Any, options: dict[str, Any]) -> Any:
    """The telemetry handle of ``target``, a bus (``kind="bus"``) or a coordinator
    (``"coordinator"``) being constructed with the telemetry keywords ``options``
    (``instrument`` among them, popped here); ``None`` for none. See the module docstring."""
    instrument = options.pop("instrument", None)
    if instrument is False:
        if options:
            raise TypeError(f"unexpected arguments with instrument=False: {sorted(options)}")
        return None
    explicit = instrument is True or bool(options)
    chosen = _chosen
    instrumentation = None if chosen is _UNSET else chosen
    if instrumentation is None and (chosen is _UNSET or explicit):
        found = _default()
        if isinstance(found, BaseException):
            if explicit:
                raise ImportError(MISSING) from found
            return None
        instrumentation = found
    if instrumentation is None:
        return None
    if kind == "bus":
        return instrumentation.instrument_bus(target, options)
    return instrumentation.instrument_coordinator(target, options)
