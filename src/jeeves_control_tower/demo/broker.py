"""The demo over a broker: ``jeeves-ipc demo --transport URL``.

:func:`connect_demo` attaches a demo system's bus to a transport (``redis://``,
``rediss://``, ``nats://``, ``tls://``, ``amqp://``, ``amqps://``, or ``grpc://host:port``
/ ``grpcs://`` for a running gRPC hub, ``jeeves-ipc hub``): every publish, send and query
of the demo then travels over the broker, and a :class:`RemoteServices` beside the
coordinator heartbeats the demo's services, so several demo processes on one broker (same
``prefix``) share the work and list each other at ``/api/peers``; a service served only by
another process is dispatched to it. The transport's metrics (``commbus_wire_*``,
``commbus_transport_*`` with ``transport="redis"|"nats"|"rabbitmq"|"grpc"``) go to the
demo's registry, so its ``/metrics`` (and the Grafana dashboard's transport panels) show
them. The URL's credentials are never printed or logged (transports redact them).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..ipc.adapters import MessageRegistry
from ..observability import ObservabilityServer
from ..types import LoggerProtocol
from . import messages

if TYPE_CHECKING:
    from ..ipc.adapters.base import BrokerTransport
    from ..ipc.adapters.services import RemoteServices
    from .runner import DemoSystem

__all__ = ["DEMO_REGISTRY", "SCHEMES", "BrokerLink", "connect_demo"]

#: The demo's message classes, as the wire codec reads them.
DEMO_REGISTRY = MessageRegistry()
for _name in messages.__all__:
    DEMO_REGISTRY.register(getattr(messages, _name))

#: The URL schemes :func:`connect_demo` takes.
SCHEMES = ("redis", "rediss", "nats", "tls", "amqp", "amqps", "grpc", "grpcs")


@dataclass
class BrokerLink:
    """A demo system's transport and the :class:`RemoteServices` beside it."""

    transport: BrokerTransport
    remote: RemoteServices

    async def close(self) -> None:
        """Say goodbye, then disconnect (idempotent)."""
        try:
            await self.remote.close()
        finally:
            await self.transport.close()


def _transport_class(scheme: str) -> Callable[..., BrokerTransport]:
    """The transport class of ``scheme`` (``cls(bus, url, **options)``)."""
    if scheme in ("redis", "rediss"):
        from ..ipc.adapters.redis import RedisTransport

        return RedisTransport
    if scheme in ("nats", "tls"):
        from ..ipc.adapters.nats import NatsTransport

        return NatsTransport
    if scheme in ("amqp", "amqps"):
        from ..ipc.adapters.rabbitmq import RabbitMQTransport

        return RabbitMQTransport
    if scheme in ("grpc", "grpcs"):
        from ..ipc.adapters.grpc import GrpcTransport

        return GrpcTransport
    raise ValueError(f"no demo transport for {scheme}:// (one of {', '.join(SCHEMES)})")


async def connect_demo(
    system: DemoSystem,
    url: str,
    *,
    server: ObservabilityServer | None = None,
    prefix: str | None = None,
    logger: LoggerProtocol | None = None,
) -> BrokerLink:
    """Connect ``system``'s bus to the transport of ``url`` and start its
    :class:`RemoteServices` (advertising ``server``'s URL to the fleet when given).
    ``prefix`` is passed as is (Redis wants its separator, ``demo:``; NATS one token).
    Raises :class:`~jeeves_control_tower.ipc.TransportError` (credentials redacted) when
    the broker cannot be reached, ``ValueError`` for an unknown scheme."""
    from ..ipc.adapters.services import RemoteServices
    from ..observability.fleet import advertise_endpoint

    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    cls = _transport_class(scheme)
    options: dict[str, Any] = {
        "registry": DEMO_REGISTRY,
        "metrics_registry": system.registry,
        "logger": logger,
    }
    if prefix is not None:
        options["prefix"] = prefix
    target = url
    if scheme in ("grpc", "grpcs"):
        target = url.split("://", 1)[1].rstrip("/")
        options["tls"] = scheme == "grpcs"
    transport = await cls(system.bus, target, **options).start()
    try:
        remote = await RemoteServices(system.coordinator, transport, logger=logger).start()
    except BaseException:
        await transport.close()
        raise
    if server is not None:
        with contextlib.suppress(ValueError):  # an address not worth advertising
            advertise_endpoint(server, remote)
    return BrokerLink(transport, remote)
