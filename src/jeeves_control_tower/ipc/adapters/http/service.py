"""HttpService: a dispatch handler that runs the dispatch on an HTTP service.

``coordinator.register_handler("billing", HttpService("https://billing.internal/dispatch"))``

Each attempt of a dispatch is one ``POST`` of the JSON of :mod:`.envelope` (target and
envelope) with the dispatch's remaining time (``Jeeves-Deadline-Ms``), the envelope id as
``Idempotency-Key`` and the W3C trace context. Admission (``max_concurrent``, priorities),
retries and the deadline are the coordinator's, exactly as for a local handler: the service
tells the coordinator what each answer means by what it returns or raises.

======================================  ================================================
answer                                  outcome
======================================  ================================================
2xx with a valid JSON answer (or 204)   the envelope, updated (:func:`.envelope.apply_answer`)
2xx whose answer is terminated          not retryable: the dispatch ends ``error`` with the
                                        service's reason (outputs and errors applied)
408, 429, 5xx                           :class:`HttpServiceError`, retryable; a
                                        ``Retry-After`` (seconds or HTTP date) is the
                                        least wait before the next attempt, which
                                        happens only if it fits before the deadline
connection refused/reset, timeout,      retryable (``HttpServiceError``, ``status`` None)
broken HTTP
any other status (3xx, other 4xx)       not retryable: the dispatch ends ``error`` with
                                        the status and an excerpt of the body
2xx that is not a valid answer, or an   not retryable (the same request would get the
answer over ``max_response_bytes``      same answer)
======================================  ================================================

Bounds: each attempt waits at most ``timeout`` seconds (default: no bound of its own) and
never past the dispatch's deadline (the coordinator cancels it there, outcome ``timeout``);
an answer is read up to ``max_response_bytes`` (default 1 MiB); an error body is read only
up to ``excerpt_bytes`` (default 512), and the excerpt keeps printable characters only.
Connections come from a shared, bounded :class:`~.pool.HttpPool` (``pool=``; default: the
event loop's :func:`~.pool.default_pool`).

Called outside a dispatch (no :func:`~jeeves_control_tower.ipc.dispatch.current_attempt`),
the body's target is ``{"service_name": <host>, "method": "call", ...}``, attempt 1, and
the request is bounded by ``timeout`` (default 30 s).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx2
from opentelemetry import propagate, trace

from ....types import DispatchTarget, Envelope
from ...dispatch.attempt import AttemptFailed, current_attempt
from ..features import redact_url
from ..metrics import RECEIVED, SENT
from .envelope import (
    DEADLINE_HEADER,
    IDEMPOTENCY_HEADER,
    AnswerError,
    apply_answer,
    ascii_digits,
    request_body,
)
from .pool import HttpPool, default_pool
from .telemetry import HttpTelemetry, dispatch_attributes

__all__ = ["HttpService", "HttpServiceError"]

_RETRYABLE_STATUS = frozenset({408, 429})
_DIRECT_TIMEOUT = 30.0


class HttpServiceError(AttemptFailed):
    """An attempt that failed at the HTTP service: ``status`` (``None`` when no answer
    came), ``excerpt`` (printable start of the error body), ``retryable``, ``retry_after``."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        excerpt: str = "",
        retryable: bool,
        retry_after: float | None = None,
        kind: str | None = None,
    ) -> None:
        super().__init__(message, retryable=retryable, retry_after=retry_after)
        self.status = status
        self.excerpt = excerpt
        #: ``error.type`` on the client span: the status, ``timeout``, ``connection`` or
        #: the rejection reason of an unusable answer
        self.kind = kind or (str(status) if status is not None else "error")


class HttpService:
    """A dispatch handler backed by an HTTP endpoint (see the module docstring).

    Safe to share between services and dispatches: it holds no per-request state.
    """

    #: asks the coordinator for :func:`current_attempt` (the deadline and the target)
    wants_dispatch_attempt: ClassVar[bool] = True

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
        pool: HttpPool | None = None,
        max_response_bytes: int = 1 << 20,
        excerpt_bytes: int = 512,
        tracer_provider: trace.TracerProvider | None = None,
        metrics_registry: Any = None,
        metrics: bool = True,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("url must be an absolute http:// or https:// URL")
        if timeout is not None and not timeout > 0:
            raise ValueError("timeout must be > 0")
        if max_response_bytes < 1 or excerpt_bytes < 0:
            raise ValueError("max_response_bytes >= 1 and excerpt_bytes >= 0 are required")
        self.url = url
        self._shown_url = redact_url(url)
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self.timeout = timeout
        self.max_response_bytes = max_response_bytes
        self.excerpt_bytes = excerpt_bytes
        self._pool = pool
        base = {"Content-Type": "application/json", "Accept": "application/json"}
        base.update(headers or {})
        if token is not None:
            base["Authorization"] = f"Bearer {token}"
        self._headers = base
        self._telemetry = HttpTelemetry(
            tracer_provider=tracer_provider, metrics_registry=metrics_registry, metrics=metrics
        )

    def __repr__(self) -> str:
        return f"HttpService({self._shown_url!r})"

    async def __call__(self, envelope: Envelope) -> Envelope:
        attempt = current_attempt()
        if attempt is None:
            target = DispatchTarget(service_name=self._host, method="call")
            number, left = 1, None
        else:
            target, number, left = attempt.target, attempt.attempt, attempt.remaining()
        bounds = [b for b in (self.timeout, left) if b is not None]
        budget = max(0.001, min(bounds)) if bounds else _DIRECT_TIMEOUT
        headers = dict(self._headers)
        headers[IDEMPOTENCY_HEADER] = envelope.envelope_id
        if left is not None:
            headers[DEADLINE_HEADER] = str(max(1, int(left * 1000)))
        body = request_body(target, number, envelope)
        telemetry = self._telemetry
        with telemetry.client_span(
            self._shown_url,
            self._host,
            self._port,
            dispatch_attributes(target.service_name, target.method, number),
        ) as span:
            propagate.inject(headers)
            status: int | None = None
            try:
                status, answer = await self._post(body, headers, budget)
                result = self._answer(envelope, status, answer)
            except HttpServiceError as exc:
                telemetry.client_outcome(span, exc.status if status is None else status, exc.kind)
                raise
            except BaseException as exc:  # cancelled at the deadline, or a bug
                telemetry.client_outcome(span, status, type(exc).__name__)
                raise
            telemetry.client_outcome(span, status, None)
            return result

    async def _post(
        self, body: bytes, headers: dict[str, str], budget: float
    ) -> tuple[int, bytes | HttpServiceError]:
        """``(status, answer body)`` of a 2xx, or ``(status, the error to raise)``, within
        ``budget`` seconds for the whole exchange (httpx's own timeouts are per phase: a
        service that trickles its answer would pass each of them)."""
        client = (self._pool or default_pool()).client()
        try:
            async with (
                asyncio.timeout(budget),
                client.stream(
                    "POST", self.url, content=body, headers=headers, timeout=budget
                ) as response,
            ):
                status = response.status_code
                self._telemetry.metrics.wire(SENT, "query")
                if 200 <= status < 300:
                    return status, await self._read_answer(response)
                excerpt = await _excerpt(response, self.excerpt_bytes)
                retryable = status in _RETRYABLE_STATUS or status >= 500
                return status, HttpServiceError(
                    f"HTTP {status} from {self._shown_url}" + (f": {excerpt}" if excerpt else ""),
                    status=status,
                    excerpt=excerpt,
                    retryable=retryable,
                    retry_after=_retry_after(response.headers.get("Retry-After"))
                    if retryable
                    else None,
                )
        except (httpx2.TimeoutException, TimeoutError) as exc:
            raise HttpServiceError(
                f"no answer from {self._shown_url} within {budget:.3g}s ({type(exc).__name__})",
                retryable=True,
                kind="timeout",
            ) from None
        except httpx2.TransportError as exc:
            raise HttpServiceError(
                f"cannot reach {self._shown_url}: {type(exc).__name__}: {str(exc)[:200]}",
                retryable=True,
                kind="connection",
            ) from None

    async def _read_answer(self, response: httpx2.Response) -> bytes:
        limit = self.max_response_bytes
        declared = response.headers.get("Content-Length")
        if declared is not None and ascii_digits(declared) and int(declared) > limit:
            raise self._rejected(
                "oversized", f"answer of {declared} bytes exceeds {limit}", response.status_code
            )
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > limit:
                raise self._rejected(
                    "oversized", f"answer exceeds {limit} bytes", response.status_code
                )
            chunks.append(chunk)
        return b"".join(chunks)

    def _answer(
        self, envelope: Envelope, status: int, answer: bytes | HttpServiceError
    ) -> Envelope:
        if isinstance(answer, HttpServiceError):
            raise answer
        if status == 204 or not answer:
            if status == 204:
                self._telemetry.metrics.wire(RECEIVED, "reply")
                return envelope
            raise self._rejected("malformed", f"HTTP {status} with an empty body")
        try:
            decoded = json.loads(answer)
            apply_answer(envelope, decoded)
        except AnswerError as exc:
            raise self._rejected("invalid_message", str(exc)) from None
        except (ValueError, RecursionError) as exc:
            raise self._rejected("malformed", f"not JSON ({type(exc).__name__})") from None
        self._telemetry.metrics.wire(RECEIVED, "reply")
        if envelope.terminated:  # the service ended it: an error here too, not retried
            raise HttpServiceError(
                f"{self._shown_url} terminated the envelope: {envelope.termination_reason}",
                status=status,
                retryable=False,
                kind="terminated",
            )
        return envelope

    def _rejected(self, reason: str, detail: str, status: int | None = None) -> HttpServiceError:
        self._telemetry.metrics.rejected(reason)
        return HttpServiceError(
            f"unusable answer from {self._shown_url}: {detail}",
            status=status,
            retryable=False,
            kind=reason,
        )


async def _excerpt(response: httpx2.Response, limit: int) -> str:
    """The printable start of an error body, reading no more than ``limit`` bytes."""
    if limit == 0:
        return ""
    data = b""
    async for chunk in response.aiter_bytes():
        data += chunk
        if len(data) >= limit:
            break
    text = data[:limit].decode("utf-8", errors="replace")
    return "".join(c if c.isprintable() else " " for c in text).strip()


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if ascii_digits(value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - time.time())
