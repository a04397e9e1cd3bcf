"""Bridges from the bus to external message brokers.

The shared machinery is importable from here: the wire (:mod:`.wire`: codec, message
classes, batching, signing) and the :class:`BrokerTransport` base (:mod:`.base`, which
owns its inbound side, :mod:`.inbound`). Each transport lives in its own subpackage and is
imported only when used, so the optional client libraries (redis, nats-py) are never
needed by the core::

    from jeeves_control_tower.ipc.adapters.redis import RedisTransport
    transport = await RedisTransport.connect(bus, "redis://localhost:6379/0")

``RedisTransport``, ``NatsTransport``, ``RabbitMQTransport`` and ``GrpcTransport`` (of
:mod:`.grpc`, the hub's client) are also reachable as attributes of this package (imported
on first access).
"""

from typing import Any

from .base import BrokerTransport, TransportFeatures, redact_url
from .inbound import RemoteError
from .services import RemoteServices
from .wire import (
    Frame,
    MessageRegistry,
    Reply,
    WireCodec,
    WireError,
    default_registry,
    register_message,
)

__all__ = [
    "BrokerTransport",
    "Frame",
    "MessageRegistry",
    "RemoteError",
    "RemoteServices",
    "Reply",
    "TransportFeatures",
    "WireCodec",
    "WireError",
    "default_registry",
    "redact_url",
    "register_message",
]


def __getattr__(name: str) -> Any:
    if name == "RedisTransport":
        from .redis import RedisTransport

        return RedisTransport
    if name == "NatsTransport":
        from .nats import NatsTransport

        return NatsTransport
    if name == "GrpcTransport":
        from .grpc import GrpcTransport

        return GrpcTransport
    if name == "RabbitMQTransport":
        from .rabbitmq import RabbitMQTransport

        return RabbitMQTransport
    raise AttributeError(name)
