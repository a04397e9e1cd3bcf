"""CommBusCoordinator: the service registry plus request dispatch, and typed messaging.

``dispatch`` is the heart: admission (``max_concurrent`` with a priority queue), a deadline
covering everything, retries with backoff, and an envelope that always says how it ended.
This module holds the public API (registry, ``dispatch``, typed events and queries); the
coordinator owns its :class:`~.service_registry.ServiceRegistry` and the
:class:`~.dispatcher.Dispatcher` that runs each dispatch.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from ...logging import ensure_logger
from ...types import DispatchTarget, Envelope, LoggerProtocol, ServiceDescriptor
from ..bus import InMemoryCommBus, NoHandlerError, QueryAbortedError, get_commbus
from ..messages import DynamicEvent, DynamicQuery, HandlerFunc
from ..telemetry import DispatchProbe, instrument_new
from .contracts import (
    DISPATCH_OUTCOMES,
    DispatchHandler,
    DispatchObserver,
    RemoteDispatcher,
    WholeDispatchObserver,
)
from .dispatcher import Dispatcher
from .retry import RetryPolicy
from .service_registry import ServiceRegistry

__all__ = [
    "DISPATCH_OUTCOMES",
    "CommBusCoordinator",
    "CommBusCoordinatorProtocol",
    "DispatchHandler",
    "DispatchObserver",
    "RemoteDispatcher",
    "WholeDispatchObserver",
]


@runtime_checkable
class CommBusCoordinatorProtocol(Protocol):
    def register_service(self, descriptor: ServiceDescriptor) -> bool: ...
    def unregister_service(self, service_name: str) -> bool: ...
    def get_service(self, service_name: str) -> ServiceDescriptor | None: ...
    def list_services(
        self,
        service_type: str | None = None,
        healthy_only: bool = True,
    ) -> list[ServiceDescriptor]: ...
    async def dispatch(self, target: DispatchTarget, envelope: Envelope) -> Envelope: ...
    async def broadcast(self, event_type: str, payload: dict[str, Any]) -> None: ...
    async def request(
        self,
        service_name: str,
        query_type: str,
        payload: dict[str, Any],
        timeout_seconds: float = 30.0,
    ) -> dict[str, Any]: ...


class CommBusCoordinator:
    """Service registry and request dispatch over an :class:`InMemoryCommBus`.

    Concurrency: event-loop-thread only. ``dispatch`` may be called concurrently any number
    of times; at most ``max_concurrent`` attempts run per service, the rest wait in priority
    order, at most ``max_queue`` of them (beyond that a dispatch ends ``overloaded``).
    """

    def __init__(
        self,
        logger: LoggerProtocol | None = None,
        commbus: InMemoryCommBus | None = None,
        *,
        retry_policy: RetryPolicy | None = None,
        max_queue: int | None = 1000,
        remote: RemoteDispatcher | None = None,
        **telemetry: Any,
    ) -> None:
        """``logger`` may be any structlog-style logger or a ``logging.Logger``;
        ``commbus`` defaults to :func:`get_commbus`. Extra keywords (``instrument``,
        ``tracer_provider``, ``registry``, ...) configure the telemetry, which attaches
        through the seam :mod:`jeeves_control_tower.ipc.telemetry`, as for
        :class:`InMemoryCommBus`."""
        self._logger = ensure_logger(logger, "jeeves_control_tower.coordinator")
        self._bus = commbus if commbus is not None else get_commbus(logger)
        if max_queue is not None and (not isinstance(max_queue, int) or max_queue < 0):
            raise ValueError(f"max_queue must be None or an int >= 0, got {max_queue!r}")
        self._registry = ServiceRegistry(max_queue, self._observer_failed)
        self._dispatcher = Dispatcher(
            self._registry,
            retry_policy or RetryPolicy(),
            self._logger,
            self._observer_failed,
            remote,
        )
        self.telemetry: Any = None
        self.telemetry = instrument_new("coordinator", self, telemetry)

    @property
    def commbus(self) -> InMemoryCommBus:
        return self._bus

    @property
    def logger(self) -> LoggerProtocol:
        return self._logger

    @property
    def remote(self) -> RemoteDispatcher | None:
        """Where dispatches to a service with no local handler go (``None``: they end
        ``no_handler``); see :meth:`attach_remote`."""
        return self._dispatcher.remote

    @remote.setter
    def remote(self, remote: RemoteDispatcher | None) -> None:
        """Deprecated: ``coordinator.remote = x`` (how remotes were attached before 0.2)
        is :meth:`attach_remote` (``None``: :meth:`detach_remote`), with a
        ``DeprecationWarning``."""
        warnings.warn(
            "setting CommBusCoordinator.remote is deprecated: call attach_remote/detach_remote",
            DeprecationWarning,
            stacklevel=2,
        )
        if remote is None:
            self.detach_remote()
        else:
            self.attach_remote(remote)

    def attach_remote(self, remote: RemoteDispatcher) -> None:
        """Carry dispatches to services with no local handler through ``remote`` (a
        transport's remote services, one at a time), as
        :meth:`InMemoryCommBus.attach_transport` does for messages."""
        current = self._dispatcher.remote
        if current is not None and current is not remote:
            raise ValueError("a remote dispatcher is already attached; detach it first")
        self._dispatcher.remote = remote

    def detach_remote(self) -> None:
        """Go back to local dispatch only."""
        self._dispatcher.remote = None

    def add_observer(self, observer: DispatchObserver) -> None:
        """Attach dispatch telemetry (it is told the current registry at once)."""
        self._dispatcher.add_observer(observer)
        self._registry.add_observer(observer)

    def remove_observer(self, observer: DispatchObserver) -> None:
        """Detach ``observer``: dispatches started from now on and registry changes are not
        told to it (a dispatch already started still ends with it). No-op when it is not
        attached."""
        self._dispatcher.remove_observer(observer)
        self._registry.remove_observer(observer)

    @property
    def dispatch_probe(self) -> DispatchProbe | None:
        """The :class:`~jeeves_control_tower.ipc.telemetry.DispatchProbe` set, or ``None``."""
        probe: DispatchProbe | None = self._dispatcher.probe
        return probe

    def set_dispatch_probe(self, probe: DispatchProbe | None) -> None:
        """Report every dispatch, and every registry change, to ``probe`` from now on
        (``None``: stop); the telemetry seam for metrics and flow
        (:class:`~jeeves_control_tower.ipc.telemetry.DispatchProbe` says what the
        coordinator calls and when). One probe at a time: the one set before counts no new
        dispatch, and once the dispatches it saw start have ended (each still ends with it,
        the slots they give back included) it is told nothing more. A new probe is told the
        current registry at once."""
        if probe is not None and not isinstance(probe, DispatchProbe):
            raise TypeError(f"not a DispatchProbe: {type(probe).__name__}")
        self._dispatcher.set_probe(probe)

    def _observer_failed(self, observer: Any, exc: BaseException) -> None:
        self._logger.error(
            "telemetry_observer_failed",
            observer=type(observer).__name__,
            error_type=type(exc).__name__,
            error=str(exc),
        )

    # ------------------------------------------------------------------ registry

    def register_service(self, descriptor: ServiceDescriptor) -> bool:
        """Register a service; ``False`` if the name is taken. Its ``current_load`` is reset
        to 0 and from now on maintained by the coordinator."""
        if not isinstance(descriptor, ServiceDescriptor):
            raise TypeError(f"expected a ServiceDescriptor, got {type(descriptor).__name__}")
        added = self._registry.add(descriptor)
        if added:
            self._logger.info(
                "service_registered", service=descriptor.name, type=descriptor.service_type
            )
        return added

    def unregister_service(self, service_name: str) -> bool:
        """Remove a service and its handler. Dispatches waiting for one of its slots end
        ``unknown_service``; attempts already running finish."""
        descriptor = self._registry.remove(service_name)
        if descriptor is None:
            return False
        self._dispatcher.remove_handler(service_name)
        self._logger.info("service_unregistered", service=service_name)
        return True

    def get_service(self, service_name: str) -> ServiceDescriptor | None:
        """The live descriptor of ``service_name`` (or ``None``)."""
        return self._registry.get(service_name)

    def list_services(
        self,
        service_type: str | None = None,
        healthy_only: bool = True,
    ) -> list[ServiceDescriptor]:
        """Registered services in registration order, optionally of one type, by default
        only the healthy ones."""
        return [
            s
            for s in self._registry.values()
            if (service_type is None or s.service_type == service_type)
            and (s.healthy or not healthy_only)
        ]

    def set_service_health(self, service_name: str, healthy: bool) -> bool:
        """Mark a service healthy or unhealthy; ``False`` if it is not registered.
        Dispatches to an unhealthy service end at once with ``unhealthy``."""
        changed = self._registry.set_health(service_name, healthy)
        if changed:
            self._logger.info("service_health_changed", service=service_name, healthy=bool(healthy))
        return changed

    def set_service_capacity(self, service_name: str, max_concurrent: int) -> bool:
        """Change ``max_concurrent`` at run time; waiting dispatches are admitted at once
        if it grew."""
        return self._registry.set_capacity(service_name, max_concurrent)

    def update_remote_service(
        self,
        service_name: str,
        *,
        current_load: int,
        max_concurrent: int,
        queue_depth: int,
        healthy: bool,
    ) -> bool:
        """Set the load, capacity, queue depth and health of a service served by another
        process (as reported by its heartbeats); telemetry observers are told at once.
        ``False`` if it is not registered. For transports, not for local services."""
        return self._registry.update_mirror(
            service_name,
            current_load=current_load,
            max_concurrent=max_concurrent,
            queue_depth=queue_depth,
            healthy=healthy,
        )

    def queue_depth(self, service_name: str) -> int:
        """Dispatches waiting for a slot of ``service_name`` right now."""
        return self._registry.queue_depth(service_name)

    def register_handler(self, service_name: str, handler: DispatchHandler) -> None:
        """Register the local dispatch handler of a registered service.

        Raises ``ValueError`` for an unknown service or one that already has a handler,
        ``TypeError`` for a handler that is not callable."""
        if not callable(handler):
            raise TypeError(f"handler must be callable, got {type(handler).__name__}")
        if service_name not in self._registry:
            raise ValueError(f"service {service_name!r} is not registered; register it first")
        if self._dispatcher.has_handler(service_name):
            raise ValueError(f"service {service_name!r} already has a handler")
        self._dispatcher.add_handler(service_name, handler)

    def has_local_handler(self, service_name: str) -> bool:
        return self._dispatcher.has_handler(service_name)

    # ------------------------------------------------------------------ dispatch

    async def dispatch(self, target: DispatchTarget, envelope: Envelope) -> Envelope:
        """Dispatch ``envelope`` to ``target.service_name`` and return the resulting envelope.

        Never raises for service-level failures: the envelope comes back with
        ``terminated=True`` and a ``termination_reason`` naming the service and the cause
        (unknown service, unhealthy, overloaded, timeout, error after retries, no handler).
        ``target.timeout_seconds`` bounds the whole call (slot wait, attempts, backoff).
        Each attempt is recorded in ``envelope.processing_history``. Cancelling the caller
        cancels the running attempt and frees its slot; ``CancelledError`` propagates.
        """
        if not isinstance(target, DispatchTarget):
            raise TypeError(f"target must be a DispatchTarget, got {type(target).__name__}")
        if not isinstance(envelope, Envelope):
            raise TypeError(f"envelope must be an Envelope, got {type(envelope).__name__}")
        return await self._dispatcher.dispatch(target, envelope)

    # ------------------------------------------------------------------ events and queries

    async def broadcast(self, event_type: str, payload: dict[str, Any]) -> None:
        """Publish a :class:`DynamicEvent` of ``event_type``: the subscribers of
        ``event_type`` receive it (``event.payload`` holds a copy of ``payload``)."""
        if not isinstance(event_type, str) or not event_type:
            raise ValueError(f"event_type must be a non-empty string, got {event_type!r}")
        if not isinstance(payload, dict):
            raise TypeError(f"payload must be a dict, got {type(payload).__name__}")
        await self._bus.publish(DynamicEvent(event_type, dict(payload)))

    async def publish_event(self, event: Any) -> None:
        """Publish a typed event via the bus."""
        await self._bus.publish(event)

    async def request(
        self,
        service_name: str,
        query_type: str,
        payload: dict[str, Any],
        timeout_seconds: float = 30.0,
    ) -> dict[str, Any]:
        """Send a :class:`DynamicQuery` of ``query_type`` to its handler on the bus.

        Returns ``{"result": ...}``, or ``{"error": "..."}`` naming the cause: unknown or
        unhealthy service, no handler, a middleware abort, the handler's error, a timeout.
        Cancellation propagates."""
        if not isinstance(query_type, str) or not query_type:
            raise ValueError(f"query_type must be a non-empty string, got {query_type!r}")
        if not isinstance(payload, dict):
            raise TypeError(f"payload must be a dict, got {type(payload).__name__}")
        service = self._registry.get(service_name)
        if service is None:
            return {"error": f"unknown service {service_name!r}"}
        if not service.healthy:
            return {"error": f"service {service_name!r} is unhealthy"}
        query = DynamicQuery(query_type, dict(payload), service_name)
        what = f"query {query_type!r} to service {service_name!r}"
        try:
            return {"result": await self._bus.query(query, timeout=timeout_seconds)}
        except NoHandlerError:
            return {"error": f"no handler for query {query_type!r} (service {service_name!r})"}
        except QueryAbortedError:
            return {"error": f"{what} was aborted by middleware"}
        except TimeoutError:
            return {"error": f"{what} timed out after {timeout_seconds}s"}
        except Exception as exc:
            return {"error": f"{what} failed: {type(exc).__name__}: {exc}"}

    async def send_query(self, query: Any, timeout: float | None = None) -> Any:
        """Send a typed query via the bus; exceptions as for :meth:`InMemoryCommBus.query`."""
        return await self._bus.query(query, timeout=timeout)

    def subscribe(self, event_type: str, handler: HandlerFunc) -> Callable[[], None]:
        """Subscribe to bus events; returns the unsubscribe function."""
        return self._bus.subscribe(event_type, handler)

    def register_query_handler(self, query_type: str, handler: HandlerFunc) -> None:
        """Register the bus handler for queries of ``query_type`` (``ValueError`` if taken)."""
        self._bus.register_handler(query_type, handler)
