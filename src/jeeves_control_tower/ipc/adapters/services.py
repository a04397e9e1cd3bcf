"""The service registry across processes, and dispatch to a service in another process.

Every process runs one :class:`RemoteServices` beside its coordinator and transport:

- **Heartbeats.** Every ``interval`` seconds it publishes one heartbeat event
  (``jeeves.services.heartbeat``, outside the bus's middleware) listing the services
  that have a *local* handler in this process, with their load, capacity, queue depth
  and health. A graceful :meth:`close` stops serving, then publishes a last heartbeat
  saying goodbye.
- **Mirrors.** A service heard of from another process is registered in the local
  coordinator as a mirror descriptor (``metadata["remote"] is True``, ``metadata
  ["processes"]`` the live processes serving it), so ``list_services`` shows it with its
  load (``current_load``: the sum over those processes) and health. A process is live
  while its heartbeats arrive within ``ttl`` (default ``3 * interval``, on the
  receiver's clock); a mirror with no live process turns unhealthy, and healthy again
  when heartbeats resume; after ``forget_after`` seconds without any it is unregistered.
  A local service always wins over a remote one of the same name.
- **Remote dispatch.** The coordinator calls :meth:`dispatch` for a service without a
  local handler. It is sent as a query (``jeeves.dispatch.{service}``, trace context
  included) to one of the processes serving it, which runs its *own* coordinator's
  ``dispatch`` with the time left: admission, priority, retries, deadline and the
  termination reasons are those of the serving process, and the envelope comes back.
  If no process answers in time the envelope is terminated here with the reason
  (``timeout``, ``no_handler``, ``error``), exactly as a local dispatch would be.
- **Fleet.** After :meth:`advertise` the heartbeats carry ``endpoint``, the public URL of
  this process's observability endpoint; :attr:`peers` (a :class:`~.peers.PeerTable`)
  lists every process heard, with the URL it advertises (validated on receipt; heartbeats
  without the field, from older peers, still count).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any, Self

from ...logging import ensure_logger
from ...types import DispatchTarget, Envelope, ServiceDescriptor
from .. import CommBusCoordinator, DynamicEvent, DynamicQuery, NoHandlerError
from .base import BrokerTransport
from .peers import PeerTable, valid_endpoint

__all__ = ["DISPATCH_PREFIX", "HEARTBEAT", "RemoteServices"]

HEARTBEAT = "jeeves.services.heartbeat"
DISPATCH_PREFIX = "jeeves.dispatch."
#: The longest :meth:`RemoteServices.close` waits for the broker to stop handing this
#: process dispatches before it says goodbye anyway (seconds).
UNSERVE_WAIT = 5.0


@dataclass
class _Seen:
    at: float
    info: dict[str, Any]


@dataclass
class _Mirror:
    processes: dict[str, _Seen] = field(default_factory=dict)
    dead_since: float | None = None


class RemoteServices:
    """See the module docstring. ``await RemoteServices(coordinator, transport).start()``."""

    def __init__(
        self,
        coordinator: CommBusCoordinator,
        transport: BrokerTransport,
        *,
        interval: float = 1.0,
        ttl: float | None = None,
        forget_after: float | None = None,
        grace: float = 0.5,
        logger: Any = None,
    ) -> None:
        if interval <= 0 or (ttl is not None and ttl <= interval):
            raise ValueError("interval > 0 and ttl > interval are required")
        self.coordinator = coordinator
        self.transport = transport
        self.interval = float(interval)
        self.ttl = float(ttl) if ttl is not None else 3.0 * interval
        self.forget_after = float(forget_after) if forget_after is not None else 30.0 * interval
        self.grace = grace
        self.logger = ensure_logger(logger, "jeeves_control_tower.adapters.services")
        self._mirrors: dict[str, _Mirror] = {}
        self._served: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self.endpoint: str | None = None
        self.peers = PeerTable(self.ttl, self.forget_after)

    def advertise(self, endpoint: str | None) -> str | None:
        """Carry ``endpoint`` (an http(s) URL, see :func:`~.peers.valid_endpoint`) in the
        heartbeats from the next one on, and return it as sent; ``None`` stops advertising."""
        url = None if endpoint is None else valid_endpoint(endpoint)
        if endpoint is not None and url is None:
            raise ValueError(f"not an advertisable http(s) URL: {endpoint[:100]!r}")
        self.endpoint = url
        return url

    async def start(self) -> Self:
        self.transport.add_internal_subscriber(HEARTBEAT, self._on_heartbeat)
        self.coordinator.attach_remote(self)
        self._serve_local()
        await self.transport.sync()
        await self._beat()
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def close(self) -> None:
        """Stop serving remote dispatches, then say goodbye, and forget the mirrors' feed.

        The order matters: the goodbye goes out only once the broker no longer hands this
        process dispatches (waited for up to :data:`UNSERVE_WAIT` seconds), so a peer that
        dispatches after hearing it gets ``no_handler`` at once, never a query lost on the
        way to a responder that is going (RabbitMQ drops a message routed to an
        auto-delete queue whose last consumer is being cancelled, and confirms it). A
        dispatch this process had already taken still runs and is answered."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for name in self._served:
            self.transport.remove_internal("query", DISPATCH_PREFIX + name)
        with contextlib.suppress(Exception):  # shielded: a refresh cut short could leave a
            # consumer on the broker that the transport believes gone; past the wait it ends
            # in the background
            await asyncio.wait_for(asyncio.shield(self.transport.sync()), UNSERVE_WAIT)
        with contextlib.suppress(Exception):
            await self._beat(bye=True)
        self.transport.remove_internal("publish", HEARTBEAT)
        if self.coordinator.remote is self:
            self.coordinator.detach_remote()

    async def announce(self) -> None:
        """Publish a heartbeat now (after registering a service, say)."""
        self._serve_local()
        await self.transport.sync()
        await self._beat()

    def is_mirror(self, name: str) -> bool:
        service = self.coordinator.get_service(name)
        return service is not None and service.metadata.get("remote") is True

    # ------------------------------------------------------------------ heartbeats out

    def _local_services(self) -> list[ServiceDescriptor]:
        c = self.coordinator
        return [
            s
            for s in c.list_services(healthy_only=False)
            if c.has_local_handler(s.name) and s.metadata.get("remote") is not True
        ]

    def _serve_local(self) -> None:
        for service in self._local_services():
            if service.name not in self._served:
                self._served.add(service.name)
                self.transport.add_internal_handler(DISPATCH_PREFIX + service.name, self._serve)

    async def _beat(self, bye: bool = False) -> None:
        services = [] if bye else [self._describe(s) for s in self._local_services()]
        payload = {
            "process": self.transport.process_id,
            "interval": self.interval,
            "bye": bye,
            "services": services,
        }
        if self.endpoint is not None:
            payload["endpoint"] = self.endpoint
        self.peers.local(self.transport.process_id, self.endpoint, [s["name"] for s in services])
        await self.transport.publish_internal(DynamicEvent(HEARTBEAT, payload))

    def _describe(self, service: ServiceDescriptor) -> dict[str, Any]:
        info = service.to_dict()
        info["queue_depth"] = self.coordinator.queue_depth(service.name)
        info["metadata"] = {k: v for k, v in info["metadata"].items() if _json_scalar(v)}
        return info

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                self._serve_local()
                await self._beat()
            except Exception as exc:  # the broker is down: the loop carries on
                self.logger.warning("heartbeat_failed", error_type=type(exc).__name__)
            self._expire(asyncio.get_running_loop().time())

    # ------------------------------------------------------------------ heartbeats in

    async def _on_heartbeat(self, event: Any) -> None:
        payload = getattr(event, "payload", None)
        if not isinstance(payload, dict):
            return
        process, services = payload.get("process"), payload.get("services")
        if not isinstance(process, str) or process == self.transport.process_id:
            return
        if not isinstance(services, list):
            return
        self.peers.heard(process, payload)
        now = asyncio.get_running_loop().time()
        listed = set()
        for info in services:
            if isinstance(info, dict) and isinstance(info.get("name"), str):
                try:
                    self._seen(process, info, now)
                    listed.add(info["name"])
                except (ValueError, TypeError) as exc:
                    self.logger.warning("heartbeat_rejected", process=process, error=str(exc))
        for name, mirror in self._mirrors.items():  # services this process no longer serves
            if name not in listed and mirror.processes.pop(process, None) is not None:
                self._update(name, mirror, now)

    def _seen(self, process: str, info: dict[str, Any], now: float) -> None:
        name = info["name"]
        current = self.coordinator.get_service(name)
        if current is not None and current.metadata.get("remote") is not True:
            return  # a local service of that name wins
        mirror = self._mirrors.setdefault(name, _Mirror())
        mirror.processes[process] = _Seen(now, info)
        if current is None:
            descriptor = ServiceDescriptor(
                name=name,
                service_type=str(info.get("service_type") or "remote"),
                version=str(info.get("version") or "1.0.0"),
                capabilities=[str(c) for c in info.get("capabilities") or []],
                max_concurrent=_positive_int(info.get("max_concurrent"), 10),
                metadata={"remote": True},
            )
            self.coordinator.register_service(descriptor)
            self.logger.info("remote_service_discovered", service=name, process=process)
        self._update(name, mirror, now)

    def _update(self, name: str, mirror: _Mirror, now: float) -> None:
        service = self.coordinator.get_service(name)
        if service is None or service.metadata.get("remote") is not True:
            return
        live = {p: s.info for p, s in mirror.processes.items()}
        healthy = any(bool(i.get("healthy", True)) for i in live.values())
        queue_depth = sum(_positive_int(i.get("queue_depth"), 0) for i in live.values())
        service.metadata.update(
            processes=sorted(live),
            queue_depth=queue_depth,
            last_heartbeat=max((s.at for s in mirror.processes.values()), default=None),
        )
        mirror.dead_since = None if live else (mirror.dead_since or now)
        was_healthy = service.healthy
        self.coordinator.update_remote_service(
            name,
            current_load=sum(_positive_int(i.get("current_load"), 0) for i in live.values()),
            max_concurrent=sum(_positive_int(i.get("max_concurrent"), 1) for i in live.values())
            if live
            else service.max_concurrent,
            queue_depth=queue_depth,
            healthy=healthy,
        )
        if was_healthy != healthy:
            self.logger.info("remote_service_health_changed", service=name, healthy=healthy)

    def _expire(self, now: float) -> None:
        for name, mirror in list(self._mirrors.items()):
            stale = [p for p, s in mirror.processes.items() if now - s.at > self.ttl]
            for process in stale:
                del mirror.processes[process]
                self.logger.warning("remote_service_silent", service=name, process=process)
            if stale:
                self._update(name, mirror, now)
            if mirror.dead_since is not None and now - mirror.dead_since > self.forget_after:
                del self._mirrors[name]
                if self.is_mirror(name):
                    self.coordinator.unregister_service(name)

    # ------------------------------------------------------------------ dispatch

    async def dispatch(
        self, target: DispatchTarget, envelope: Envelope, deadline: float
    ) -> Envelope:
        """The coordinator's :class:`RemoteDispatcher`: see the module docstring."""
        name = target.service_name
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            return _terminate(envelope, target, "timeout", f"service {name!r} timed out")
        query = DynamicQuery(
            DISPATCH_PREFIX + name,
            {
                "target": {
                    "service_name": name,
                    "method": target.method,
                    "priority": target.priority.value,
                    "timeout_seconds": remaining,
                    "max_retries": target.max_retries,
                },
                "envelope": envelope.to_dict(),
            },
            service_name=name,
        )
        try:
            result = await self.transport.query_internal(query, timeout=remaining + self.grace)
            return Envelope.from_dict(result)
        except TimeoutError:
            reason = f"service {name!r} timed out after {target.timeout_seconds}s (no remote reply)"
            return _terminate(envelope, target, "timeout", reason)
        except NoHandlerError:
            reason = f"service {name!r} has no live handler in any process"
            return _terminate(envelope, target, "no_handler", reason)
        except Exception as exc:
            reason = f"service {name!r} remote dispatch failed: {type(exc).__name__}: {exc}"
            return _terminate(envelope, target, "error", reason)

    async def _serve(self, query: Any) -> dict[str, Any]:
        payload = getattr(query, "payload", None)
        if not isinstance(payload, dict):
            raise ValueError("a dispatch request needs a payload object")
        t, env = payload.get("target"), payload.get("envelope")
        if not isinstance(t, dict) or not isinstance(env, dict):
            raise ValueError("a dispatch request needs 'target' and 'envelope' objects")
        target = DispatchTarget(
            service_name=t.get("service_name"),  # type: ignore[arg-type]
            method=t.get("method"),  # type: ignore[arg-type]
            priority=t.get("priority", "normal"),
            timeout_seconds=t.get("timeout_seconds"),  # type: ignore[arg-type]
            max_retries=t.get("max_retries", 0),
        )
        if DISPATCH_PREFIX + target.service_name != getattr(query, "message_type", None):
            raise ValueError("dispatch request addressed to another service")
        if not self.coordinator.has_local_handler(target.service_name):
            raise NoHandlerError(f"service {target.service_name!r} has no handler here")
        result = await self.coordinator.dispatch(target, Envelope.from_dict(env))
        return result.to_dict()


def _terminate(envelope: Envelope, target: DispatchTarget, outcome: str, reason: str) -> Envelope:
    envelope.terminate(reason)
    envelope.errors.append(
        {
            "service": target.service_name,
            "method": target.method,
            "outcome": outcome,
            "reason": reason,
        }
    )
    envelope.processing_history.append(
        {
            "service": target.service_name,
            "method": target.method,
            "attempt": 1,
            "outcome": outcome,
            "remote": True,
        }
    )
    return envelope


def _positive_int(value: Any, default: int) -> int:
    return value if type(value) is int and value >= 0 else default


def _json_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))
