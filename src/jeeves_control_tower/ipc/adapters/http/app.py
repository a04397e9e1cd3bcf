"""The bus's HTTP face: a Starlette app outside callers use, mountable in your own app.

::

    app = create_app(coordinator, token="s3cret")              # serve it: uvicorn, or
    my_app.mount("/bus", app)                                   # jeeves-ipc serve-http

Routes (all ``POST`` but the two documents): ``/v1/publish/{type}``, ``/v1/send/{type}``,
``/v1/query/{type}`` (the payload: the registered class's fields as a JSON object) and
``/v1/dispatch/{service}`` (the :mod:`.envelope` contract); ``GET /openapi.json``
(:mod:`.openapi`) and ``GET /asyncapi.json``
(:func:`jeeves_control_tower.contracts.asyncapi_document`, listing this face and the
``transports`` given (default: the bus's own transport, when it has one), the face itself
at ``public_url`` when given, else at the address
and mount path the connection reached: never a request header, since the documents are
cached). How each request is checked and answered: :mod:`.face`; errors are
RFC 9457 problem details (:mod:`.problems`). With ``token`` every route, documents
included, requires ``Authorization: Bearer <token>``.

``types`` limits the message types offered (default: every registered one but the
built-ins, read when the app is made), each under the pattern(s) of its class's
``category`` (:mod:`jeeves_control_tower.contracts.catalog`). ``timeout`` bounds queries
and dispatches (a caller's ``Jeeves-Deadline-Ms`` may shorten it); ``max_body_bytes``
bounds request bodies (default 1 MiB) and ``read_timeout`` the time the whole body may
take to arrive (default 5 s, else ``408``; the request line and headers are the ASGI
server's to bound: see ``jeeves-ipc serve-http``).

A request continues its caller's W3C ``traceparent`` (and ``tracestate`` of at most 512
characters); the caller's ``baggage`` only with ``baggage=True``: what a request makes
current goes into every frame the bus sends for it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import trace
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ....contracts.asyncapi import asyncapi_document
from ....contracts.catalog import catalog
from ....logging import ensure_logger
from ....types import LoggerProtocol
from ... import InMemoryCommBus, get_commbus
from ...dispatch import CommBusCoordinator
from ..wire import MessageRegistry, default_registry
from .contract import HttpFaceDescription
from .face import BusFace
from .openapi import openapi_document
from .problems import Problem
from .telemetry import HttpTelemetry

__all__ = ["create_app"]

#: Documents kept (one per kind and base URL the app is reached at).
_MAX_DOCUMENTS = 32


def create_app(
    target: CommBusCoordinator | InMemoryCommBus | None = None,
    *,
    registry: MessageRegistry | None = None,
    types: Sequence[str] | None = None,
    token: str | None = None,
    max_body_bytes: int = 1 << 20,
    timeout: float = 30.0,
    read_timeout: float = 5.0,
    transports: Sequence[Any] | None = None,
    public_url: str | None = None,
    title: str = "jeeves bus",
    tracer_provider: trace.TracerProvider | None = None,
    metrics_registry: Any = None,
    metrics: bool = True,
    baggage: bool = False,
    logger: LoggerProtocol | None = None,
) -> Starlette:
    """The HTTP face of ``target`` (a coordinator: dispatch too; a bus: messages only;
    ``None``: the global bus; anything else: ``TypeError``). See the module docstring."""
    if target is not None and not isinstance(target, (CommBusCoordinator, InMemoryCommBus)):
        raise TypeError(
            f"create_app needs a CommBusCoordinator or an InMemoryCommBus (or None for the"
            f" global bus), not {type(target).__name__}"
        )
    if max_body_bytes < 1 or not timeout > 0 or not read_timeout > 0:
        raise ValueError("max_body_bytes >= 1, timeout > 0 and read_timeout > 0 are required")
    if public_url is not None:
        public_url = _checked_url(public_url)
    if token is not None and not token:
        raise ValueError("token must be a non-empty string (or None)")
    coordinator = target if isinstance(target, CommBusCoordinator) else None
    if coordinator is not None:
        bus = coordinator.commbus
    else:
        bus = target if isinstance(target, InMemoryCommBus) else get_commbus()
    registry = registry if registry is not None else default_registry
    names = list(types) if types is not None else None
    patterns = {c.name: c.patterns for c in catalog(registry, types=names)}
    face = BusFace(
        bus,
        coordinator,
        registry,
        patterns,
        token=token,
        max_body_bytes=max_body_bytes,
        timeout=timeout,
        read_timeout=read_timeout,
        telemetry=HttpTelemetry(
            tracer_provider=tracer_provider,
            metrics_registry=metrics_registry,
            metrics=metrics,
            baggage=baggage,
        ),
        logger=ensure_logger(logger, "jeeves_control_tower.adapters.http"),
    )
    documents: dict[tuple[str, str, tuple[str, str]], bytes] = {}

    def document(request: Request, kind: str) -> Response:
        if not face.authorised(request):
            return Problem("unauthorized", "missing or wrong bearer token").response(
                request.url.path
            )
        # Never from a request header (Host, X-Forwarded-*): the documents are cached and
        # served to everyone. The mount path and the socket's address are the server's.
        root = request.scope.get("root_path", "") or ""
        base = public_url or _local_base(request.scope, root)
        key = (kind, base, _which(bus.transport))  # a transport attached later: a new one
        body = documents.get(key)
        if body is None:
            if len(documents) >= _MAX_DOCUMENTS:  # mount paths are few: never grow unbounded
                documents.clear()
            if kind == "openapi":
                doc = openapi_document(
                    registry,
                    types=sorted(patterns),
                    dispatch=coordinator is not None,
                    token=token is not None,
                    title=title,
                    server_url=public_url or root or "/",
                )
            else:
                doc = asyncapi_document(
                    registry,
                    [HttpFaceDescription(base), *_described(bus, transports)],
                    types=sorted(patterns),
                    title=title,
                )
            body = documents[key] = json.dumps(doc, ensure_ascii=False).encode()
        return Response(body, media_type="application/json")

    async def openapi(request: Request) -> Response:
        return document(request, "openapi")

    async def asyncapi(request: Request) -> Response:
        return document(request, "asyncapi")

    def route(op: str) -> Route:
        async def endpoint(request: Request) -> Response:
            return await face.handle(request, op)

        name = "{service}" if op == "dispatch" else "{type}"
        return Route(f"/v1/{op}/{name}", endpoint, methods=["POST"], name=op)

    routes = [route(op) for op in ("publish", "send", "query", "dispatch")]
    routes += [
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/asyncapi.json", asyncapi, methods=["GET"]),
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: _routing_problem})


async def _routing_problem(request: Request, exc: Exception) -> Response:
    """An unknown path (404) or a route's wrong method (405) as a problem, like every
    other error of the face (``Allow`` kept)."""
    status = getattr(exc, "status_code", 404)
    if status == 405:
        problem = Problem("method-not-allowed", f"{request.method[:20]} is not allowed here")
    elif status == 404:
        problem = Problem("not-found", "no such route")
    else:  # (Starlette's routing raises no other)
        return Response(str(getattr(exc, "detail", "")), status_code=status)
    response = problem.response(request.url.path)
    allow = (getattr(exc, "headers", None) or {}).get("Allow")
    if allow is not None:
        response.headers["Allow"] = allow
    return response


def _which(transport: Any) -> tuple[str, str]:
    """What tells one attached transport's document from another's."""
    return type(transport).__name__, str(getattr(transport, "url", ""))


def _described(bus: InMemoryCommBus, transports: Sequence[Any] | None) -> list[Any]:
    """The transports ``/asyncapi.json`` lists besides the face: those given, else the
    bus's own when it has one that can be described (read when the document is made)."""
    if transports is not None:
        return list(transports)
    own = bus.transport
    return [own] if own is not None and hasattr(own, "asyncapi_server") else []


def _checked_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ValueError("public_url must be http(s)://host[:port][/path]")
    return url.rstrip("/")


def _local_base(scope: Mapping[str, Any], root: str) -> str:
    """The face's URL by the address the connection reached (the ASGI ``server``, taken
    from the socket by the server), never by what the caller claims."""
    scheme = "https" if scope.get("scheme") in ("https", "wss") else "http"
    server = scope.get("server")
    if not server:
        return f"{scheme}://localhost{root}"
    host, port = server[0], server[1]
    host = f"[{host}]" if ":" in str(host) else str(host)
    default = 443 if scheme == "https" else 80
    netloc = host if port in (None, default) else f"{host}:{int(port)}"
    return f"{scheme}://{netloc}{root}"
