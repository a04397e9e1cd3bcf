"""The service registry: descriptors, their admission slots, and change notifications."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from ...types import ServiceDescriptor
from ..telemetry import LoadLog
from .admission import Admission

__all__ = ["RegistryObserver", "ServiceGone", "ServiceRegistry"]


class ServiceGone(Exception):
    """The service was unregistered while a dispatch waited for it."""


class RegistryObserver(Protocol):
    """Told about every registry change; methods must be fast and must not raise.

    A change of a service's load alone (a slot taken or given back, queue depth, capacity
    and health as last told) is the per-dispatch case: it goes to the observer's
    ``load_log`` (a :class:`~jeeves_control_tower.ipc.telemetry.LoadLog`) and
    ``load_changed(service, queue_depth)`` when it has them, is skipped when the observer
    has neither and says ``observes_load = False`` (it reads ``current_load`` when it needs
    it), and goes to ``service_changed`` otherwise. All three are optional attributes, read
    once, when the observer is added.
    """

    def service_changed(self, service: ServiceDescriptor, queue_depth: int) -> None:
        """Registered, or its load, queue depth, capacity or health changed."""

    def service_removed(self, service: ServiceDescriptor) -> None: ...


class ServiceRegistry:
    """Services by name, each with an :class:`Admission` that enforces ``max_concurrent``.

    ``current_load`` of a descriptor is kept equal to the slots in use. Event-loop-thread
    only.
    """

    def __init__(
        self,
        max_queue: int | None,
        on_error: Callable[[Any, BaseException], None],
    ) -> None:
        self._services: dict[str, ServiceDescriptor] = {}
        self._admission: dict[str, Admission] = {}
        self._max_queue = max_queue
        self._observers: tuple[RegistryObserver, ...] = ()
        # what a change of load alone calls, one per observer that wants it (see
        # RegistryObserver), and the (queue depth, capacity) each service was last told with
        self._load_hooks: tuple[tuple[Any, Callable[[ServiceDescriptor, int], None]], ...] = ()
        self._load_logs: tuple[tuple[Any, ...], ...] = ()  # (observer, *its LoadLog)
        # the common case, one load log and no load hook: (observer, *its LoadLog), else None
        self._one_log: tuple[Any, ...] | None = None
        self._told: dict[str, list[int]] = {}
        self._on_error = on_error

    def add_observer(self, observer: RegistryObserver) -> None:
        """Tell ``observer`` every change from now on (and each service now, at once)."""
        log = getattr(observer, "load_log", None)
        if not isinstance(log, LoadLog):  # (an attribute of that name that is not one)
            log = None
        self._observers += (observer,)
        if log is not None:
            self._load_logs += ((observer, *log),)
        hook = getattr(observer, "load_changed", None)
        if hook is None and log is None and getattr(observer, "observes_load", True):
            hook = getattr(observer, "service_changed", None)
        if hook is not None:
            self._load_hooks += ((observer, hook),)
        self._single_log()
        for name, svc in self._services.items():
            self._notify(svc, self._admission[name].queue_depth, (observer,))

    def remove_observer(self, observer: RegistryObserver) -> None:
        """Tell ``observer`` nothing more (no-op when it is not one)."""
        self._observers = tuple(obs for obs in self._observers if obs is not observer)
        self._load_hooks = tuple(pair for pair in self._load_hooks if pair[0] is not observer)
        self._load_logs = tuple(log for log in self._load_logs if log[0] is not observer)
        self._single_log()

    def _single_log(self) -> None:
        one = len(self._load_logs) == 1 and not self._load_hooks
        self._one_log = self._load_logs[0] if one else None

    def add(self, descriptor: ServiceDescriptor) -> bool:
        if descriptor.name in self._services:
            return False
        self._services[descriptor.name] = descriptor
        descriptor.current_load = 0
        admission = Admission(lambda: descriptor.max_concurrent, self._max_queue)
        admission.on_change = self._watch(descriptor, admission)
        self._admission[descriptor.name] = admission
        self._notify(descriptor, 0)
        return True

    def remove(self, name: str) -> ServiceDescriptor | None:
        descriptor = self._services.pop(name, None)
        if descriptor is None:
            return None
        admission = self._admission.pop(name)
        told = self._told.pop(name, None)
        if told is not None:
            told[2] = False  # its slots' changes go to nobody now (see _watch)
        admission.close(ServiceGone(f"service {name!r} was unregistered"))
        for obs in self._observers:
            try:
                obs.service_removed(descriptor)
            except Exception as exc:
                self._on_error(obs, exc)
        return descriptor

    def get(self, name: str) -> ServiceDescriptor | None:
        return self._services.get(name)

    def admission(self, name: str) -> Admission:
        return self._admission[name]

    def __contains__(self, name: object) -> bool:
        return name in self._services

    def values(self) -> list[ServiceDescriptor]:
        return list(self._services.values())

    def queue_depth(self, name: str) -> int:
        adm = self._admission.get(name)
        return adm.queue_depth if adm is not None else 0

    def set_health(self, name: str, healthy: bool) -> bool:
        svc = self._services.get(name)
        if svc is None:
            return False
        svc.healthy = bool(healthy)
        self._notify(svc, self._admission[name].queue_depth)
        return True

    def set_capacity(self, name: str, max_concurrent: int) -> bool:
        svc = self._services.get(name)
        if svc is None:
            return False
        if (
            not isinstance(max_concurrent, int)
            or isinstance(max_concurrent, bool)
            or max_concurrent < 1
        ):
            raise ValueError(f"max_concurrent must be an int >= 1, got {max_concurrent!r}")
        svc.max_concurrent = max_concurrent
        self._admission[name].refill()
        return True

    def update_mirror(
        self, name: str, *, current_load: int, max_concurrent: int, queue_depth: int, healthy: bool
    ) -> bool:
        """Overwrite a remote service's figures (it has no local slots) and tell observers."""
        svc = self._services.get(name)
        if svc is None:
            return False
        svc.current_load = current_load
        svc.max_concurrent = max(1, max_concurrent)
        svc.healthy = healthy
        self._notify(svc, queue_depth)
        return True

    def _watch(self, descriptor: ServiceDescriptor, admission: Admission) -> Callable[[], None]:
        """What ``admission`` calls after each change of its slots or queue: keeps
        ``descriptor.current_load`` equal to the slots in use and tells the observers (a
        change of load alone to the load logs and hooks, see :class:`RegistryObserver`).
        One function per registration (perf: it runs twice per dispatch)."""
        name = descriptor.name
        admissions = self._admission
        # this registration's (queue depth, capacity) last told, updated in place by
        # _notify, and whether it is still registered (remove() clears it)
        told = self._told[name] = [-1, -1, True]

        def changed() -> None:
            if not told[2]:  # unregistered: nobody is told; its load still falls, unless
                # the name is registered again (the same descriptor, maybe): not its slots
                if admissions.get(name) is None:
                    descriptor.current_load = admission.in_use
                return
            descriptor.current_load = load = admission.in_use
            if self._observers:
                depth = admission.queue_depth
                if told[0] == depth and told[1] == descriptor.max_concurrent:
                    one = self._one_log
                    if one is not None:  # perf: the common case (twice per dispatch)
                        try:  # the load alone changed
                            one[1]((one[2](), name, load, depth, told[1]))
                            if len(one[3]) >= one[4]:
                                one[5]()
                        except Exception as exc:
                            self._on_error(one[0], exc)
                        return
                    for obs, append, clock, pending, limit, drain in self._load_logs:
                        try:  # the load alone changed
                            append((clock(), name, load, depth, told[1]))
                            if len(pending) >= limit:
                                drain()
                        except Exception as exc:
                            self._on_error(obs, exc)
                    for obs, hook in self._load_hooks:
                        try:
                            hook(descriptor, depth)
                        except Exception as exc:
                            self._on_error(obs, exc)
                    return
                self._notify(descriptor, depth)

        return changed

    def _notify(
        self,
        descriptor: ServiceDescriptor,
        queue_depth: int,
        observers: tuple[RegistryObserver, ...] | None = None,
    ) -> None:
        """Tell ``observers`` (every observer by default) of ``descriptor``'s state."""
        told = self._told.get(descriptor.name)
        if told is None:  # a service with no slots here (a mirror of a remote one)
            told = self._told[descriptor.name] = [-1, -1, True]
        told[0], told[1] = queue_depth, descriptor.max_concurrent
        for obs in self._observers if observers is None else observers:
            try:
                obs.service_changed(descriptor, queue_depth)
            except Exception as exc:
                self._on_error(obs, exc)
