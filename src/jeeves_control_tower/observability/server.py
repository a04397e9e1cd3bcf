"""The standalone observability endpoint: :func:`serve` (routes and shapes in
``docs/endpoint.md``; the same answers as the ASGI app of :mod:`.asgi`, both built by
:mod:`.routes`).

Why the standard library's ``socketserver`` and ``http.server`` and not an ASGI server: the
endpoint must run beside the application's own event loop, in a daemon thread that never
runs on or waits for that loop, with no dependency beyond the ``observability`` extra.
Users who do run an ASGI server mount :func:`~.asgi.create_app` in it instead.

What the stdlib does not give, this module adds:

- one deadline per request (``request_timeout``, 5 s by default) for its line, headers
  and body, counted from the moment the connection waits for it; a keep-alive connection
  idle that long is closed, a half-sent request gets ``408`` and is closed;
- at ``max_connections`` a new connection sheds the sheddable connection that has been in
  its state longest: one waiting for its request, one whose answer is being sent (a client
  that does not read), or one answering a pipelined request (received before the previous
  answer was sent) or a heavy route (``/api/history``). Only computing any other answer
  protects a connection; only when all are protected is the new one closed at once. So
  neither tricklers nor clients that never read can lock out ``/healthz`` or the scraper;
- strict framing: the request line is ``METHOD TARGET HTTP/1.x``, line and headers are
  bounded, a malformed header line (no colon, space before the colon) is ``400``, a
  ``Content-Length`` body of at most 64 KiB is read and discarded, a bigger one is ``413``,
  any ``Transfer-Encoding`` is ``400``, and after a framing error the connection is closed
  (a body is never read as the next request);
- every response, errors included, is JSON (``/metrics``: the Prometheus formats) with
  ``Cache-Control: no-store`` and ``Server: jeeves-observability`` (no version).

Sending an answer is bounded by ``timeout`` seconds in all (a client that stops reading
lets go then, or sooner when it is shed).
"""

from __future__ import annotations

import email.utils
import io
import socketserver
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from ..types import LoggerProtocol
from ._connections import Connections, RequestReader, RequestTimeout, RequestTooLarge
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

if TYPE_CHECKING:
    from ..ipc.adapters.peers import PeerTable

__all__ = ["MAX_BODY", "ObservabilityServer", "serve"]

SERVER = "jeeves-observability"
#: Longest request line (method, target and version).
MAX_REQUEST_LINE = 8 * 1024
#: Bytes a request's line and headers may take (read-ahead of a pipelined request included).
MAX_HEAD = 64 * 1024
#: Largest request body that is read and discarded; a larger one is refused with 413.
MAX_BODY = 64 * 1024
_DIGITS = frozenset("0123456789")


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # a burst of connects waits for accept(), which sheds, not refuses

    def __init__(self, address: tuple[str, int], app: ObservabilityServer) -> None:
        self.app = app
        self.connections = Connections(app.max_connections)
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.connections.admit(request):
            self.app.logger.debug("observability_connection_refused", reason="all busy")
            super().shutdown_request(request)
            return
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        self.connections.remove(request)  # before close: a shed never touches a closed socket
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up, times out or is shed mid-request is routine: log, don't print.
        self.app.logger.debug("observability_connection_error", error=repr(sys.exc_info()[1]))


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    reader: RequestReader
    buffered: io.BufferedReader

    def setup(self) -> None:
        self.connection = self.request
        self.reader = RequestReader(self.connection)
        self.buffered = io.BufferedReader(self.reader)
        self.rfile = self.buffered
        self.wfile = io.BytesIO()  # unused: every answer goes out through _reply's sendall
        self.pipelined = False  # the next request was received before the last answer went

    def finish(self) -> None:
        self.rfile.close()

    def version_string(self) -> str:
        return SERVER

    def log_message(self, format: str, *args: Any) -> None:
        self.server.app.logger.debug("observability_http", line=format % args)

    def handle_expect_100(self) -> bool:
        return True  # no interim 100: the final answer comes either way

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Every error ``http.server`` itself detects (bad version, too many or too long
        headers): JSON like ours, and the connection is closed."""
        self._reply(error(code, message or HTTPStatus(code).phrase), close=True)

    def handle_one_request(self) -> None:
        self.close_connection = True
        self.command = self.requestline = ""
        self.server.connections.waiting(self.connection)
        self.reader.begin(self.server.app.request_timeout, MAX_HEAD)
        outcome: Answer | bool
        try:
            outcome = self._read_request()
        except RequestTimeout:
            outcome = error(408, "request not received in time") if self.reader.received else False
        except RequestTooLarge:
            outcome = error(431, "request headers too large")
        if isinstance(outcome, Answer):
            self._reply(outcome, close=True)
        elif outcome and (answer := self._answer()) is not None:
            self._reply(answer)

    def _read_request(self) -> Answer | bool:
        """True: a whole request, ready to answer. An answer: the refusal to send before
        closing. False: nothing to answer (the client left, or http.server answered)."""
        line = self.rfile.readline(MAX_REQUEST_LINE + 1)
        if not line:
            return False
        self.raw_requestline = line
        if len(line) > MAX_REQUEST_LINE:
            return error(414, "request line too long")
        if len(line.split()) != 3:
            return error(400, "malformed request line")
        if not self.parse_request():
            return False
        if self.headers.defects or self.headers.get_payload():
            # The header parser stopped at a malformed line: what follows it (a
            # Content-Length, a Transfer-Encoding) was not read as a header, so the body
            # cannot be framed.
            return error(400, "malformed header line")
        refusal = self._discard_body()
        return True if refusal is None else refusal

    def _discard_body(self) -> Answer | None:
        """Read and drop a declared body, so it is never read as the next request; or the
        refusal to send (and close) when the body cannot be framed or is too big."""
        if self.headers.get_all("Transfer-Encoding"):
            return error(400, "Transfer-Encoding is not accepted; send Content-Length")
        lengths = self.headers.get_all("Content-Length") or []
        if not lengths:
            return None
        text = lengths[0].strip()
        if len(lengths) > 1 or not text or not set(text) <= _DIGITS or len(text) > 18:
            return error(400, "invalid Content-Length")
        size = int(text)
        if size > MAX_BODY:
            return error(413, f"request body over {MAX_BODY} bytes")
        self.reader.allow(size)
        if len(self.rfile.read(size)) < size:
            return error(400, "request body cut short")
        return None

    def _answer(self) -> Answer | None:
        """The answer to the request read; None if the connection was shed meanwhile."""
        app = self.server.app
        # The target as sent (http.server rewrites a leading "//"), its path percent-decoded
        # as ASGI servers decode scope["path"]: both carriers match the same paths.
        raw_path, _, query = self.raw_requestline.split()[1].decode("latin-1").partition("?")
        path = unquote(raw_path)
        route = ROUTES.get(path)
        authorized = app.authorized(self.headers.get("Authorization"))
        if route is None and path != METRICS:
            return not_found(path) if authorized else UNAUTHORIZED
        if self.command not in METHODS:
            return METHOD_NOT_ALLOWED
        if not authorized and (route is None or not route.public):
            return UNAUTHORIZED
        heavy = route is not None and route.heavy
        if not self.server.connections.working(
            self.connection, protected=not (self.pipelined or heavy)
        ):
            return None
        if route is not None:
            return app.endpoint.json(path, query)
        try:
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            return Answer(200, encoder(exposition_registry(app.registry)), content_type)
        except MultiprocessUnavailable as exc:
            app.logger.error("observability_metrics_unavailable", error=str(exc))
            return METRICS_UNAVAILABLE
        except Exception as exc:
            app.logger.error("observability_http_failed", path=path, error=repr(exc))
            return error(500, "internal error")

    def _reply(self, answer: Answer, *, close: bool = False) -> None:
        """Send ``answer`` as one HTTP/1.1 response (whatever version the client spoke),
        unless the connection was shed meanwhile; sheddable while it is sent."""
        if not self.server.connections.sending(self.connection):
            self.close_connection = True
            return
        if close:
            self.close_connection = True
        status = HTTPStatus(answer.status)
        head = [
            f"HTTP/1.1 {status.value} {status.phrase}",
            f"Server: {SERVER}",
            f"Date: {email.utils.formatdate(usegmt=True)}",
            f"Content-Type: {answer.content_type}",
            f"Content-Length: {len(answer.body)}",
            *(f"{key}: {value}" for key, value in (*COMMON_HEADERS, *answer.headers)),
        ]
        if self.close_connection:
            head.append("Connection: close")
        body = b"" if self.command == "HEAD" else answer.body
        self.connection.settimeout(self.server.app.timeout)  # bounds the whole sendall
        self.connection.sendall("\r\n".join(head).encode("latin-1") + b"\r\n\r\n" + body)
        self.log_request(answer.status, len(answer.body))
        if not self.close_connection:
            self.pipelined = self._received_ahead()

    def _received_ahead(self) -> bool:
        """Whether bytes of a next request were received already: held in ``rfile``'s
        buffer or in the kernel's (no blocking read)."""
        self.reader.probing = True
        try:
            held = self.buffered.peek(1)
        finally:
            self.reader.probing = False
        return bool(held) or self.reader.pending()


class ObservabilityServer:
    """A running endpoint. ``port``/``url`` tell where; ``close()`` stops it (idempotent,
    joins the thread). Usable as a context manager.

    ``request_timeout``: seconds a connection gets to send a whole request (and the most a
    keep-alive connection stays idle). ``timeout``: seconds in all to send one answer.
    ``max_connections``: connections admitted at once (see the module docstring).
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        flow: FlowRecorder,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        logger: LoggerProtocol | None = None,
        request_timeout: float = 5.0,
        timeout: float = 10.0,
        max_connections: int = 32,
    ) -> None:
        if not request_timeout > 0 or not timeout > 0:
            raise ValueError("request_timeout and timeout must be > 0")
        self.endpoint = Endpoint(Sources(registry, flow), token=token, logger=logger)
        self.logger = self.endpoint.logger
        self.request_timeout = request_timeout
        self.timeout = timeout
        self.max_connections = max_connections
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
    def registry(self) -> CollectorRegistry:
        return self.endpoint.registry

    @property
    def flow(self) -> FlowRecorder:
        return self.endpoint.flow

    @property
    def peers(self) -> PeerTable | None:
        """The processes heard in heartbeats, served at ``/api/peers`` (set by
        :func:`~.fleet.advertise_endpoint`); ``None``: an empty fleet."""
        return self.endpoint.sources.peers

    @peers.setter
    def peers(self, table: PeerTable | None) -> None:
        self.endpoint.sources.peers = table

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def open_connections(self) -> int:
        """Connections admitted and not yet closed or shed."""
        return len(self._httpd.connections)

    @property
    def shed_connections(self) -> int:
        """Connections shed so far to admit a newer one."""
        return self._httpd.connections.shed

    def authorized(self, header: str | bytes | None) -> bool:
        return self.endpoint.authorized(header)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._httpd.shutdown()  # no more accepts
        self._httpd.connections.shut_all()  # open connections end now, not at their deadlines
        self._httpd.server_close()  # joins their threads
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
    request_timeout: float = 5.0,
    timeout: float = 10.0,
    max_connections: int = 32,
) -> ObservabilityServer:
    """Start the endpoint in a background thread and return it.

    ``target`` (a coordinator or a bus, optional) supplies the defaults: the registry and
    flow recorder its telemetry was built with. Otherwise ``prometheus_client.REGISTRY`` and
    the process-wide :func:`~.flow_default.default_flow`. ``port=0`` picks a free port.
    """
    sources = Sources.of(target, registry, flow)
    return ObservabilityServer(
        sources.registry,
        sources.flow,
        host=host,
        port=port,
        token=token,
        logger=logger,
        request_timeout=request_timeout,
        timeout=timeout,
        max_connections=max_connections,
    )
