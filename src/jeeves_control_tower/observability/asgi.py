"""The observability endpoint as an ASGI app, to mount in your own Starlette or FastAPI
service (``app.mount("/observability", create_app(coordinator))``).

The same routes, JSON and token rule as the standalone :func:`~.server.serve`: both take
them from :mod:`.routes`. ``/metrics`` is prometheus_client's own ASGI exposition
(``make_asgi_app``: text or OpenMetrics by ``Accept``, gzip by ``Accept-Encoding``,
``name[]`` filters), behind the token rule. Every response, errors included, carries
``Cache-Control: no-store``; errors are ``{"error": "..."}``.

The JSON routes run in Starlette's worker threads, so a big ``/api/flow`` never holds the
event loop; ``/metrics`` is rendered on the loop, as prometheus_client does.

Needs Starlette (the ``asgi`` extra); the rest of the package never imports this module.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import CollectorRegistry, make_asgi_app
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..types import LoggerProtocol
from .flow import FlowRecorder
from .multiprocess import MultiprocessUnavailable, exposition_registry
from .routes import (
    COMMON_HEADERS,
    METHOD_NOT_ALLOWED,
    METHODS,
    METRICS,
    METRICS_UNAVAILABLE,
    ROUTES,
    UNAUTHORIZED,
    Answer,
    Endpoint,
    Sources,
    error,
    not_found,
)

__all__ = ["create_app"]

_COMMON = [(key.lower().encode(), value.encode()) for key, value in COMMON_HEADERS]


def create_app(
    target: Any = None,
    *,
    token: str | None = None,
    registry: CollectorRegistry | None = None,
    flow: FlowRecorder | None = None,
    logger: LoggerProtocol | None = None,
) -> Starlette:
    """A Starlette app serving ``/metrics``, the ``/api/*`` routes and ``/healthz``.

    Arguments as for :func:`~.server.serve` (``target``: a coordinator or a bus whose
    telemetry supplies the registry and flow recorder; ``token``: bearer token for every
    route but ``/healthz``), less those of the standalone server (host, port, timeouts and
    connection limits, which belong to your ASGI server).
    """
    endpoint = Endpoint(Sources.of(target, registry, flow), token=token, logger=logger)
    routes = [Route(path, _json_route(endpoint, path), methods=list(METHODS)) for path in ROUTES]
    routes.append(Route(METRICS, _Metrics(endpoint), methods=list(METHODS)))
    app = Starlette(
        routes=routes,
        middleware=[Middleware(_CommonHeaders)],
        exception_handlers={HTTPException: _http_error(endpoint)},
    )
    app.router.redirect_slashes = False  # "/metrics/" is a 404 (JSON), as standalone
    return app


def _response(answer: Answer) -> Response:
    return Response(
        answer.body, answer.status, headers=dict(answer.headers), media_type=answer.content_type
    )


def _json_route(endpoint: Endpoint, path: str) -> Callable[[Request], Response]:
    public = ROUTES[path].public

    def answer(request: Request) -> Response:  # sync: Starlette runs it in a worker thread
        if not public and not endpoint.authorized(request.headers.get("authorization")):
            return _response(UNAUTHORIZED)
        return _response(endpoint.json(path, request.scope["query_string"].decode("latin-1")))

    return answer


def _http_error(endpoint: Endpoint) -> Callable[[Request, Exception], Awaitable[Response]]:
    """Starlette's own errors (no route, wrong method) as JSON, under the same token rule
    as standalone: an unknown path is a 401 without the token, a 404 with it."""

    async def handle(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        if status == 404:
            authorized = endpoint.authorized(request.headers.get("authorization"))
            return _response(not_found(request.url.path) if authorized else UNAUTHORIZED)
        if status == 405:
            return _response(METHOD_NOT_ALLOWED)
        detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
        return _response(error(status, detail))

    return handle


class _Metrics:
    """``/metrics``: prometheus_client's ASGI exposition behind the token rule."""

    def __init__(self, endpoint: Endpoint) -> None:
        self._endpoint = endpoint
        self._app: ASGIApp = make_asgi_app(endpoint.registry)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        authorization = next(
            (value for name, value in scope["headers"] if name.lower() == b"authorization"),
            None,
        )
        if not self._endpoint.authorized(authorization):
            await _response(UNAUTHORIZED)(scope, receive, send)
            return
        try:
            registry = exposition_registry(self._endpoint.registry)
        except MultiprocessUnavailable as exc:
            self._endpoint.logger.error("observability_metrics_unavailable", error=str(exc))
            await _response(METRICS_UNAVAILABLE)(scope, receive, send)
            return
        if registry is self._endpoint.registry:
            await self._app(scope, receive, send)
        else:  # multiprocess mode: a fresh aggregate per scrape
            await make_asgi_app(registry)(scope, receive, send)


class _CommonHeaders:
    """Adds :data:`~.routes.COMMON_HEADERS` to every response that lacks them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend(item for item in _COMMON if item[0] not in present)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
