"""How NatsTransport describes its destinations to AsyncAPI (:mod:`..description`)."""

from __future__ import annotations

from typing import Any

from ..description import ChannelDescription
from .subjects import token

__all__ = ["nats_channel"]


def nats_channel(
    transport: Any, pattern: str, message_type: str, responders: str
) -> ChannelDescription:
    """The subject of ``(pattern, message_type)`` on a NatsTransport: a core subject for
    events, a JetStream work-queue stream subject for commands, request/reply with a
    queue group for queries (the ``nats`` operation binding's ``queue``)."""
    address = transport.destination(pattern, message_type)
    if pattern == "publish":
        return ChannelDescription(
            address,
            "Core NATS subject: every process subscribed now; at-most-once; in order per"
            " producer (events of one loop iteration may travel as one batch frame).",
        )
    if pattern == "send":
        durable = f"cmd_{token(message_type)}"
        return ChannelDescription(
            address,
            f"JetStream work-queue stream {transport.stream!r}, durable pull consumer"
            f" {durable!r}: exactly one process; at-least-once (explicit ack, redelivery"
            f" after {transport.ack_wait:g} s, Nats-Msg-Id dedupe).",
            channel_bindings={"nats": {"stream": transport.stream, "durable": durable}},
        )
    return ChannelDescription(
        address,
        f"Request/reply; one process of the queue group {responders!r} answers on the"
        " asker's inbox.",
        operation_bindings={"nats": {"queue": responders, "bindingVersion": "0.1.0"}},
    )
