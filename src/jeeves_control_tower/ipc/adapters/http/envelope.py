"""The JSON contract of a dispatch over HTTP, both ways (the client in :mod:`.service`, the
server in :mod:`.face`): one request body, one answer rule, the header names.

Request (``POST``, ``Content-Type: application/json``)::

    {"target": {"service_name": "billing", "method": "charge", "priority": "normal",
                "attempt": 1, "max_retries": 3},
     "envelope": {...Envelope.to_dict()...}}

Headers: ``Jeeves-Deadline-Ms`` (integer milliseconds left before the dispatch's deadline,
relative so that no clock needs to agree), ``Idempotency-Key`` (the envelope id: every
attempt of one dispatch sends the same one), ``traceparent``/``tracestate`` (W3C trace
context), ``Authorization: Bearer <token>`` when a token is configured.

Answer (2xx, ``application/json``): an object with any of the envelope's fields; the ones
read are ``outputs`` and ``metadata`` (objects, replacing the sent ones), ``errors`` (an
array of objects, replacing), ``terminated`` and ``termination_reason`` (the service ended
it: :class:`~.service.HttpService` reports that as a failed dispatch). ``envelope_id``,
when present, must be the one sent. Echoing the whole envelope back is therefore valid, and
so is ``{"outputs": {...}}``. ``204 No Content`` leaves the envelope as sent.
"""

from __future__ import annotations

import json
from typing import Any

from ....types import DispatchTarget, Envelope

__all__ = [
    "DEADLINE_HEADER",
    "IDEMPOTENCY_HEADER",
    "MAX_ID",
    "AnswerError",
    "apply_answer",
    "ascii_digits",
    "check_identifiers",
    "request_body",
    "target_from_json",
]

DEADLINE_HEADER = "Jeeves-Deadline-Ms"
IDEMPOTENCY_HEADER = "Idempotency-Key"


def ascii_digits(text: str) -> bool:
    """Whether a header value is ASCII digits only (``str.isdigit`` also takes ``"²"``,
    which ``int`` refuses): ``Content-Length``, ``Retry-After``."""
    return text.isascii() and text.isdigit()


#: The longest identifier a request may carry (characters, as gRPC's hub caps names):
#: ``target`` ``service_name``/``method``/``priority`` and the envelope's ids.
MAX_ID = 256
_ENVELOPE_IDS = ("envelope_id", "request_id", "session_id", "user_id")
_CONTEXT_IDS = ("request_id", "capability", "session_id", "user_id", "trace_id", "span_id")

#: The answer fields that update the envelope, and the JSON type each must have.
_UPDATABLE: dict[str, type] = {"outputs": dict, "metadata": dict, "errors": list}


class AnswerError(ValueError):
    """An answer that does not follow the contract (the reason says how)."""


def request_body(target: DispatchTarget, attempt: int, envelope: Envelope) -> bytes:
    """The JSON request body of attempt ``attempt`` of a dispatch of ``envelope``."""
    return json.dumps(
        {
            "target": {
                "service_name": target.service_name,
                "method": target.method,
                "priority": target.priority.value,
                "attempt": attempt,
                "max_retries": target.max_retries,
            },
            "envelope": envelope.to_dict(),
        },
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()


def target_from_json(data: Any) -> dict[str, Any]:
    """The checked ``target`` object of a request body (``method`` a non-empty string,
    ``service_name`` and ``priority`` strings when present); ``AnswerError`` when it is
    not. A server takes the service from its URL: ``service_name`` is the caller's name
    for it, informative."""
    if not isinstance(data, dict):
        raise AnswerError("target must be an object")
    method = data.get("method")
    if not isinstance(method, str) or not method.strip():
        raise AnswerError("target.method must be a non-empty string")
    for key in ("service_name", "priority"):
        if key in data and not isinstance(data[key], str):
            raise AnswerError(f"target.{key} must be a string")
    return data


def check_identifiers(target: dict[str, Any], envelope: dict[str, Any]) -> None:
    """``AnswerError`` unless every identifier of a request body (``target``'s
    ``service_name``, ``method``, ``priority``; the envelope's and its request context's
    ids) that is a string is printable and at most :data:`MAX_ID` characters. Types are
    the decoders' to check; the error names the field, never the value."""
    fields = [(f"target.{k}", target.get(k)) for k in ("service_name", "method", "priority")]
    fields += [(f"envelope.{k}", envelope.get(k)) for k in _ENVELOPE_IDS]
    context = envelope.get("request_context")
    if isinstance(context, dict):
        fields += [(f"envelope.request_context.{k}", context.get(k)) for k in _CONTEXT_IDS]
    for name, value in fields:
        if isinstance(value, str) and (len(value) > MAX_ID or not value.isprintable()):
            raise AnswerError(f"{name} must be printable and at most {MAX_ID} characters")


def apply_answer(envelope: Envelope, answer: Any) -> Envelope:
    """Update ``envelope`` in place from a decoded 2xx answer and return it; ``AnswerError``
    (before anything is changed) when the answer breaks the contract."""
    if not isinstance(answer, dict):
        raise AnswerError(f"the answer must be a JSON object, got {type(answer).__name__}")
    sent_id = answer.get("envelope_id")
    if sent_id is not None and sent_id != envelope.envelope_id:
        raise AnswerError("the answer is about another envelope (envelope_id differs)")
    for key, kind in _UPDATABLE.items():
        if key in answer and not isinstance(answer[key], kind):
            raise AnswerError(f"{key} must be a JSON {'object' if kind is dict else 'array'}")
    errors = answer.get("errors")
    if errors is not None and not all(isinstance(e, dict) for e in errors):
        raise AnswerError("errors must be an array of objects")
    terminated = answer.get("terminated", False)
    reason = answer.get("termination_reason")
    if not isinstance(terminated, bool) or not (reason is None or isinstance(reason, str)):
        raise AnswerError("terminated must be a boolean and termination_reason a string")
    if "outputs" in answer:
        envelope.outputs = answer["outputs"]
    if "metadata" in answer:
        envelope.metadata = answer["metadata"]
    if errors is not None:
        envelope.errors = errors
    if terminated and not envelope.terminated:
        envelope.terminate(reason or "terminated by the HTTP service")
    return envelope
