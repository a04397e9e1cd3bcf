"""The demo's tracer provider, configured from the standard ``OTEL_*`` environment.

Everything is read by the OpenTelemetry SDK and exporters themselves; nothing here parses a
variable the SDK already parses or builds a URL:

- the resource is ``Resource.create()``: ``OTEL_SERVICE_NAME`` and
  ``OTEL_RESOURCE_ATTRIBUTES`` (``service.name`` defaults to ``jeeves-demo`` when neither
  names the service);
- the exporters are the ``opentelemetry_traces_exporter`` entry points named by
  ``OTEL_TRACES_EXPORTER`` (comma separated; ``none``: no exporter). ``otlp`` is the
  ``otlp_proto_http`` or ``otlp_proto_grpc`` exporter as
  ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`` / ``OTEL_EXPORTER_OTLP_PROTOCOL`` say (default
  ``http/protobuf``), the specification's names;
- each exporter is built with no arguments, so it reads its own variables
  (``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` else ``OTEL_EXPORTER_OTLP_ENDPOINT``, headers,
  timeout, compression...).

One departure from the SDK's defaults, on purpose: a demo exports nothing unless asked. With
``OTEL_TRACES_EXPORTER`` unset, spans are exported over OTLP only when an OTLP endpoint
variable is set (the SDK would default to ``otlp`` and post to ``localhost:4318``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

__all__ = ["DEFAULT_SERVICE_NAME", "exporter_names", "span_exporters", "tracer_provider"]

DEFAULT_SERVICE_NAME = "jeeves-demo"
_GROUP = "opentelemetry_traces_exporter"
_OTLP_BY_PROTOCOL = {"http/protobuf": "otlp_proto_http", "grpc": "otlp_proto_grpc"}
_ENDPOINTS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


def exporter_names(environ: Mapping[str, str] = os.environ) -> list[str]:
    """The entry-point names of the exporters to build (``[]``: none)."""
    configured = environ.get("OTEL_TRACES_EXPORTER", "").strip()
    if not configured:
        configured = "otlp" if any(environ.get(name) for name in _ENDPOINTS) else "none"
    names = [n.strip().lower() for n in configured.split(",") if n.strip()]
    if "none" in names:
        return []
    protocol = (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    out = []
    for name in names:
        if name == "otlp":
            if protocol not in _OTLP_BY_PROTOCOL:
                raise ValueError(f"unsupported OTLP protocol {protocol!r}")
            name = _OTLP_BY_PROTOCOL[protocol]
        if name not in out:
            out.append(name)
    return out


def span_exporters(environ: Mapping[str, str] = os.environ) -> list[Any]:
    """One exporter per :func:`exporter_names` entry, each built with no arguments.
    ``ValueError`` names an exporter with no installed entry point."""
    found = {ep.name: ep for ep in entry_points(group=_GROUP)}
    exporters = []
    for name in exporter_names(environ):
        if name not in found:
            raise ValueError(
                f"OTEL_TRACES_EXPORTER: no {_GROUP!r} entry point named {name!r}"
                f" (installed: {', '.join(sorted(found)) or 'none'})"
            )
        exporters.append(found[name].load()())
    return exporters


def tracer_provider(otlp_traces_endpoint: str | None = None) -> TracerProvider:
    """An SDK ``TracerProvider`` with the environment's resource and exporters (each behind
    a ``BatchSpanProcessor``). ``otlp_traces_endpoint``, when given, wins over the
    environment: one OTLP/HTTP exporter posting to that URL as is (the full traces URL,
    ``OTLPSpanExporter(endpoint=...)``)."""
    from opentelemetry.sdk.resources import SERVICE_NAME, OTELResourceDetector, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    named = OTELResourceDetector().detect().attributes.get(SERVICE_NAME)
    resource = Resource.create({} if named else {SERVICE_NAME: DEFAULT_SERVICE_NAME})
    provider = TracerProvider(resource=resource)
    if otlp_traces_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporters: list[Any] = [OTLPSpanExporter(endpoint=otlp_traces_endpoint)]
    else:
        exporters = span_exporters()
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider
