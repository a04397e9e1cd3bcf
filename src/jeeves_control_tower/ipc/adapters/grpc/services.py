"""A process's services, served through the hub's coordinator.

``services = await GrpcServices(transport).start()``; ``await services.register(descriptor,
handler)`` registers a service with the hub: the hub's coordinator admits, orders (by
priority), bounds (``max_concurrent``), retries and times out every dispatch to it, from
any process, and routes each attempt here, where ``handler(envelope)`` runs (with the
caller's trace context current) and its envelope goes back. A handler's exception is the
attempt's error (the hub's retry policy applies). ``await services.dispatch(target,
envelope)`` dispatches to any service the hub knows (its own, or one registered by any
process), with the same guarantees.

Registrations are sent again after every reconnection; heartbeats (every interval the
hub announces) carry each service's health (``set_health``); a name another connected
process holds is refused by the hub (logged as a notice). Event-loop-thread only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from typing import Self

from ....types import DispatchTarget, Envelope, ServiceDescriptor
from ... import TransportError
from ..tracecontext import attach_trace, detach_trace, outgoing_headers
from . import commbus_pb2 as pb
from .transport import GrpcTransport

__all__ = ["GrpcServices"]

Handler = Callable[[Envelope], Awaitable[Envelope]]


class GrpcServices:
    def __init__(self, transport: GrpcTransport) -> None:
        self.transport = transport
        self._handlers: dict[str, Handler] = {}
        self._health: dict[str, bool] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> Self:
        self.transport.deliveries.dispatch = self._serve
        self._task = asyncio.get_running_loop().create_task(self._beat())
        return self

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for name in list(self._handlers):
            self.unregister(name)

    def register(self, descriptor: ServiceDescriptor, handler: Handler) -> None:
        """Serve ``descriptor.name`` with ``handler`` through the hub."""
        name = descriptor.name
        self._handlers[name] = handler
        self._health[name] = True
        message = pb.ClientMessage(
            register_service=pb.Service(
                name=name,
                service_type=descriptor.service_type,
                version=descriptor.version,
                capabilities=list(descriptor.capabilities),
                max_concurrent=descriptor.max_concurrent,
            )
        )
        self.transport.standing[f"service:{name}"] = message
        if self.transport.link.connected:
            self.transport.link.post(message)

    def unregister(self, name: str) -> None:
        self._handlers.pop(name, None)
        self._health.pop(name, None)
        self.transport.standing.pop(f"service:{name}", None)
        with contextlib.suppress(TransportError):
            link = self.transport.link
            if link.connected:
                link.post(pb.ClientMessage(unregister_service=pb.Interest(type=name)))

    def set_health(self, name: str, healthy: bool) -> None:
        """Report ``name`` healthy or not from the next heartbeat on."""
        if name in self._health:
            self._health[name] = healthy

    async def dispatch(self, target: DispatchTarget, envelope: Envelope) -> Envelope:
        """Dispatch through the hub's coordinator (see the module docstring); raises
        :class:`TransportError` when the hub cannot be reached."""
        link = self.transport.link
        request = pb.DispatchRequest(
            service=target.service_name,
            method=target.method,
            priority=target.priority.value,
            timeout_seconds=target.timeout_seconds,
            max_retries=target.max_retries,
            envelope=json.dumps(envelope.to_dict()).encode(),
            headers=outgoing_headers(self.transport.bus, None) or {},
        )
        rid = link.next_id()
        message = pb.ClientMessage(dispatch=pb.Request(id=rid, dispatch=request))
        result = await link.request(message, rid, target.timeout_seconds + 5.0)
        if result.status != pb.OK:
            raise TransportError(f"dispatch refused by the hub: {result.message}")
        return Envelope.from_dict(json.loads(result.data))

    async def _serve(self, delivery: pb.Delivery) -> pb.Response:
        handler = self._handlers.get(delivery.type)
        if handler is None:
            return pb.Response(
                status=pb.NO_HANDLER, message=f"{delivery.type!r} is not served here"
            )
        payload = json.loads(delivery.data)
        envelope = Envelope.from_dict(payload["envelope"])
        headers = payload.get("headers")
        token = attach_trace(self.transport.bus, headers if isinstance(headers, dict) else None)
        try:
            left = delivery.deadline - time.time() if delivery.deadline else None
            async with asyncio.timeout(left):
                result = await handler(envelope)
        except Exception as exc:
            text = f"{type(exc).__name__}: {str(exc)[:300]}"
            return pb.Response(status=pb.REJECT, message=text)
        finally:
            detach_trace(token)
        return pb.Response(status=pb.OK, data=json.dumps(result.to_dict()).encode())

    async def _beat(self) -> None:
        while True:
            link = self.transport.link
            interval = link.welcome.heartbeat_interval if link.welcome else 1.0
            if link.connected:
                health = [pb.ServiceHealth(name=n, healthy=h) for n, h in self._health.items()]
                link.post(pb.ClientMessage(heartbeat=pb.Heartbeat(services=health)))
            await asyncio.sleep(max(interval, 0.05))
