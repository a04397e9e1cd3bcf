"""Services that processes register with the hub, served through the hub's coordinator.

A client registers a service on its Connect stream (``register_service``); the hub
registers it in its own :class:`~jeeves_control_tower.ipc.CommBusCoordinator` with a
handler that routes each dispatch attempt to that client (a ``dispatch`` delivery) and
waits for the resulting envelope. Admission, priority order, ``max_concurrent``, retries
and the deadline are therefore the hub coordinator's, for every caller: the hub's own
code, a ``Dispatch`` call, or a client's ``dispatch`` request.

- A name belongs to one live process: registering a name another connected process holds,
  or one of the hub's own services, is refused. A name whose process went away may be
  taken over (by the same process after a reconnect, or any other).
- Health: a client whose stream ends has its services marked unhealthy at once (a dispatch
  then ends ``unhealthy``; one in flight ends with ``process ... went away``); one that sends
  no heartbeat for ``3 * heartbeat_interval`` too, until its next heartbeat, which also
  carries the health each service reports.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Protocol

from ....types import DispatchTarget, Envelope, SchedulingPriority, ServiceDescriptor
from ... import CommBusCoordinator
from ..tracecontext import attach_trace, detach_trace, outgoing_headers
from . import commbus_pb2 as pb
from .checks import name_problem
from .router import Peer, Router

__all__ = ["MAX_RETRIES", "Client", "HubServices"]

#: The most retries a dispatch request may ask for (as the HTTP face; beyond: refused).
MAX_RETRIES = 10


class Client(Peer, Protocol):
    """A process connected to the hub (:class:`~.session.Client`), as the hub sees it."""

    #: When the hub last heard from it (``loop.time()``).
    last_heard: float
    #: Why its stream ended (``None``: connected).
    closed_reason: str | None

    def close(self, reason: str) -> None: ...


_OWNER = "grpc_process"
#: The router's own bound on a dispatch attempt; the coordinator's deadline comes first
#: (it cancels the attempt, and the request is forgotten).
_UNBOUNDED = 3600.0


class HubServices:
    def __init__(
        self,
        coordinator: CommBusCoordinator,
        router: Router,
        heartbeat_interval: float,
        max_timeout: float = 300.0,
    ) -> None:
        self.coordinator = coordinator
        self.max_timeout = max_timeout
        self.router = router
        self.heartbeat_interval = heartbeat_interval
        self._owners: dict[str, Client] = {}

    def register(self, session: Client, service: pb.Service) -> str | None:
        """Register ``service`` for ``session``; why not (``None``: registered)."""
        name = service.name
        problem = name_problem(name)
        if problem is not None:
            return problem
        owner = self._owners.get(name)
        if owner is session:
            return None
        current = self.coordinator.get_service(name)
        # A name is free when nobody holds it, or when it was registered through a hub
        # (it carries its process in its metadata) and that process is not connected now.
        if owner is not None or (current is not None and _OWNER not in current.metadata):
            return f"service {name[:100]!r} is held by another process"
        if current is not None:
            self.coordinator.unregister_service(name)
        descriptor = ServiceDescriptor(
            name=name,
            service_type=service.service_type or "grpc",
            version=service.version or "1.0.0",
            capabilities=list(service.capabilities),
            max_concurrent=max(1, service.max_concurrent or 10),
            metadata={_OWNER: session.process_id},
        )
        self.coordinator.register_service(descriptor)
        self.coordinator.register_handler(name, self._handler(session, name))
        self._owners[name] = session
        return None

    def owners(self) -> dict[str, str]:
        """Service name -> the process id serving it (connected processes only)."""
        return {name: session.process_id for name, session in self._owners.items()}

    def unregister(self, session: Client, name: str) -> None:
        if self._owners.get(name) is session:
            del self._owners[name]
            self.coordinator.unregister_service(name)

    def heartbeat(self, session: Client, heartbeat: pb.Heartbeat) -> None:
        for health in heartbeat.services:
            if self._owners.get(health.name) is session:
                self.coordinator.set_service_health(health.name, health.healthy)

    def session_gone(self, session: Client) -> None:
        for name, owner in list(self._owners.items()):
            if owner is session:
                del self._owners[name]
                self.coordinator.set_service_health(name, False)

    def expire(self, now: float) -> None:
        """Mark unhealthy the services of processes silent for three heartbeat intervals."""
        limit = 3 * self.heartbeat_interval
        for name, owner in self._owners.items():
            if now - owner.last_heard > limit:
                self.coordinator.set_service_health(name, False)

    def _handler(self, session: Client, name: str) -> Callable[[Envelope], Awaitable[Envelope]]:
        router = self.router

        async def forward(envelope: Envelope) -> Envelope:
            future: asyncio.Future[tuple[pb.Status, bytes, str]] = (
                asyncio.get_running_loop().create_future()
            )

            def answer(status: pb.Status, data: bytes, text: str) -> None:
                if not future.done():
                    future.set_result((status, data, text))

            body = {"service": name, "envelope": envelope.to_dict()}
            headers = outgoing_headers(self.coordinator.commbus, None)
            if headers:
                body["headers"] = headers
            data = json.dumps(body).encode()
            # The coordinator bounds the attempt by the dispatch's deadline (it cancels
            # this await); the router's own timer only frees the entry after that.
            rid = router.request(session, "dispatch", name, data, _UNBOUNDED, answer)
            if not rid:
                why = session.closed_reason or "cannot take it"
                raise ConnectionError(f"process {session.process_id} went away ({why})")
            try:
                status, reply, text = await future
            finally:
                router.cancel(rid)  # cancelled (deadline, caller): the process stops too
            if status == pb.UNAVAILABLE:
                raise ConnectionError(text or f"the process serving {name!r} went away")
            if status != pb.OK:
                raise RuntimeError(text or f"dispatch to {name!r} failed ({status})")
            return Envelope.from_dict(json.loads(reply))

        return forward

    async def dispatch(self, request: pb.DispatchRequest) -> tuple[pb.Status, bytes, str]:
        """Run a ``Dispatch`` request through the hub's coordinator (the caller's trace
        context, from ``request.headers``, is current meanwhile). Its ``timeout_seconds``
        (30 s when unset) is capped at ``max_timeout``; a ``max_retries`` outside
        ``0..MAX_RETRIES`` is ``REFUSED``."""
        token = attach_trace(self.coordinator.commbus, dict(request.headers) or None)
        try:
            return await self._dispatch(request)
        finally:
            detach_trace(token)

    async def _dispatch(self, request: pb.DispatchRequest) -> tuple[pb.Status, bytes, str]:
        try:
            if not 0 <= request.max_retries <= MAX_RETRIES:
                raise ValueError(f"max_retries must be within 0..{MAX_RETRIES}")
            envelope = Envelope.from_dict(json.loads(request.envelope or b"{}"))
            target = DispatchTarget(
                service_name=request.service,
                method=request.method or "process",
                priority=SchedulingPriority(request.priority or "normal"),
                timeout_seconds=min(request.timeout_seconds or 30.0, self.max_timeout),
                max_retries=request.max_retries,
            )
        except (ValueError, TypeError) as exc:
            return pb.REFUSED, b"", f"bad dispatch request: {str(exc)[:300]}"
        except RecursionError:
            return pb.REFUSED, b"", "bad dispatch request: the envelope is nested too deep"
        result = await self.coordinator.dispatch(target, envelope)
        return pb.OK, json.dumps(result.to_dict()).encode(), ""
