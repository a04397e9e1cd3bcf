"""``jeeves-ipc asyncapi``: print the AsyncAPI 3.0 document of a bus as deployed.

::

    jeeves-ipc asyncapi --messages myapp.messages \\
        --transport redis://cache:6379/0 --transport nats://nats:4222 > asyncapi.json

``--messages`` imports modules that register message classes (``register_message``, in
the default registry) or names a ``MessageRegistry`` as ``module:attribute``; each
``--transport`` URL is described (``redis://``, ``rediss://``, ``nats://``, ``tls://``,
``amqp://``, ``amqps://``, ``grpc://host:port`` (``grpcs://`` with TLS) for a gRPC hub,
and ``http(s)://`` for an HTTP face's base URL) without connecting to it. No transport:
the in-process bus.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import Any

from .._specs import load_spec

__all__ = ["add_asyncapi_command", "describe_url", "load_registry"]


def add_asyncapi_command(commands: Any) -> None:
    parser = commands.add_parser(
        "asyncapi",
        help="print the AsyncAPI 3.0 document of the registered messages on their transports",
        description="Print the AsyncAPI 3.0 document of a bus as deployed: its registered"
        " messages on the transports given by URL (redis://, rediss://, nats://, tls://,"
        " amqp://, amqps://, grpc://HOST:PORT, grpcs://HOST:PORT, http(s):// for an HTTP"
        " face), described without connecting (each transport's extra must be installed: its"
        " class is built, unconnected). No transport: the in-process bus.",
    )
    parser.add_argument(
        "--messages",
        action="append",
        default=[],
        metavar="MODULE[:REGISTRY]",
        help="import MODULE (registering its messages), or use its MessageRegistry REGISTRY"
        " (e.g. --messages myapp.messages)",
    )
    parser.add_argument(
        "--transport", action="append", default=[], metavar="URL", help="describe this transport"
    )
    parser.add_argument(
        "--prefix",
        help="passed as is to every transport: Redis takes it with its separator ('shop:'),"
        " NATS as one subject token ('shop'), RabbitMQ as a name prefix ('shop'); a gRPC"
        " hub takes none (default: each one's own)",
    )
    parser.add_argument("--title", default="jeeves bus", help="info.title")
    parser.add_argument("--version", dest="doc_version", default="1", help="info.version")
    parser.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
    parser.set_defaults(run=run_asyncapi)


def load_registry(specs: list[str]) -> Any:
    """Import each ``module`` (or ``module:attribute``, a MessageRegistry); the registry
    named last, else the default one."""
    from ..ipc.adapters.wire import MessageRegistry, default_registry

    chosen: Any = default_registry
    for spec in specs:
        _, found = load_spec(spec)
        if spec.partition(":")[2]:
            if not isinstance(found, MessageRegistry):
                raise SystemExit(f"{spec} is not a MessageRegistry")
            chosen = found
    return chosen


#: URL scheme -> (transport module under ipc.adapters, class, the extra it needs)
_SCHEMES: dict[str, tuple[str, str, str]] = {
    "redis": ("redis", "RedisTransport", "redis"),
    "rediss": ("redis", "RedisTransport", "redis"),
    "unix": ("redis", "RedisTransport", "redis"),
    "nats": ("nats", "NatsTransport", "nats"),
    "tls": ("nats", "NatsTransport", "nats"),
    "amqp": ("rabbitmq", "RabbitMQTransport", "rabbitmq"),
    "amqps": ("rabbitmq", "RabbitMQTransport", "rabbitmq"),
    "grpc": ("grpc", "GrpcTransport", "grpc"),
    "grpcs": ("grpc", "GrpcTransport", "grpc"),
}


def describe_url(url: str, prefix: str | None = None) -> Any:
    """An unconnected transport (or HTTP face description) for ``url``; ``SystemExit``
    with a message (credentials redacted) for an unknown scheme or a missing extra."""
    from ..ipc.adapters import redact_url

    scheme = url.split("://", 1)[0].lower()
    if scheme in ("http", "https"):
        from ..ipc.adapters.http.contract import HttpFaceDescription

        return HttpFaceDescription(url)
    if scheme not in _SCHEMES:
        known = ", ".join(f"{s}://" for s in (*_SCHEMES, "http", "https"))
        raise SystemExit(f"no transport for {redact_url(url)!r} (known: {known})")
    module, name, extra = _SCHEMES[scheme]
    try:
        kind = getattr(importlib.import_module(f"..ipc.adapters.{module}", __package__), name)
    except ImportError as exc:
        raise SystemExit(
            f"{scheme}:// needs the {extra} extra: pip install 'jeeves-control-tower[{extra}]'"
            f" ({exc})"
        ) from None
    from ..ipc import InMemoryCommBus

    bus = InMemoryCommBus(instrument=False)
    if module == "grpc":  # the hub's own names (pattern:type) take no prefix
        return kind(bus, url.split("://", 1)[1], tls=scheme == "grpcs", metrics=False)
    options: dict[str, Any] = {} if prefix is None else {"prefix": prefix}
    return kind(bus, url, metrics=False, **options)


def run_asyncapi(args: argparse.Namespace) -> int:
    from .asyncapi import asyncapi_document

    registry = load_registry(args.messages)
    transports = [describe_url(u, args.prefix) for u in args.transport]
    doc = asyncapi_document(registry, transports, title=args.title, version=args.doc_version)
    text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    if args.output is not None:
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    return 0
