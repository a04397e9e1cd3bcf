"""Errors of the HTTP face as RFC 9457 problem details (``application/problem+json``).

Each problem has a ``type`` (a ``tag:`` URI naming the kind, stable: clients may switch on
it), ``title`` (the same for every problem of that type), ``status``, ``detail`` (this
occurrence, bounded, never the text of an exception raised by application code) and
``instance`` (the request path). Dispatch problems add ``outcome`` (the dispatch outcome).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response

__all__ = ["KINDS", "PROBLEM_TYPE", "Problem", "problem_type"]

PROBLEM_TYPE = "application/problem+json"
_TAG = "tag:jeeves-control-tower,2026:problem:"

#: kind -> (status, title): every problem the face answers with.
KINDS: dict[str, tuple[int, str]] = {
    "malformed": (400, "The request body is not valid JSON"),
    "bad-header": (400, "A request header is malformed"),
    "unauthorized": (401, "A valid bearer token is required"),
    "not-found": (404, "No such message type or service"),
    "no-handler": (404, "Nothing handles this message type or service"),
    "method-not-allowed": (405, "This route does not take this method"),
    "request-timeout": (408, "The request body did not arrive in time"),
    "too-large": (413, "The request body is too large"),
    "unsupported-media-type": (415, "The request body must be application/json"),
    "invalid-payload": (422, "The payload does not match the message class"),
    "handler-failed": (500, "The handler failed"),
    "unserialisable-result": (500, "The result cannot be sent as JSON"),
    "unavailable": (503, "The bus or the service cannot take the request now"),
    "timeout": (504, "No answer before the deadline"),
}


def problem_type(kind: str) -> str:
    return _TAG + kind


class Problem(Exception):
    """Raised inside the face's handlers; turned into the response by :meth:`response`."""

    def __init__(self, kind: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.kind = kind
        self.status, self.title = KINDS[kind]
        self.detail = detail[:500]
        self.extra = extra

    def response(self, instance: str) -> Response:
        body = {
            "type": problem_type(self.kind),
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "instance": instance,
            **self.extra,
        }
        headers = {"Cache-Control": "no-store"}
        if self.kind == "unauthorized":
            headers["WWW-Authenticate"] = 'Bearer realm="jeeves"'
        if self.kind == "request-timeout":  # the rest of the body may still come: no reuse
            headers["Connection"] = "close"
        return Response(
            json.dumps(body, ensure_ascii=False, default=str),
            status_code=self.status,
            media_type=PROBLEM_TYPE,
            headers=headers,
        )
