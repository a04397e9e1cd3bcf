"""What a transport guarantees, and small helpers every transport uses."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import urlsplit

__all__ = [
    "BrokerSettings",
    "TransportFeatures",
    "default_process_id",
    "redact_url",
    "server_of",
]


class BrokerSettings(NamedTuple):
    """What telemetry may say about where a message went or came from (plain data, no
    telemetry names): the messaging system, the broker-side destination (stream, channel,
    subject), the server's address and port, and the consumer group reading it."""

    system: str
    destination: str
    server_address: str | None
    server_port: int | None
    consumer_group: str | None


@dataclass(frozen=True)
class TransportFeatures:
    """What a transport guarantees (the conformance suite is parameterised by it)."""

    name: str
    cross_process: bool = True
    #: ``publish`` returns only after every subscriber ran (in-memory only).
    publish_awaits_subscribers: bool = False
    #: ``send`` survives the death of the handling process (redelivered to a live one).
    durable_send: bool = True
    #: a command sent while no process handles its type waits for one.
    send_waits_for_handler: bool = True
    #: a query handler's exception reaches the caller as the same type (else RemoteError).
    query_preserves_exception_type: bool = False


def redact_url(url: str) -> str:
    """``url`` without its credentials (``redis://:secret@host`` -> ``redis://***@host``)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "***" if "@" in url else url
    userinfo, at, host = rest.rpartition("@")
    return f"{scheme}://***@{host}" if at and userinfo else url


def server_of(url: str, default_port: int | None) -> tuple[str | None, int | None]:
    """``(host, port)`` of the first server in ``url`` (``default_port`` when it names
    none; ``(path, None)`` for a ``unix://`` socket; ``(None, None)`` when unparsable)."""
    first = url.split(",", 1)[0].strip()
    try:
        parts = urlsplit(first)
        if parts.scheme == "unix":
            return (parts.path or None), None
        host, port = parts.hostname, parts.port
    except ValueError:
        return None, None
    if not host:
        return None, None
    return host, port if port is not None else default_port


def default_process_id() -> str:
    """``host:pid:random``: names this process's consumers and reply inbox."""
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"
