"""The AsyncAPI 3.0 document of a bus as deployed: every registered message type, its
pattern(s), and its channel on each configured transport.

``asyncapi_document(registry, transports)``; ``jeeves-ipc asyncapi`` and the HTTP face's
``/asyncapi.json`` print or serve it. Layout:

- ``servers``: one per transport, from its ``asyncapi_server()`` (the hook of
  :mod:`jeeves_control_tower.ipc.adapters.description`), keyed by protocol (``redis``,
  ``nats``, a suffix when two share one);
- ``channels``: one per (transport, pattern, type), id ``{server}.{pattern}.{type}``, its
  address and bindings from the transport's ``asyncapi_channel(pattern, type)``; with no
  transport, one in-process channel per (pattern, type) whose address is the routing type;
  a query's answer travels on a ``{server}.reply`` channel whose address is dynamic;
- ``operations``: the bus is every process's sender and receiver, so each channel has a
  ``send`` and a ``receive`` operation; a query's ``send`` carries ``reply`` (address from
  the frame's ``reply_to``);
- ``components``: a message per type (``payload``: the class's JSON Schema, exactly what
  the decoder accepts; ``headers``: the W3C trace context a frame carries) and the schemas.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from ..ipc.adapters.description import (
    ChannelDescription,
    ServerDescription,
    default_channel,
    default_server,
)
from ..ipc.adapters.wire import MessageRegistry
from .catalog import catalog
from .schema import JsonSchema

__all__ = ["asyncapi_document"]

_ID = re.compile(r"[^A-Za-z0-9_.-]")
_SCHEMAS = "#/components/schemas/"
_HEADERS: JsonSchema = {
    "type": "object",
    "description": "Frame headers: the W3C trace context of the producer (when traced).",
    "properties": {
        "traceparent": {"type": "string"},
        "tracestate": {"type": "string"},
        "baggage": {"type": "string"},
    },
}
_VERB = {"publish": "Publish", "send": "Send", "query": "Query"}


def asyncapi_document(
    registry: MessageRegistry | None = None,
    transports: Sequence[Any] = (),
    *,
    types: Sequence[str] | None = None,
    title: str = "jeeves bus",
    version: str = "1",
    description: str = "",
) -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document (a JSON-safe dict) of ``registry``'s ``types`` (default:
    all but the built-ins) on ``transports`` (none: the in-process bus)."""
    schemas: dict[str, JsonSchema] = {"FrameHeaders": _HEADERS}
    contracts = catalog(registry, types=types, defs=schemas, ref_prefix=_SCHEMAS)
    messages: dict[str, Any] = {
        "Reply": {
            "name": "Reply",
            "title": "Query reply",
            "summary": "The handler's result, or the error it raised, for one query.",
            "contentType": "application/json",
            "payload": {},
        }
    }
    ids: dict[str, str] = {}
    for contract in contracts:
        schemas[contract.name] = contract.schema
        message_id = ids[contract.name] = _unique(_id(contract.name), messages)
        messages[message_id] = {
            "name": contract.name,
            "title": contract.name,
            "contentType": "application/json",
            "headers": {"$ref": _SCHEMAS + "FrameHeaders"},
            "payload": {"$ref": _SCHEMAS + contract.name},
        }
    doc: dict[str, Any] = {
        "asyncapi": "3.0.0",
        "info": {
            "title": title,
            "version": version,
            "description": description
            or "Messages of the jeeves bus: each travels inside a jeeves wire frame"
            " (docs/adapters.md) whose payload is described here.",
        },
        "defaultContentType": "application/json",
    }
    servers: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    described: list[tuple[str | None, Any]] = [
        (_server_id(_server(t), servers), t) for t in transports
    ] or [(None, None)]
    for server_id, transport in described:
        reply_id = None
        for contract in contracts:
            message_id = ids[contract.name]
            for pattern in contract.patterns:
                channel = _channel(transport, pattern, contract.name)
                channel_id = ".".join(p for p in (server_id, pattern, message_id) if p)
                entry: dict[str, Any] = {
                    "address": channel.address,
                    "title": f"{pattern} {contract.name}",
                    "messages": {message_id: {"$ref": f"#/components/messages/{message_id}"}},
                }
                if channel.description:
                    entry["description"] = channel.description
                if server_id is not None:
                    entry["servers"] = [{"$ref": f"#/servers/{server_id}"}]
                if channel.channel_bindings:
                    entry["bindings"] = channel.channel_bindings
                channels[channel_id] = entry
                if pattern == "query" and reply_id is None:
                    reply_id = ".".join(p for p in (server_id, "reply") if p)
                    channels[reply_id] = _reply_channel(server_id)
                for action in ("send", "receive"):
                    operations[f"{channel_id}.{action}"] = _operation(
                        action, pattern, contract.name, channel_id, message_id, channel, reply_id
                    )
    if servers:
        doc["servers"] = servers
    doc["channels"] = channels
    doc["operations"] = operations
    doc["components"] = {"schemas": schemas, "messages": messages}
    return doc


def _server(transport: Any) -> ServerDescription:
    hook = getattr(transport, "asyncapi_server", None)
    return hook() if callable(hook) else default_server(transport)


def _channel(transport: Any, pattern: str, name: str) -> ChannelDescription:
    if transport is None:
        return ChannelDescription(
            name,
            "In-process (InMemoryCommBus): the routing type is the address.",
        )
    hook = getattr(transport, "asyncapi_channel", None)
    return hook(pattern, name) if callable(hook) else default_channel(transport, pattern, name)


def _server_id(server: ServerDescription, servers: dict[str, Any]) -> str:
    key = _unique(_id(server.protocol) or "server", servers)
    entry: dict[str, Any] = {"host": server.host, "protocol": server.protocol}
    if server.pathname:
        entry["pathname"] = server.pathname
    if server.description:
        entry["description"] = server.description
    if server.bindings:
        entry["bindings"] = server.bindings
    servers[key] = entry
    return key


def _reply_channel(server_id: str | None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "address": None,
        "title": "query replies",
        "description": "Each asker's own reply address, named by the query frame's reply_to.",
        "messages": {"Reply": {"$ref": "#/components/messages/Reply"}},
    }
    if server_id is not None:
        entry["servers"] = [{"$ref": f"#/servers/{server_id}"}]
    return entry


def _operation(
    action: str,
    pattern: str,
    name: str,
    channel_id: str,
    message_id: str,
    channel: ChannelDescription,
    reply_id: str | None,
) -> dict[str, Any]:
    ref = _pointer(channel_id)
    op: dict[str, Any] = {
        "action": action,
        "channel": {"$ref": f"#/channels/{ref}"},
        "title": f"{_VERB[pattern]} {name}" + (" (handled here)" if action == "receive" else ""),
        "messages": [{"$ref": f"#/channels/{ref}/messages/{message_id}"}],
    }
    if channel.operation_bindings:
        op["bindings"] = channel.operation_bindings
    if pattern == "query" and reply_id is not None:
        op["reply"] = {
            "channel": {"$ref": f"#/channels/{_pointer(reply_id)}"},
            "messages": [{"$ref": f"#/channels/{_pointer(reply_id)}/messages/Reply"}],
        }
        if action == "send":
            op["reply"]["address"] = {
                "location": "$message.header#/reply_to",
                "description": "the asker's reply address, carried by the query frame",
            }
    return op


def _id(name: str) -> str:
    """An AsyncAPI component/channel id for ``name`` (``[A-Za-z0-9_.-]``; others ``_``)."""
    return _ID.sub("_", name)


def _unique(key: str, taken: dict[str, Any]) -> str:
    out, n = key, 1
    while out in taken:
        n += 1
        out = f"{key}_{n}"
    return out


def _pointer(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")
