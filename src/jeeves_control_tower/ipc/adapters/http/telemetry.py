"""Spans and metrics of the HTTP bridge, both directions; never raises into a request.

Client (:class:`~.service.HttpService`): one ``CLIENT`` span per attempt, named ``POST``,
child of whatever is current (the dispatch attempt span when the coordinator is
instrumented), with the HTTP semantic-convention attributes (``http.request.method``,
``url.full``, ``server.address``, ``server.port``, ``http.response.status_code``,
``error.type``) and the dispatch's own (``jeeves.dispatch.service``/``method``/``attempt``).
Its context is what the request's ``traceparent`` carries.

Server (:mod:`.app`): one ``SERVER`` span per request, named ``POST /v1/{op}/{name}``
(``http.route``), continuing the caller's ``traceparent``; the bus's own producer span (when
the bus is instrumented) is its child.

Metrics: the adapters' families (:class:`~..metrics.AdapterMetrics`) with
``transport="http"``: ``commbus_wire_messages_total`` (client: ``sent``/``query`` per request
answered, ``received``/``reply`` per answer accepted; server: ``received`` per accepted
request with its pattern, dispatch counted as ``query``, ``sent``/``reply`` per answer
carrying a result) and ``commbus_wire_rejected_total`` (answers or requests refused, with
the reason).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.http_attributes import (
    HTTP_REQUEST_METHOD,
    HTTP_RESPONSE_STATUS_CODE,
    HTTP_ROUTE,
)
from opentelemetry.semconv.attributes.server_attributes import SERVER_ADDRESS, SERVER_PORT
from opentelemetry.semconv.attributes.url_attributes import URL_FULL, URL_PATH, URL_SCHEME
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from ..metrics import AdapterMetrics

__all__ = ["SCHEMA_URL", "HttpTelemetry", "dispatch_attributes"]

#: The semantic-conventions schema every span of the package follows (the value of
#: ``observability.semconv.SCHEMA_URL``, which this module does not import: that would load
#: the whole observability package; a test keeps the two equal).
SCHEMA_URL = "https://opentelemetry.io/schemas/1.44.0"

#: The longest ``tracestate`` a server span continues (W3C's 512 characters): a longer
#: one is dropped (the ``traceparent`` still continues), so an outside caller cannot make
#: every frame the bus sends for it kilobytes larger.
MAX_TRACESTATE = 512

DISPATCH_SERVICE = "jeeves.dispatch.service"
DISPATCH_METHOD = "jeeves.dispatch.method"
DISPATCH_ATTEMPT = "jeeves.dispatch.attempt"


class HttpTelemetry:
    """The tracer and metrics of one HTTP client or server (injected, with defaults)."""

    def __init__(
        self,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        metrics_registry: Any = None,
        metrics: bool = True,
        baggage: bool = False,
    ) -> None:
        #: whether a server span takes the caller's W3C ``baggage`` in too
        self.baggage = baggage
        self.tracer = trace.get_tracer(
            "jeeves_control_tower.ipc.adapters.http", None, tracer_provider, schema_url=SCHEMA_URL
        )
        self.metrics = AdapterMetrics("http", metrics_registry, enabled=metrics)

    @contextlib.contextmanager
    def client_span(
        self, url: str, host: str, port: int | None, dispatch: Mapping[str, Any]
    ) -> Iterator[Span]:
        """A current ``CLIENT`` span around one request; exceptions are recorded and
        re-raised."""
        attributes: dict[str, Any] = {HTTP_REQUEST_METHOD: "POST", URL_FULL: url}
        if host:
            attributes[SERVER_ADDRESS] = host
        if port is not None:
            attributes[SERVER_PORT] = port
        attributes.update(dispatch)
        with self.tracer.start_as_current_span(
            "POST",
            kind=SpanKind.CLIENT,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            yield span

    @staticmethod
    def client_outcome(span: Span, status: int | None, error: str | None) -> None:
        """Record the response status (if any) and the error type (if it failed)."""
        with contextlib.suppress(Exception):
            if status is not None:
                span.set_attribute(HTTP_RESPONSE_STATUS_CODE, status)
            if error is not None:
                span.set_attribute(ERROR_TYPE, error)
                span.set_status(Status(StatusCode.ERROR, error))

    @contextlib.contextmanager
    def server_span(
        self, headers: Mapping[str, str], route: str, path: str, scheme: str
    ) -> Iterator[Span]:
        """A current ``SERVER`` span continuing the caller's trace context (``traceparent``
        in ``headers``, with its ``tracestate`` up to :data:`MAX_TRACESTATE` characters,
        and its ``baggage`` only when :attr:`baggage` is set: what is current here goes
        into every frame the bus sends meanwhile), named ``POST {route}``."""
        token = None
        carrier: dict[str, str] = {}
        if "traceparent" in headers:
            carrier["traceparent"] = headers["traceparent"]
            state = headers.get("tracestate")
            if state is not None and len(state) <= MAX_TRACESTATE:
                carrier["tracestate"] = state
        if self.baggage and "baggage" in headers:
            carrier["baggage"] = headers["baggage"]
        if carrier:
            token = otel_context.attach(propagate.extract(carrier))
        try:
            with self.tracer.start_as_current_span(
                f"POST {route}",
                kind=SpanKind.SERVER,
                attributes={
                    HTTP_REQUEST_METHOD: "POST",
                    HTTP_ROUTE: route,
                    URL_PATH: path,
                    URL_SCHEME: scheme,
                },
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                yield span
        finally:
            if token is not None:
                otel_context.detach(token)

    @staticmethod
    def server_outcome(span: Span, status: int, error: str | None) -> None:
        """Record the response status; 5xx marks the span as an error (4xx is the
        caller's, as the HTTP conventions say for servers)."""
        with contextlib.suppress(Exception):
            span.set_attribute(HTTP_RESPONSE_STATUS_CODE, status)
            if error is not None:
                span.set_attribute(ERROR_TYPE, error)
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR, error or str(status)))

    @staticmethod
    def server_aborted(span: Span, error: str) -> None:
        """Record a request the client abandoned (no response sent): ``error.type`` only.
        The span status stays unset: the HTTP conventions leave client errors unset on
        ``SERVER`` spans, and a client leaving is not the server failing."""
        with contextlib.suppress(Exception):
            span.set_attribute(ERROR_TYPE, error)


def dispatch_attributes(service: str, method: str, attempt: int) -> dict[str, Any]:
    return {DISPATCH_SERVICE: service, DISPATCH_METHOD: method, DISPATCH_ATTEMPT: attempt}
