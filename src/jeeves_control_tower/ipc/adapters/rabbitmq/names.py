"""AMQP names the transport uses: exchanges, queues and routing keys.

A routing key or queue name is at most 255 bytes, and ``*`` / ``#`` are wildcards in a
topic exchange's binding keys: a message type that is too long or holds a wildcard word is
named by a digest of itself instead (``h.{sha256}``), so a binding never matches more than
its own type. The inbound side checks every frame's type anyway (``wrong_destination``).
"""

from __future__ import annotations

import hashlib

__all__ = ["MAX_PRIORITY", "priority_of", "routing_key"]

#: ``x-max-priority`` of a dispatch queue (AMQP priorities 0..MAX_PRIORITY).
MAX_PRIORITY = 9

_LIMIT = 200  # bytes left for the type in a 255-byte name once the prefix is added

#: SchedulingPriority value -> AMQP message priority (higher is delivered first).
_PRIORITIES = {"realtime": 9, "high": 7, "normal": 5, "low": 3, "idle": 1}


def routing_key(message_type: str) -> str:
    """The routing key (and queue name suffix) of ``message_type`` (see the module)."""
    raw = message_type.encode()
    if len(raw) <= _LIMIT and not any(w in ("*", "#") for w in message_type.split(".")):
        return message_type
    return "h." + hashlib.sha256(raw).hexdigest()


def priority_of(value: object) -> int | None:
    """The AMQP priority of a ``SchedulingPriority`` value (``None``: not one)."""
    return _PRIORITIES.get(value) if isinstance(value, str) else None
