"""OpenAPI 3.1 of the HTTP face, generated from the registered message classes.

One operation per registered type and pattern (``POST /v1/publish/OrderPlaced``...), its
request body the JSON Schema of the class (:mod:`jeeves_control_tower.contracts.schema`,
exactly what the decoder accepts), and ``POST /v1/dispatch/{service}`` with the envelope
contract of :mod:`.envelope`. Every error is documented as RFC 9457 problem details with
the statuses :mod:`.face` answers with. A type whose name holds ``/`` cannot be a path
segment and is left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ....contracts.catalog import MessageContract, catalog
from ....contracts.schema import JsonSchema
from ....types import SchedulingPriority
from ..wire import MessageRegistry
from .envelope import DEADLINE_HEADER, MAX_ID
from .problems import KINDS

__all__ = ["ENVELOPE_SCHEMA", "openapi_document"]

_REF = "#/components/schemas/"
# Identifiers: printable, at most MAX_ID characters (the face answers 422 beyond).
_NAME = {"type": "string", "pattern": r"\S", "maxLength": MAX_ID}
_ID = {"type": "string", "maxLength": MAX_ID}
_OPT_ID = {"type": ["string", "null"], "maxLength": MAX_ID}
_STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}

#: What ``Envelope.to_dict()`` gives and ``Envelope.from_dict`` takes.
ENVELOPE_SCHEMA: JsonSchema = {
    "type": "object",
    "required": ["request_context"],
    "properties": {
        "envelope_id": _ID,
        "request_context": {
            "type": "object",
            "required": ["request_id", "capability"],
            "properties": {
                "request_id": _NAME,
                "capability": _NAME,
                "session_id": _OPT_ID,
                "user_id": _OPT_ID,
                "trace_id": _OPT_ID,
                "span_id": _OPT_ID,
                "tags": {**_STRINGS, "maxProperties": 64},
                "trace_carrier": {**_STRINGS, "maxProperties": 8},
            },
        },
        "request_id": _ID,
        "session_id": _OPT_ID,
        "user_id": _OPT_ID,
        "metadata": {"type": "object"},
        "outputs": {"type": "object"},
        "errors": {"type": "array", "items": {"type": "object"}},
        "processing_history": {"type": "array", "items": {"type": "object"}},
        "terminated": {"type": "boolean"},
        "termination_reason": {"type": ["string", "null"]},
        "created_at": {"type": "string", "format": "date-time"},
        "completed_at": {"type": ["string", "null"], "format": "date-time"},
    },
}

_DISPATCH_REQUEST: JsonSchema = {
    "type": "object",
    "required": ["target", "envelope"],
    "properties": {
        "target": {
            "type": "object",
            "required": ["method"],
            "properties": {
                "service_name": {**_ID, "description": "informative"},
                "method": _NAME,
                "priority": {"enum": [p.value for p in SchedulingPriority]},
                "attempt": {"type": "integer", "description": "informative"},
                "max_retries": {"type": "integer", "minimum": 0, "maximum": 10},
            },
        },
        "envelope": {"$ref": _REF + "Envelope"},
    },
}

_PROBLEM: JsonSchema = {
    "type": "object",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string", "format": "uri-reference"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "outcome": {"type": "string"},
        "envelope": {"$ref": _REF + "Envelope"},
    },
}

_ACCEPTED: JsonSchema = {
    "type": "object",
    "required": ["status"],
    "properties": {"status": {"const": "accepted"}},
}
_RESULT: JsonSchema = {
    "type": "object",
    "required": ["result"],
    "properties": {"result": {}, "type": {"type": "string"}},
}


def openapi_document(
    registry: MessageRegistry | None = None,
    *,
    types: Sequence[str] | None = None,
    dispatch: bool = True,
    token: bool = False,
    title: str = "jeeves bus",
    version: str = "1",
    server_url: str = "/",
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of a face serving ``registry``'s ``types`` (default: all
    but the built-ins), with ``/v1/dispatch/{service}`` when ``dispatch``, and bearer
    security when ``token``."""
    schemas: dict[str, JsonSchema] = {}
    contracts = catalog(registry, types=types, defs=schemas, ref_prefix=_REF)
    paths: dict[str, Any] = {}
    for contract in contracts:
        if "/" in contract.name:
            continue
        schemas[contract.name] = contract.schema
        for pattern in contract.patterns:
            paths[f"/v1/{pattern}/{contract.name}"] = {"post": _message_op(contract, pattern)}
    if dispatch:
        schemas["Envelope"] = ENVELOPE_SCHEMA
        schemas["DispatchRequest"] = _DISPATCH_REQUEST
        paths["/v1/dispatch/{service}"] = {"post": _dispatch_op()}
    schemas["Problem"] = _PROBLEM
    components: dict[str, Any] = {"schemas": schemas}
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "info": {"title": title, "version": version},
        "servers": [{"url": server_url}],
        "paths": paths,
        "components": components,
    }
    if token:
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        doc["security"] = [{"bearer": []}]
    return doc


def _deadline_header() -> dict[str, Any]:
    return {
        "name": DEADLINE_HEADER,
        "in": "header",
        "required": False,
        "description": (
            "milliseconds the caller waits at most (bounds the server's own limit; 0: the "
            "server's limit alone); anything but 1 to 9 ASCII digits is a 400"
        ),
        "schema": {"type": "string", "pattern": "^[0-9]{1,9}$"},
    }


def _problems(*kinds: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in kinds:
        status, title = KINDS[kind]
        entry = out.setdefault(
            str(status),
            {"description": title, "content": _content("Problem", "application/problem+json")},
        )
        if entry["description"] != title:
            entry["description"] += f"; {title}"
    return out


def _content(schema: str | JsonSchema, media: str = "application/json") -> dict[str, Any]:
    body = {"$ref": _REF + schema} if isinstance(schema, str) else schema
    return {media: {"schema": body}}


_ALWAYS = (
    "malformed",
    "unauthorized",
    "not-found",
    "request-timeout",
    "too-large",
    "unsupported-media-type",
    "invalid-payload",
    "handler-failed",
)


def _message_op(contract: MessageContract, pattern: str) -> dict[str, Any]:
    more: tuple[str, ...]
    if pattern == "query":
        ok = {"200": {"description": "the handler's result", "content": _content(_RESULT)}}
        more = ("bad-header", "no-handler", "unserialisable-result", "unavailable", "timeout")
    else:
        ok = {"202": {"description": "taken by the bus", "content": _content(_ACCEPTED)}}
        more = ("unavailable",)
    return {
        "operationId": f"{pattern}_{contract.name}",
        "summary": f"{pattern} {contract.name}",
        "tags": [pattern],
        "parameters": [_deadline_header()] if pattern == "query" else [],
        "requestBody": {"required": True, "content": _content(contract.name)},
        "responses": {**ok, **_problems(*_ALWAYS, *more)},
    }


def _dispatch_op() -> dict[str, Any]:
    return {
        "operationId": "dispatch",
        "summary": "dispatch an envelope to a registered service",
        "tags": ["dispatch"],
        "parameters": [
            {"name": "service", "in": "path", "required": True, "schema": {"type": "string"}},
            _deadline_header(),
        ],
        "requestBody": {"required": True, "content": _content("DispatchRequest")},
        "responses": {
            "200": {"description": "the resulting envelope", "content": _content("Envelope")},
            **_problems(*_ALWAYS, "bad-header", "no-handler", "unavailable", "timeout"),
        },
    }
