"""How RabbitMQTransport describes its broker layout to AsyncAPI (:mod:`..description`).

The ``amqp`` bindings (version 0.3.0) carry the real names of :mod:`.topology`: an event
channel is a routing key on the ``{prefix}.events`` topic exchange (``is: routingKey``);
a command or query channel is a queue reached through the default exchange, so its
address (the routing key) is the queue's name (``is: queue``). What AMQP bindings cannot
say (quorum queue, dead-letter exchange, priorities, direct reply-to) is in the
description.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

from ..description import ChannelDescription, ServerDescription
from ..features import redact_url, server_of
from .names import MAX_PRIORITY, routing_key
from .queries import REPLY_TO

__all__ = ["rabbitmq_channel", "rabbitmq_server"]

_VERSION = "0.3.0"


def vhost_of(url: str) -> str:
    """The virtual host named by an ``amqp://`` URL (``/`` when the path is empty)."""
    path = urlsplit(url).path
    return unquote(path[1:]) if len(path) > 1 else "/"


def rabbitmq_server(transport: Any) -> ServerDescription:
    """The broker: ``amqp`` or ``amqps``, host with port, the virtual host as pathname;
    credentials never included."""
    amqps = str(transport.url).startswith("amqps://")
    host, port = server_of(transport.url, 5671 if amqps else 5672)
    vhost = vhost_of(transport.url)
    return ServerDescription(
        host=f"{host}:{port}" if host and port else (host or "localhost"),
        protocol="amqps" if amqps else "amqp",
        pathname=None if vhost == "/" else f"/{vhost}",
        description=f"RabbitMQ {redact_url(transport.url)}",
    )


def rabbitmq_channel(transport: Any, pattern: str, message_type: str) -> ChannelDescription:
    """The exchange/queue of ``(pattern, message_type)`` on a RabbitMQTransport, with its
    ``amqp`` channel and operation bindings and its delivery guarantee."""
    topology = transport.topology
    vhost = vhost_of(transport.url)
    key = routing_key(message_type)
    if pattern == "publish":
        return ChannelDescription(
            key,
            f"Routing key {key!r} on the durable topic exchange {topology.events_exchange!r};"
            f" each subscribed process binds its exclusive auto-delete queue"
            f" ({topology.prefix}.evt.<process>): every process subscribed now; at-most-once"
            " (transient, no ack); in order per producer and type (events of one loop"
            " iteration may travel as one batch frame).",
            channel_bindings={
                "amqp": {
                    "is": "routingKey",
                    "exchange": {
                        "name": topology.events_exchange,
                        "type": "topic",
                        "durable": True,
                        "autoDelete": False,
                        "vhost": vhost,
                    },
                    "bindingVersion": _VERSION,
                }
            },
            operation_bindings={
                "amqp": {"cc": [key], "deliveryMode": 1, "ack": False, "bindingVersion": _VERSION}
            },
        )
    if pattern == "send":
        queue = topology.command_queue(message_type)
        return ChannelDescription(
            queue,
            f"Durable quorum queue {queue!r} (default exchange): exactly one process;"
            " at-least-once (persistent, publisher confirms, manual ack after the handler;"
            " redelivered when a consumer dies); dead-lettered to the fanout exchange and"
            f" queue {transport.dead_letters!r} after {transport.max_deliveries} deliveries.",
            channel_bindings={
                "amqp": {
                    "is": "queue",
                    "queue": {
                        "name": queue,
                        "durable": True,
                        "exclusive": False,
                        "autoDelete": False,
                        "vhost": vhost,
                    },
                    "x-arguments": {"x-queue-type": "quorum"},
                    "x-dead-letter-exchange": transport.dead_letters,
                    "bindingVersion": _VERSION,
                }
            },
            operation_bindings={
                "amqp": {
                    "deliveryMode": 2,
                    "mandatory": True,
                    "ack": True,
                    "bindingVersion": _VERSION,
                }
            },
        )
    queue = topology.query_queue(message_type)
    arguments: dict[str, Any] = {}
    priority = ""
    if topology.prioritised(message_type):
        arguments["x-max-priority"] = MAX_PRIORITY
        priority = (
            f" A priority queue (x-max-priority {MAX_PRIORITY}): the dispatch's"
            " SchedulingPriority is the message priority (realtime 9 ... idle 1)."
        )
    binding: dict[str, Any] = {
        "is": "queue",
        "queue": {
            "name": queue,
            "durable": False,
            "exclusive": False,
            "autoDelete": True,
            "vhost": vhost,
        },
        "bindingVersion": _VERSION,
    }
    if arguments:
        binding["x-arguments"] = arguments
    return ChannelDescription(
        queue,
        f"Auto-delete queue {queue!r} (exists while a responder consumes it): one process"
        " answers, on the asker's direct reply-to pseudo-queue"
        f" ({REPLY_TO}); published mandatory with the caller's timeout as expiration:"
        " no responder fails at once, a late answer is dropped." + priority,
        channel_bindings={"amqp": binding},
        operation_bindings={
            "amqp": {"deliveryMode": 1, "mandatory": True, "ack": True, "bindingVersion": _VERSION}
        },
    )
