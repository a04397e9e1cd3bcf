"""What the observability endpoint answers, whatever server carries it.

Both carriers, the standalone :func:`~.server.serve` and the ASGI app of
:func:`~.asgi.create_app`, take every JSON body, status, header and the token rule from
here, so the two answer alike (shapes in ``docs/endpoint.md``). A JSON route is one entry
in :data:`ROUTES`: a builder ``(sources, query) -> JSON-able object`` that raises
:class:`BadRequest` for bad parameters. ``/metrics`` is the one route that is not JSON;
each carrier exposes it with prometheus_client's own exposition code.

Builders run on a server thread (standalone) or a worker thread (ASGI), never on the
application's event loop: they read only the registry and the :class:`~.flow.FlowRecorder`,
both of which snapshot under their own locks. Those threads still share the GIL with the
loop, so a ``heavy`` route (``/api/history``) is computed by one thread at a time, process
wide, and its answer reused for a second (:data:`HEAVY`); a request that finds no free slot
within a second is answered ``503`` with ``Retry-After``.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from prometheus_client import REGISTRY, CollectorRegistry

from ..logging import ensure_logger
from ..types import LoggerProtocol
from ._computations import Busy, Computations
from .fleet import peers_document
from .flow import MAX_LIMIT, FlowRecorder
from .flow_default import default_flow
from .history import history_params

if TYPE_CHECKING:
    from ..ipc.adapters.peers import PeerTable

__all__ = [
    "COMMON_HEADERS",
    "HEALTH",
    "HEAVY",
    "JSON_TYPE",
    "METHODS",
    "METHOD_NOT_ALLOWED",
    "METRICS",
    "METRICS_UNAVAILABLE",
    "ROUTES",
    "UNAUTHORIZED",
    "Answer",
    "BadRequest",
    "Encoded",
    "Endpoint",
    "Route",
    "Sources",
    "error",
    "not_found",
]

JSON_TYPE = "application/json"
#: On every response of both carriers, errors included.
COMMON_HEADERS: tuple[tuple[str, str], ...] = (
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
)
#: The only methods any route accepts; anything else on a known path is a 405.
METHODS = ("GET", "HEAD")
HEALTH = "/healthz"
METRICS = "/metrics"
_DEFAULT_LIMIT = 200
#: The heavy routes' computations: one at a time in the process, each answer reused for 1 s
#: (per source and parameters), 1 s at most to wait for the slot (then 503, Retry-After: 1).
HEAVY = Computations(slots=1, ttl=1.0, wait=1.0, entries=4)


@dataclass
class Sources:
    """What the routes read: the Prometheus registry, the flow recorder and, once the
    endpoint is advertised (:func:`~.fleet.advertise_endpoint`), the peer table."""

    registry: CollectorRegistry
    flow: FlowRecorder
    peers: PeerTable | None = None

    @classmethod
    def of(
        cls,
        target: Any = None,
        registry: CollectorRegistry | None = None,
        flow: FlowRecorder | None = None,
    ) -> Sources:
        """Explicit arguments win; then what ``target`` (a coordinator or a bus) was
        instrumented with; then ``prometheus_client.REGISTRY`` and :func:`default_flow`."""
        telemetry = getattr(target, "telemetry", None)
        if registry is None:
            registry = getattr(telemetry, "registry", None) or REGISTRY
        if flow is None:
            flow = getattr(telemetry, "flow", None) or default_flow()
        return cls(registry, flow)


class BadRequest(ValueError):
    """A route's parameters are invalid: answered ``400 {"error": str(exc)}``."""


@dataclass(frozen=True)
class Encoded:
    """A builder's answer already encoded as JSON (sent as is)."""

    body: bytes


@dataclass(frozen=True)
class Answer:
    """One response: status, body, content type and the headers particular to it
    (the carrier adds :data:`COMMON_HEADERS`)."""

    status: int
    body: bytes
    content_type: str = JSON_TYPE
    headers: tuple[tuple[str, str], ...] = ()


def _encode(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":"), default=str).encode()


def error(status: int, message: str, *headers: tuple[str, str]) -> Answer:
    """``{"error": message}`` with ``status``: the one shape of every error."""
    return Answer(status, _encode({"error": message}), JSON_TYPE, headers)


UNAUTHORIZED = error(401, "unauthorized", ("WWW-Authenticate", "Bearer"))
METHOD_NOT_ALLOWED = error(405, "method not allowed", ("Allow", ", ".join(METHODS)))
#: ``/metrics`` in multiprocess mode whose directory is missing or unreadable (logged).
METRICS_UNAVAILABLE = error(
    503, "metrics unavailable: the multiprocess directory cannot be read (see the log)"
)


def not_found(path: str) -> Answer:
    return error(404, f"no route {path[:200]}")


# -- the JSON routes ---------------------------------------------------------------------


def _health(sources: Sources, query: str) -> Any:
    return {"status": "ok"}


def _services(sources: Sources, query: str) -> Any:
    return {"generated_at": time.time(), "services": sources.flow.services()}


def _flow(sources: Sources, query: str) -> Any:
    params = parse_qs(query, keep_blank_values=True)
    unknown = set(params) - {"after", "limit"}
    if unknown:
        raise BadRequest(f"unknown parameter(s): {', '.join(sorted(unknown))[:200]}")
    after = _int_param(params, "after", 0, 0, 2**63 - 1)
    limit = _int_param(params, "limit", _DEFAULT_LIMIT, 1, MAX_LIMIT)
    return sources.flow.flow(after, limit)


def _stats(sources: Sources, query: str) -> Any:
    return sources.flow.stats()


def _history(sources: Sources, query: str) -> Any:
    history = sources.flow.history
    try:
        window, step = history_params(history, query)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    return Encoded(
        HEAVY.get((history, window, step), lambda: _encode_pieces(history.snapshot(window, step)))
    )


def _encode_pieces(payload: dict[str, Any]) -> bytes:
    """``_encode(payload)``, byte for byte, built one entry of each nested dict at a time:
    the C encoder holds the GIL for a whole call, and a multi-megabyte call would stall the
    application's event loop for as long."""
    parts = []
    for key, value in payload.items():
        if isinstance(value, dict):
            entries = b",".join(_encode(k) + b":" + _encode(v) for k, v in value.items())
            parts.append(_encode(key) + b":{" + entries + b"}")
        else:
            parts.append(_encode(key) + b":" + _encode(value))
    return b"{" + b",".join(parts) + b"}"


def _peers(sources: Sources, query: str) -> Any:
    return peers_document(sources.peers)


def _int_param(params: dict[str, list[str]], name: str, default: int, low: int, high: int) -> int:
    values = params.get(name)
    if not values:
        return default
    if len(values) > 1:
        raise BadRequest(f"{name} given more than once")
    text = values[0].strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 19 or not low <= int(text) <= high:
        raise BadRequest(f"{name} must be an integer within {low}..{high}")
    return int(text)


@dataclass(frozen=True)
class Route:
    """A JSON route: ``build(sources, raw_query)``; ``public`` routes need no token.
    ``heavy``: its answer may cost real CPU, so the standalone server does not protect the
    connection from shedding while computing it."""

    build: Callable[[Sources, str], Any]
    public: bool = False
    heavy: bool = False


#: Every JSON route of both carriers. Adding a route is one line here.
ROUTES: Mapping[str, Route] = {
    HEALTH: Route(_health, public=True),
    "/api/services": Route(_services),
    "/api/flow": Route(_flow),
    "/api/stats": Route(_stats),
    "/api/history": Route(_history, heavy=True),
    "/api/peers": Route(_peers),
}


class Endpoint:
    """The endpoint's behaviour: sources, token rule and the JSON routes' answers.

    With ``token`` set, every route except the public ones (``/healthz``) needs
    ``Authorization: Bearer <token>``, compared in constant time over the raw header bytes.
    """

    def __init__(
        self, sources: Sources, *, token: str | None = None, logger: LoggerProtocol | None = None
    ) -> None:
        if token is not None and (not isinstance(token, str) or not token):
            raise ValueError("token must be a non-empty string or None")
        self.sources = sources
        self.logger = ensure_logger(logger, "jeeves_control_tower.observability")
        self._expected = f"Bearer {token}".encode() if token is not None else None

    @property
    def registry(self) -> CollectorRegistry:
        return self.sources.registry

    @property
    def flow(self) -> FlowRecorder:
        return self.sources.flow

    def authorized(self, header: str | bytes | None) -> bool:
        """``header`` is the ``Authorization`` value: raw bytes, or a str decoded as
        ISO-8859-1 (as both ``http.server`` and ASGI servers decode headers)."""
        if self._expected is None:
            return True
        if header is None:
            return False
        if isinstance(header, str):
            try:
                header = header.encode("latin-1")
            except UnicodeEncodeError:
                return False
        return hmac.compare_digest(header, self._expected)

    def json(self, path: str, query: str) -> Answer:
        """The answer of the JSON route at ``path`` (which must be in :data:`ROUTES`);
        the token is the caller's to check first. A builder that fails is a logged 500."""
        try:
            payload = ROUTES[path].build(self.sources, query)
        except BadRequest as exc:
            return error(400, str(exc))
        except Busy:
            return error(503, "busy: try again shortly", ("Retry-After", "1"))
        except Exception as exc:  # a broken reader must not break the server
            self.logger.error("observability_http_failed", path=path, error=repr(exc))
            return error(500, "internal error")
        return Answer(200, payload.body if isinstance(payload, Encoded) else _encode(payload))
