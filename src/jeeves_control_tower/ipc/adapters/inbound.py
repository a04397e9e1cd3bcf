"""Frames arriving from a broker: decode, continue the trace, deliver, answer.

Nothing a broker hands in can crash a consumer: a frame that fails to decode is logged
(``frame_rejected`` with its reason, never its contents) and counted in
``commbus_wire_rejected_total`` (one that decodes is counted in
``commbus_wire_messages_total{direction="received"}``); a handler's exception is logged
(publish, send) or sent back to the querying process as an error reply (query).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ClassVar

from opentelemetry import context as otel_context
from opentelemetry import propagate

from ...types import LoggerProtocol
from ..bus import InMemoryCommBus, NoHandlerError, QueryAbortedError
from .codec import Frame, WireCodec, WireError
from .metrics import RECEIVED, AdapterMetrics
from .pump import reraise_if_stopping

__all__ = [
    "ACK",
    "REJECT",
    "REQUEUE",
    "InboundMixin",
    "RemoteError",
    "attach_trace",
    "detach_trace",
]

#: What to do with a command after :meth:`InboundMixin.handle_command`.
ACK = "ack"  # handled (or its handler failed: that is not a delivery problem)
REQUEUE = "requeue"  # no local handler any more: leave it for another process
REJECT = "reject"  # undecodable: dead-letter it and acknowledge, never retry

#: A queued query older than its ttl plus this slack (clock skew) is dropped unanswered.
QUERY_CLOCK_SLACK = 1.0


def attach_trace(headers: dict[str, str] | None) -> object | None:
    """Make the producer's trace context (``traceparent`` header) current; the token for
    :func:`detach_trace`, or ``None`` when the frame carries none."""
    if not headers or "traceparent" not in headers:
        return None
    return otel_context.attach(propagate.extract(headers))


def detach_trace(token: object | None) -> None:
    if token is not None:
        otel_context.detach(token)  # type: ignore[arg-type]


class RemoteError(RuntimeError):
    """A query's handler in another process raised ``remote_type``; or the reply to a
    query could not be decoded (``remote_type == "WireError"``)."""

    def __init__(self, message_type: str, remote_type: str, text: str) -> None:
        super().__init__(f"query {message_type!r} failed remotely: {remote_type}: {text}")
        self.message_type = message_type
        self.remote_type = remote_type
        self.remote_message = text


class InboundMixin:
    """Inbound half of :class:`BrokerTransport` (see there for the attributes)."""

    bus: InMemoryCommBus
    codec: WireCodec
    metrics: AdapterMetrics
    logger: LoggerProtocol
    system: ClassVar[str]
    max_concurrency: int
    _internal: dict[tuple[str, str], Callable[[Any], Awaitable[Any]]]
    _retired_events: set[str]
    _tasks: set[asyncio.Task[Any]]

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` as a tracked task (awaited or cancelled by ``close``)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _reject(self, exc: WireError, pattern: str) -> None:
        self.logger.warning(
            "frame_rejected",
            transport=self.system,
            pattern=pattern,
            reason=exc.reason,
            detail=exc.detail[:300],
        )

    def _decode(self, data: bytes, pattern: str) -> Frame | None:
        try:
            frame = self.codec.decode(data)
        except WireError as exc:
            self._reject(exc, pattern)
            return None
        if frame.pattern != pattern:
            self._wrong_pattern(frame, pattern)
            return None
        self.metrics.wire(RECEIVED, pattern)
        return frame

    def _wrong_pattern(self, frame: Frame, pattern: str) -> None:
        """Reject a frame that decoded fine but arrived where ``pattern`` frames do."""
        wrong = WireError("malformed", f"a {frame.pattern} frame arrived as a {pattern}")
        self.codec._rejected(wrong.reason)
        self._reject(wrong, pattern)

    async def handle_event(self, data: bytes) -> None:
        """Deliver the event frame (or each event of a batch frame, in order) to the local
        subscribers or an internal callback. The events of one batch are delivered in one
        context, as one caller's messages are in process: each event's trace context is
        attached for it alone, and what else a handler sets in context variables may be
        seen by the next, as on the bus's own uninstrumented path."""
        for frame in self._decode_events(data):
            await self._deliver_event(frame)

    def _decode_events(self, data: bytes) -> list[Frame]:
        """The event frames in ``data`` (one, or a batch); rejected ones are logged."""
        frames = []
        for item in self.codec.decode_events(data):
            if isinstance(item, WireError):
                self._reject(item, "publish")
            elif item.pattern != "publish":
                self._wrong_pattern(item, "publish")
            else:
                frames.append(item)
        if frames:
            self.metrics.wire(RECEIVED, "publish", len(frames))
        return frames

    async def _deliver_event(self, frame: Frame) -> None:
        headers = frame.headers
        callback = self._internal.get(("publish", frame.type)) if self._internal else None
        if (
            callback is None
            and frame.type in self._retired_events
            and not self.bus.get_subscribers(frame.type)
        ):
            self.logger.debug("retired_internal_event", message_type=frame.type)
            return
        token = attach_trace(headers) if headers else None
        try:
            if callback is not None:
                await callback(frame.message)
            else:
                await self.bus.deliver_incoming(
                    "publish", frame.message, headers=headers, message_id=frame.id
                )
        except Exception as exc:
            self._failed("publish", frame, exc)
        except asyncio.CancelledError as exc:
            reraise_if_stopping()
            self._failed("publish", frame, exc)
        finally:
            if token is not None:
                detach_trace(token)

    async def handle_command(self, data: bytes) -> str:
        """Run one command frame; returns :data:`ACK`, :data:`REQUEUE` or :data:`REJECT`."""
        frame = self._decode(data, "send")
        if frame is None:
            return REJECT
        if not self.bus.has_handler(frame.type):
            return REQUEUE
        token = attach_trace(frame.headers)
        try:
            await self.bus.deliver_incoming(
                "send", frame.message, headers=frame.headers, message_id=frame.id
            )
        except Exception as exc:
            self._failed("send", frame, exc)
        except asyncio.CancelledError as exc:
            reraise_if_stopping()
            self._failed("send", frame, exc)
        finally:
            detach_trace(token)
        return ACK

    async def handle_query(
        self, data: bytes, *, has_return_address: bool = False
    ) -> tuple[str | None, str | None, bytes | None]:
        """Answer one query frame: ``(reply_to, corr, reply frame)``; the reply is ``None``
        when there is nobody to answer (expired, or undecodable and neither the frame
        nor the transport has a return address: ``has_return_address`` says the
        transport knows where to reply without the frame)."""
        try:
            frame = self.codec.decode(data)
        except WireError as exc:
            self._reject(exc, "query")
            if exc.reply_to is None and not has_return_address:
                return None, None, None
            reply = self.codec.encode_reply(exc.corr, kind="rejected", error=exc)
            return exc.reply_to, exc.corr, reply
        self.metrics.wire(RECEIVED, "query")
        ttl, ts = frame.ttl, frame.ts
        if ttl is not None and ts is not None and time.time() - ts > ttl + QUERY_CLOCK_SLACK:
            self.logger.debug("query_expired", transport=self.system, message_type=frame.type)
            return None, None, None
        callback = self._internal.get(("query", frame.type))
        token = attach_trace(frame.headers)
        result: Any = None
        kind = ""
        error: BaseException | None = None
        try:
            if callback is not None:
                result = await callback(frame.message)
            else:
                _, result = await self.bus.deliver_incoming(
                    "query",
                    frame.message,
                    headers=frame.headers,
                    message_id=frame.id,
                    timeout=frame.ttl or None,
                )
        except NoHandlerError as exc:
            kind, error = "no_handler", exc
        except QueryAbortedError as exc:
            kind, error = "aborted", exc
        except TimeoutError as exc:
            kind, error = "timeout", exc
        except Exception as exc:
            kind, error = "error", exc
        except asyncio.CancelledError as exc:
            reraise_if_stopping()
            kind, error = "error", exc
        finally:
            detach_trace(token)
        reply = self.codec.encode_reply(frame.corr, result=result, kind=kind, error=error)
        return frame.reply_to, frame.corr, reply

    def _result_of(self, message_type: str, raw: bytes) -> Any:
        """The result carried by a reply frame, or the matching exception raised."""
        try:
            reply = self.codec.decode_reply(raw)
        except WireError as exc:
            self._reject(exc, "reply")
            raise RemoteError(message_type, "WireError", f"undecodable reply: {exc}") from None
        self.metrics.wire(RECEIVED, "reply")
        if reply.ok:
            return reply.result
        where = f"query {message_type!r} (remote {reply.error_type}: {reply.message})"
        if reply.kind == "no_handler":
            raise NoHandlerError(f"no handler answered {where}")
        if reply.kind == "timeout":
            raise TimeoutError(f"the remote handler timed out: {where}")
        if reply.kind == "aborted":
            raise QueryAbortedError(f"aborted by remote middleware: {where}")
        raise RemoteError(message_type, reply.error_type, reply.message)

    def _failed(self, pattern: str, frame: Frame, exc: BaseException) -> None:
        self.logger.error(
            "inbound_delivery_failed",
            transport=self.system,
            pattern=pattern,
            message_type=frame.type,
            message_id=frame.id,
            error_type=type(exc).__name__,
            error=str(exc),
        )
