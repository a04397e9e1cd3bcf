"""What the HTTP face does with one request: check it, turn it into a bus call, answer.

Order of checks (the first failing one answers): bearer token (401), ``Content-Type``
``application/json`` (415), body within ``max_body_bytes`` by its declared length and as
read (413), the whole body read within ``read_timeout`` of the request's arrival (408,
``Connection: close``), JSON (400), a known message type offered with this pattern or a
registered service (404), the payload against the message class (422). Then:

- ``publish`` / ``send``: ``await bus.publish(message)`` / ``bus.send(message)``, ``202``
  once the bus took it (its subscribers or handler have run: the bus's own semantics);
- ``query``: ``200 {"result": ...}`` (plus ``"type"`` when the result is a registered
  message, whose payload ``result`` then is); no handler 404, aborted by a middleware or
  transport down 503, timeout 504, the handler raised 500 (the exception's type only);
- ``dispatch``: the :mod:`.envelope` request body, ``200`` with the resulting envelope
  (``Envelope.to_dict()``, a valid answer for :class:`~.service.HttpService`, so one
  process's face can be another's HTTP service); ended ``unknown_service``/``no_handler``
  404, ``unhealthy``/``overloaded`` 503, ``timeout`` 504, each with the envelope in the
  problem's ``envelope`` member; ended ``error`` is a 200 with the terminated envelope.

A client that disconnects before its body ends gets nothing (there is nobody to answer):
counted as ``commbus_wire_rejected_total{reason="client_disconnect"}``, logged at info,
its span given ``error.type=client_disconnect`` and no status code, not marked an error.

The time a query or dispatch may take is the smallest of the server's bound and the
caller's ``Jeeves-Deadline-Ms`` (1 to 9 ASCII digits, else 400 ``bad-header``; 0: no
bound of the caller's). Everything arriving is hostile: sizes are bounded before
reading, JSON nesting by the parser's recursion limit, and error details never echo more
than a bounded excerpt.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
from collections.abc import Mapping
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from ....types import DispatchTarget, Envelope, LoggerProtocol, SchedulingPriority
from ... import InMemoryCommBus, NoHandlerError, QueryAbortedError, TransportError
from ...dispatch import CommBusCoordinator
from ..metrics import RECEIVED, SENT
from ..wire import MessageRegistry, WireError
from .envelope import (
    DEADLINE_HEADER,
    AnswerError,
    ascii_digits,
    check_identifiers,
    target_from_json,
)
from .problems import Problem
from .telemetry import HttpTelemetry

__all__ = ["BusFace"]

_JSON_TYPES = ("application/json",)
_DEADLINE_MS = re.compile(r"[0-9]{1,9}", re.ASCII)
#: ``error.type`` and rejection reason of a request whose client left before its body ended.
CLIENT_DISCONNECT = "client_disconnect"
_OUTCOME_PROBLEM = {
    "unknown_service": "no-handler",
    "no_handler": "no-handler",
    "unhealthy": "unavailable",
    "overloaded": "unavailable",
    "timeout": "timeout",
}


class BusFace:
    """The request handling behind :func:`~.app.create_app` (one per app)."""

    def __init__(
        self,
        bus: InMemoryCommBus,
        coordinator: CommBusCoordinator | None,
        registry: MessageRegistry,
        patterns: Mapping[str, tuple[str, ...]],
        *,
        token: str | None,
        max_body_bytes: int,
        timeout: float,
        read_timeout: float,
        telemetry: HttpTelemetry,
        logger: LoggerProtocol,
    ) -> None:
        self.bus = bus
        self.coordinator = coordinator
        self.registry = registry
        self.patterns = patterns
        self._token = f"Bearer {token}".encode() if token else None
        self.max_body_bytes = max_body_bytes
        self.timeout = timeout
        self.read_timeout = read_timeout
        self.telemetry = telemetry
        self.logger = logger

    def authorised(self, request: Request) -> bool:
        if self._token is None:
            return True
        given = request.headers.get("authorization", "").encode("latin-1", "replace")
        return hmac.compare_digest(given, self._token)

    async def handle(self, request: Request, op: str) -> Response:
        """One ``POST /v1/{op}/{name}``: the response, problems included."""
        route = "/v1/dispatch/{service}" if op == "dispatch" else f"/v1/{op}/{{type}}"
        name = request.path_params["service" if op == "dispatch" else "type"]
        instance = request.url.path
        telemetry = self.telemetry
        with telemetry.server_span(request.headers, route, instance, request.url.scheme) as span:
            try:
                response = await self._handle(request, op, name)
            except Problem as problem:
                telemetry.server_outcome(span, problem.status, problem.kind)
                return problem.response(instance)
            except ClientDisconnect:  # the caller's doing, not a server fault: no 5xx
                telemetry.metrics.rejected(CLIENT_DISCONNECT)
                telemetry.server_aborted(span, CLIENT_DISCONNECT)
                self.logger.info("http_face_client_disconnected", op=op)
                # Never delivered (nobody is listening); the ASGI call still needs one.
                return Response(status_code=400, headers={"Connection": "close"})
            except Exception as exc:  # a bug here: answer 500, never the traceback
                self.logger.error("http_face_failed", op=op, error_type=type(exc).__name__)
                failed = Problem("handler-failed", f"internal error ({type(exc).__name__})")
                telemetry.server_outcome(span, 500, type(exc).__name__)
                return failed.response(instance)
            telemetry.server_outcome(span, response.status_code, None)
            return response

    async def _handle(self, request: Request, op: str, name: str) -> Response:
        if not self.authorised(request):
            raise self._rejected("unauthorized", "unauthorized", "missing or wrong bearer token")
        media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media not in _JSON_TYPES and not media.endswith("+json"):
            raise self._rejected(
                "unsupported-media-type", "malformed", f"Content-Type {media[:60]!r}"
            )
        body = await self._read(request)
        try:
            data = json.loads(body, parse_constant=_no_constant)
        except (ValueError, RecursionError) as exc:
            raise self._rejected(
                "malformed", "malformed", f"not JSON ({type(exc).__name__})"
            ) from None
        if op == "dispatch":
            return await self._dispatch(name, data, self._deadline(request))
        if op not in self.patterns.get(name, ()):
            raise self._rejected("not-found", "unknown_type", f"no {op} of {name[:100]!r} here")
        deadline = self._deadline(request) if op == "query" else self.timeout
        try:
            message = self.registry.from_payload(name, data)
        except WireError as exc:
            raise self._rejected("invalid-payload", exc.reason, exc.detail) from None
        self.telemetry.metrics.wire(RECEIVED, op)
        try:
            if op == "publish":
                await self.bus.publish(message)
                return _json({"status": "accepted"}, 202)
            if op == "send":
                await self.bus.send(message)
                return _json({"status": "accepted"}, 202)
            result = await self.bus.query(message, deadline)
        except NoHandlerError:
            raise Problem("no-handler", f"nothing handles {name[:100]!r}") from None
        except WireError as exc:
            if self.bus.has_handler(name):  # a local handler raised it: not the caller's fault
                raise Problem("handler-failed", "the handler raised WireError") from None
            # the query was valid here, but the wire cannot carry it (too deep, too big)
            raise self._rejected("invalid-payload", exc.reason, exc.detail) from None
        except TransportError as exc:
            cause = exc.__cause__
            if isinstance(cause, WireError):  # the same, from a publish or send
                raise self._rejected("invalid-payload", cause.reason, cause.detail) from None
            raise Problem("unavailable", "TransportError") from None
        except TimeoutError:
            raise Problem("timeout", f"no answer within {deadline:.3g}s") from None
        except QueryAbortedError:
            raise Problem("unavailable", "QueryAbortedError") from None
        except Exception as exc:
            raise Problem("handler-failed", f"the handler raised {type(exc).__name__}") from None
        return self._result(result)

    async def _read(self, request: Request) -> bytes:
        limit = self.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and (not ascii_digits(declared) or int(declared) > limit):
            raise self._rejected("too-large", "oversized", f"more than {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        try:
            # One deadline for the whole body, however the bytes trickle in.
            async with asyncio.timeout(self.read_timeout):
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit:
                        raise self._rejected("too-large", "oversized", f"more than {limit} bytes")
                    chunks.append(chunk)
        except TimeoutError:
            detail = f"the body did not arrive within {self.read_timeout:.3g}s"
            raise self._rejected("request-timeout", "read_timeout", detail) from None
        return b"".join(chunks)

    def _deadline(self, request: Request) -> float:
        """The server's bound, shortened by ``Jeeves-Deadline-Ms`` when that is 1 to 9
        ASCII digits and not 0 (absent or 0: the server's bound); anything else is a 400."""
        given = request.headers.get(DEADLINE_HEADER.lower())
        if given is None:
            return self.timeout
        if _DEADLINE_MS.fullmatch(given) is None:
            detail = f"{DEADLINE_HEADER} must be 1 to 9 ASCII digits (milliseconds)"
            raise self._rejected("bad-header", "malformed", detail)
        ms = int(given)
        return min(self.timeout, ms / 1000.0) if ms > 0 else self.timeout

    def _result(self, result: Any) -> Response:
        body: dict[str, Any]
        if self.registry.is_registered_object(result):
            name, payload = self.registry.to_payload(result)
            body = {"type": name, "result": payload}
        else:
            body = {"result": result}
        try:
            response = _json(body, 200)
        except (TypeError, ValueError) as exc:
            raise Problem("unserialisable-result", type(exc).__name__) from None
        self.telemetry.metrics.wire(SENT, "reply")
        return response

    async def _dispatch(self, service: str, data: Any, deadline: float) -> Response:
        coordinator = self.coordinator
        if coordinator is None or coordinator.get_service(service) is None:
            raise self._rejected("not-found", "unknown_type", f"no service {service[:100]!r}")
        try:
            if not isinstance(data, dict) or not isinstance(data.get("envelope"), dict):
                raise AnswerError("the body must be an object with an envelope object")
            wanted = target_from_json(data.get("target"))
            check_identifiers(wanted, data["envelope"])
            retries = wanted.get("max_retries", 0)
            if not isinstance(retries, int) or isinstance(retries, bool) or not 0 <= retries <= 10:
                raise AnswerError("target.max_retries must be an integer within 0..10")
            target = DispatchTarget(
                service_name=service,
                method=wanted["method"],
                priority=SchedulingPriority(wanted.get("priority", "normal")),
                timeout_seconds=deadline,
                max_retries=retries,
            )
            envelope = Envelope.from_dict(data["envelope"])
        except ValueError as exc:  # AnswerError included; messages name fields, not values
            raise self._rejected("invalid-payload", "invalid_message", str(exc)) from None
        except (TypeError, KeyError, AttributeError) as exc:
            detail = f"malformed envelope ({type(exc).__name__})"
            raise self._rejected("invalid-payload", "invalid_message", detail) from None
        self.telemetry.metrics.wire(RECEIVED, "query")
        result = await coordinator.dispatch(target, envelope)
        answer = result.to_dict()
        outcome = _outcome(result)
        kind = _OUTCOME_PROBLEM.get(outcome)
        if kind is not None:
            raise Problem(
                kind, result.termination_reason or outcome, outcome=outcome, envelope=answer
            )
        self.telemetry.metrics.wire(SENT, "reply")
        return _json(answer, 200)

    def _rejected(self, kind: str, reason: str, detail: str) -> Problem:
        self.telemetry.metrics.rejected(reason)
        return Problem(kind, detail)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _outcome(envelope: Envelope) -> str:
    if not envelope.terminated:
        return "ok"
    last = envelope.errors[-1] if envelope.errors else {}
    outcome = last.get("outcome") if isinstance(last, dict) else None
    return outcome if isinstance(outcome, str) else "error"


def _json(body: Any, status: int) -> Response:
    return Response(
        json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":")),
        status_code=status,
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )
