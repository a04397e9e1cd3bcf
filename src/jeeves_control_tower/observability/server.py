"""The observability endpoint: ``/metrics``, ``/api/services``, ``/api/flow``,
``/api/stats``, ``/api/history`` and ``/healthz`` (shapes in ``docs/endpoint.md``).

A stdlib ``ThreadingHTTPServer`` in a daemon thread: it never runs on, or waits for, the
application's event loop. ``/metrics`` reads the Prometheus registry (thread-safe); the
``/api/*`` routes read the :class:`~.flow.FlowRecorder`, which snapshots under its own lock
and never calls into the coordinator. A slow client holds only its own connection thread
(sockets time out after ``timeout`` seconds; at most ``max_connections`` are served at once,
the rest are closed at once).

Binds ``127.0.0.1`` by default. With ``token`` set, every route but ``/healthz`` needs
``Authorization: Bearer <token>`` (compared in constant time).
"""

from __future__ import annotations

import hmac
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.exposition import choose_encoder

from ..logging import ensure_logger
from ..types import LoggerProtocol
from .flow import MAX_LIMIT, FlowRecorder, default_flow
from .history import history_body

__all__ = ["ObservabilityServer", "serve"]

_DEFAULT_LIMIT = 200


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: ObservabilityServer) -> None:
        self.app = app
        self._slots = threading.BoundedSemaphore(app.max_connections)
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # over the connection cap: drop it at once
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up or times out mid-request is routine: log, don't print.
        exc = sys.exc_info()[1]
        self.app.logger.debug("observability_connection_error", error=repr(exc))

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "jeeves-observability"

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.app.timeout)  # a stalled client lets go

    def log_message(self, format: str, *args: Any) -> None:
        self.server.app.logger.debug("observability_http", line=format % args)

    def do_HEAD(self) -> None:
        self._dispatch(head=True)

    def do_GET(self) -> None:
        self._dispatch(head=False)

    def _dispatch(self, head: bool) -> None:
        app = self.server.app
        url = urlsplit(self.path)
        try:
            if url.path == "/healthz":
                self._json(200, {"status": "ok"}, head)
                return
            if not app.authorized(self.headers.get("Authorization")):
                self._json(401, {"error": "unauthorized"}, head, {"WWW-Authenticate": "Bearer"})
                return
            if url.path == "/metrics":
                encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
                self._send(200, encoder(app.registry), content_type, head)
            elif url.path == "/api/services":
                self._json(200, app.services(), head)
            elif url.path == "/api/flow":
                try:
                    after, limit = _flow_params(url.query)
                except ValueError as exc:
                    self._json(400, {"error": str(exc)}, head)
                    return
                self._json(200, app.flow.flow(after, limit), head)
            elif url.path == "/api/stats":
                self._json(200, app.flow.stats(), head)
            elif url.path == "/api/history":
                try:
                    body = history_body(app.flow.history, url.query)
                except ValueError as exc:
                    self._json(400, {"error": str(exc)}, head)
                    return
                self._json(200, body, head)
            else:
                self._json(404, {"error": f"no route {url.path}"}, head)
        except Exception as exc:  # a broken reader must not kill the connection thread
            app.logger.error("observability_http_failed", path=url.path, error=repr(exc))
            self._json(500, {"error": "internal error"}, head)

    def _json(
        self, status: int, body: Any, head: bool, headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(body, separators=(",", ":"), default=str).encode()
        self._send(status, data, "application/json", head, headers)

    def _send(
        self,
        status: int,
        data: bytes,
        content_type: str,
        head: bool,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if not head:
            self.wfile.write(data)


def _flow_params(query: str) -> tuple[int, int]:
    params = parse_qs(query, keep_blank_values=True)
    unknown = set(params) - {"after", "limit"}
    if unknown:
        raise ValueError(f"unknown parameter(s): {', '.join(sorted(unknown))}")
    after = _int_param(params, "after", 0, 0, 2**63 - 1)
    limit = _int_param(params, "limit", _DEFAULT_LIMIT, 1, MAX_LIMIT)
    return after, limit


def _int_param(params: dict[str, list[str]], name: str, default: int, low: int, high: int) -> int:
    values = params.get(name)
    if not values:
        return default
    if len(values) > 1:
        raise ValueError(f"{name} given more than once")
    text = values[0].strip()
    if not text.isdigit() or len(text) > 19:
        raise ValueError(f"{name} must be an integer within {low}..{high}")
    value = int(text)
    if not low <= value <= high:
        raise ValueError(f"{name} must be an integer within {low}..{high}")
    return value


class ObservabilityServer:
    """A running endpoint. ``port``/``url`` tell where; ``close()`` stops it (idempotent,
    joins the thread). Usable as a context manager."""

    def __init__(
        self,
        registry: CollectorRegistry,
        flow: FlowRecorder,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        logger: LoggerProtocol | None = None,
        timeout: float = 10.0,
        max_connections: int = 32,
    ) -> None:
        if token is not None and not token:
            raise ValueError("token must be a non-empty string or None")
        self.registry = registry
        self.flow = flow
        self.logger = ensure_logger(logger, "jeeves_control_tower.observability")
        self.timeout = timeout
        self.max_connections = max_connections
        self._expected = f"Bearer {token}".encode() if token is not None else None
        self._httpd = _Server((host, port), self)
        self.host = host
        self.port: int = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"jeeves-observability:{self.port}",
            daemon=True,
        )
        self._thread.start()
        self._closed = False

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def authorized(self, header: str | None) -> bool:
        if self._expected is None:
            return True
        return header is not None and hmac.compare_digest(header.encode(), self._expected)

    def services(self) -> dict[str, Any]:
        import time

        return {"generated_at": time.time(), "services": self.flow.services()}

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5.0)

    def __enter__(self) -> ObservabilityServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(
    target: Any = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    token: str | None = None,
    registry: CollectorRegistry | None = None,
    flow: FlowRecorder | None = None,
    logger: LoggerProtocol | None = None,
) -> ObservabilityServer:
    """Start the endpoint in a background thread and return it.

    ``target`` (a coordinator or a bus, optional) supplies the defaults: the registry and
    flow recorder its telemetry was built with. Otherwise ``prometheus_client.REGISTRY`` and
    the process-wide :func:`~.flow.default_flow`. ``port=0`` picks a free port.
    """
    telemetry = getattr(target, "telemetry", None)
    if registry is None:
        registry = getattr(telemetry, "registry", None) or REGISTRY
    if flow is None:
        flow = getattr(telemetry, "flow", None) or default_flow()
    return ObservabilityServer(registry, flow, host=host, port=port, token=token, logger=logger)
