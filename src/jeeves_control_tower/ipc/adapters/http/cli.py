"""``jeeves-ipc serve-http``: serve the bus's HTTP face with uvicorn.

::

    jeeves-ipc serve-http myapp.wiring:coordinator --port 8080 --token "$JEEVES_TOKEN"

``TARGET`` is ``module:attribute``: a ``CommBusCoordinator`` or ``InMemoryCommBus``, or a
callable (sync or async) returning one, called once on the server's event loop at startup
(where a factory can connect its transports). ``--messages`` names the
``MessageRegistry`` as ``module:attribute`` (default: the default registry, filled by
importing ``TARGET``'s module). Stops on Ctrl-C / SIGTERM.

Bounds (each an option): a request body must arrive within ``--read-timeout`` (5 s, else
``408``); at most ``--limit-concurrency`` connections and requests at once (100; uvicorn
answers ``503`` past it); an idle keep-alive connection closes after ``--keep-alive``
seconds (5); a request line plus headers larger than ``--max-header-bytes`` (16 KiB) is
refused (``400``). uvicorn has no deadline for the request line and headers: a client
trickling them holds its connection (and a ``--limit-concurrency`` slot) as long as it
likes, so facing untrusted networks put a reverse proxy with header and body timeouts in
front (nginx ``client_header_timeout``/``client_body_timeout``).
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import os
from collections.abc import AsyncIterator
from typing import Any

from ...._specs import load_spec

__all__ = ["add_serve_http_command"]


def add_serve_http_command(commands: Any) -> None:
    parser = commands.add_parser(
        "serve-http",
        help="serve the bus's HTTP face (publish/send/query/dispatch, OpenAPI, AsyncAPI)",
        description="Serve the bus's HTTP face with uvicorn (stops on Ctrl-C / SIGTERM).",
    )
    parser.add_argument(
        "target",
        metavar="TARGET",
        help="module:attribute: a CommBusCoordinator or InMemoryCommBus, or a callable"
        " (sync or async) returning one, called once at startup",
    )
    parser.add_argument("--messages", metavar="MODULE:REGISTRY", help="the MessageRegistry")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    parser.add_argument(
        "--token",
        default=os.environ.get("JEEVES_TOKEN") or None,
        help="require this bearer token (default: $JEEVES_TOKEN, else none)",
    )
    parser.add_argument(
        "--max-body-bytes", type=int, default=1 << 20, help="request body bound (1 MiB)"
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="query/dispatch bound in seconds (30)"
    )
    parser.add_argument(
        "--read-timeout",
        type=float,
        default=5.0,
        help="seconds the whole request body may take to arrive (5; else 408)",
    )
    parser.add_argument(
        "--limit-concurrency",
        type=int,
        default=100,
        help="connections and requests at once; past it uvicorn answers 503 (100)",
    )
    parser.add_argument(
        "--keep-alive", type=int, default=5, help="idle keep-alive connection lifetime, s (5)"
    )
    parser.add_argument(
        "--max-header-bytes",
        type=int,
        default=16 << 10,
        help="request line + headers bound, bytes (16 KiB; else 400)",
    )
    parser.add_argument(
        "--public-url",
        help="the face's base URL as callers reach it, named by /openapi.json and "
        "/asyncapi.json (default: the address a connection reached)",
    )
    parser.set_defaults(run=run_serve_http)


def _load(spec: str) -> Any:
    if not spec.partition(":")[2]:
        raise SystemExit(f"TARGET must be module:attribute, got {spec!r}")
    return load_spec(spec)[1]


class _Deferred:
    """An ASGI app whose face is built at lifespan startup, on the server's loop."""

    def __init__(self, target: Any, options: dict[str, Any]) -> None:
        self.target = target
        self.options = options
        self.face: Any = None

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Any) -> AsyncIterator[None]:
        from ... import InMemoryCommBus
        from ...dispatch import CommBusCoordinator
        from .app import create_app

        target = self.target
        if callable(target) and not isinstance(target, (CommBusCoordinator, InMemoryCommBus)):
            target = target()
            if inspect.isawaitable(target):
                target = await target
        if not isinstance(target, (CommBusCoordinator, InMemoryCommBus)):
            raise TypeError(
                f"TARGET gave {type(target).__name__}: serve-http needs a CommBusCoordinator"
                " or an InMemoryCommBus, or a callable (sync or async) returning one"
            )
        self.face = create_app(target, **self.options)
        yield

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.face(scope, receive, send)


def run_serve_http(args: argparse.Namespace) -> int:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from ...adapters.wire import MessageRegistry

    target = _load(args.target)
    options: dict[str, Any] = {
        "token": args.token,
        "max_body_bytes": args.max_body_bytes,
        "timeout": args.timeout,
        "read_timeout": args.read_timeout,
        "public_url": args.public_url,
    }
    if args.messages:
        registry = _load(args.messages)
        if not isinstance(registry, MessageRegistry):
            raise SystemExit(f"{args.messages} is not a MessageRegistry")
        options["registry"] = registry
    deferred = _Deferred(target, options)
    app = Starlette(routes=[Mount("/", app=deferred)], lifespan=deferred.lifespan)
    uvicorn.run(app, **uvicorn_options(args))
    return 0


def uvicorn_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``uvicorn.run`` keywords of ``serve-http``'s options (its bounds included)."""
    if args.limit_concurrency < 1 or args.keep_alive < 1 or args.max_header_bytes < 1024:
        raise SystemExit("--limit-concurrency, --keep-alive >= 1, --max-header-bytes >= 1024")
    return {
        "host": args.host,
        "port": args.port,
        "log_level": "info",
        "ws": "none",
        "http": "h11",  # the bounds below are h11's (httptools has no header bound)
        "limit_concurrency": args.limit_concurrency,
        "timeout_keep_alive": args.keep_alive,
        "h11_max_incomplete_event_size": args.max_header_bytes,
        "server_header": False,
    }
