"""How a transport describes itself to a contract (AsyncAPI): the hook every transport
implements, as plain data.

A transport (or anything else that carries bus messages: the HTTP face) offers two
methods, the :class:`Described` protocol:

- ``asyncapi_server() -> ServerDescription``: where it connects (host with port, protocol,
  optional pathname, credentials never included);
- ``asyncapi_channel(pattern, message_type) -> ChannelDescription``: the broker-side
  address messages of that type and pattern (``publish``, ``send``, ``query``) travel on,
  a short description of the delivery guarantee, and the AsyncAPI bindings keyed by
  protocol (``{"nats": {"queue": "responders"}}``) for the channel and its operations.

A :class:`~.base.BrokerTransport` without the methods is described from what it already
has (:func:`default_channel`: ``destination(pattern, type)``, ``system`` and ``url``), so
a new transport is listed from its first line of code; implementing the hook adds the
bindings and the guarantees. Nothing here imports a broker client.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from .features import redact_url, server_of

__all__ = [
    "ChannelDescription",
    "Described",
    "ServerDescription",
    "default_channel",
    "default_server",
]


@dataclass(frozen=True)
class ServerDescription:
    """An AsyncAPI server: ``host`` (``name:port``), ``protocol`` (``redis``, ``nats``,
    ``amqp``, ``http``...), optional ``pathname`` and ``description``."""

    host: str
    protocol: str
    pathname: str | None = None
    description: str = ""
    bindings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ChannelDescription:
    """Where one (pattern, type) travels: ``address`` (``None``: dynamic, e.g. a reply
    inbox), ``description``, and the AsyncAPI ``channel_bindings`` and
    ``operation_bindings`` keyed by protocol."""

    address: str | None
    description: str = ""
    channel_bindings: dict[str, Any] = field(default_factory=dict)
    operation_bindings: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Described(Protocol):
    def asyncapi_server(self) -> ServerDescription: ...

    def asyncapi_channel(self, pattern: str, message_type: str) -> ChannelDescription: ...


def default_server(transport: Any) -> ServerDescription:
    """The server of a transport with ``system``, ``url`` and ``default_port``."""
    system = str(getattr(transport, "system", "broker"))
    url = str(getattr(transport, "url", ""))
    host, port = server_of(url, getattr(transport, "default_port", None))
    shown = f"{host}:{port}" if host and port else (host or "localhost")
    return ServerDescription(host=shown, protocol=system, description=redact_url(url))


def default_channel(transport: Any, pattern: str, message_type: str) -> ChannelDescription:
    """The channel of a transport with ``destination(pattern, type)``."""
    return ChannelDescription(address=transport.destination(pattern, message_type))
