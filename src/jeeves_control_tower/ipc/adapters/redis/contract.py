"""How RedisTransport describes its destinations to AsyncAPI (:mod:`..description`)."""

from __future__ import annotations

from typing import Any

from ..description import ChannelDescription
from .streams import GROUP

__all__ = ["redis_channel"]


def redis_channel(transport: Any, pattern: str, message_type: str) -> ChannelDescription:
    """The channel of ``(pattern, message_type)`` on a RedisTransport: a Pub/Sub channel
    for events, a stream read by one consumer group for commands, a list answered on a
    per-process reply channel for queries. The ``redis`` bindings (free-form in AsyncAPI
    3.0) name the Redis commands used, as FastStream's do."""
    address = transport.destination(pattern, message_type)
    if pattern == "publish":
        return ChannelDescription(
            address,
            "Pub/Sub channel: every process subscribed now; at-most-once; in order per producer.",
            channel_bindings={"redis": {"channel": address, "method": "subscribe"}},
        )
    if pattern == "send":
        return ChannelDescription(
            address,
            f"Stream read by the consumer group {GROUP!r}: exactly one process; at-least-once"
            f" (XACK after the handler; unacknowledged entries reclaimed after"
            f" {transport.min_idle:g} s, dead-lettered to {transport.dead_letters!r} after"
            f" {transport.max_deliveries} deliveries).",
            channel_bindings={"redis": {"stream": address, "group": GROUP, "method": "xreadgroup"}},
        )
    return ChannelDescription(
        address,
        "List of pending queries (LPUSH by the asker after checking a responder is"
        " subscribed; BRPOP by one responder); the answer is published on the asker's"
        f" reply channel {transport.prefix}rep:<process>.<random>.",
        channel_bindings={"redis": {"list": address, "method": "brpop"}},
    )
