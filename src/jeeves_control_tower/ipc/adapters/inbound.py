"""Frames arriving from a broker: decode, deliver with their headers, answer.

:class:`Inbound` is the inbound side a :class:`~.base.BrokerTransport` owns
(``transport.inbound``); a transport feeds what it reads to :meth:`Inbound.handle_event`,
:meth:`Inbound.handle_command` and :meth:`Inbound.handle_query`. It also keeps the
transport's *internal endpoints* (the adapters' own traffic, such as service heartbeats),
which take a frame of their type instead of the application's bus.

Nothing a broker hands in can crash a consumer: a frame that fails to decode is logged
(``frame_rejected`` with its reason, never its contents) and counted in
``commbus_wire_rejected_total`` (one that decodes is counted in
``commbus_wire_messages_total{direction="received"}``); a handler's exception is logged
(publish, send) or sent back to the querying process as an error reply (query).

Where a frame arrived is checked against what it says it is: each ``handle_*`` method
takes the message type its channel, stream, list or subject was consumed for, and a frame
(or an element of a batch frame) of another type or pattern is rejected with reason
``wrong_destination`` and never delivered (broker permissions per channel or subject then
mean what they say). A query runs for its frame's ``ttl`` at most, and never longer than
the responder's cap (``max_query_ttl``, default: the bus's ``query_timeout``); a frame
without a usable ttl gets the cap, so a query slot is always released. A query with no
return address (nobody could receive its answer) is rejected with reason
``no_reply_to`` before its handler runs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from ...types import LoggerProtocol
from .. import InMemoryCommBus, NoHandlerError, QueryAbortedError
from .internal import InternalCallback, InternalEndpoints
from .metrics import RECEIVED, AdapterMetrics
from .pump import reraise_if_stopping
from .replies import BAD_SIGNATURE, UNEXPECTED_REPLY, RemoteError, read_reply
from .tracecontext import attach_trace, begin_batch, detach_trace, end_batch, link_batch
from .wire import Frame, Signer, WireCodec, WireError

__all__ = [
    "ACK",
    "BAD_SIGNATURE",
    "NO_REPLY_TO",
    "REJECT",
    "REQUEUE",
    "UNEXPECTED_REPLY",
    "WRONG_DESTINATION",
    "Inbound",
    "InternalCallback",
    "RemoteError",
]

#: What to do with a command after :meth:`Inbound.handle_command`.
ACK = "ack"  # handled (or its handler failed: that is not a delivery problem)
REQUEUE = "requeue"  # no local handler any more: leave it for another process
REJECT = "reject"  # undecodable: dead-letter it and acknowledge, never retry

#: A queued query older than its ttl plus this slack (clock skew) is dropped unanswered.
QUERY_CLOCK_SLACK = 1.0

#: The ``commbus_wire_rejected_total`` reason of a frame read from a destination that is
#: not its own (another message type or pattern); see :mod:`.replies` for
#: ``unexpected_reply`` and ``bad_signature``.
WRONG_DESTINATION = "wrong_destination"
#: ... of a query with no return address: no ``reply_to`` (or one outside the transport's
#: reply namespace) and, where the broker carries one (NATS), no reply subject.
NO_REPLY_TO = "no_reply_to"


class Inbound:
    """The inbound side of a broker transport (see the module docstring).

    ``system`` names the transport in logs; ``max_query_ttl`` caps how long a query from
    the broker runs here (``None``: the bus's ``query_timeout``); with a ``signer`` every
    frame must carry a valid signature. Event-loop-thread only.
    """

    def __init__(
        self,
        bus: InMemoryCommBus,
        codec: WireCodec,
        metrics: AdapterMetrics,
        logger: LoggerProtocol,
        *,
        system: str,
        max_query_ttl: float | None,
        signer: Signer | None,
    ) -> None:
        self.bus = bus
        self.codec = codec
        self.metrics = metrics
        self.logger = logger
        self.system = system
        self.max_query_ttl = max_query_ttl
        self.signer = signer
        #: The internal endpoints (see :mod:`.internal`).
        self.internal = InternalEndpoints()
        #: The transport's ``broker_settings(pattern, type)`` (telemetry of batches).
        self.broker_settings: Callable[[str, str], Any] | None = None

    def begin_batch(self, pattern: str, message_type: str, count: int) -> object | None:
        """Tell telemetry ``count`` messages were read at once (see :func:`.begin_batch`);
        the token for :func:`.end_batch`."""
        settings = self.broker_settings
        if settings is None or count < 2 or self.bus.telemetry is None:
            return None  # checked before the settings are built: nothing to record
        return begin_batch(self.bus, settings(pattern, message_type), count)

    # ------------------------------------------------------------------ internal endpoints

    def internal_endpoints(self) -> set[tuple[str, str]]:
        """The ``(pattern, message type)`` pairs consumed for internal endpoints."""
        return self.internal.keys()

    def add_internal(self, pattern: str, message_type: str, callback: InternalCallback) -> None:
        """Hand frames of ``(pattern, message_type)`` to ``callback`` instead of the bus
        (``publish``: ``await callback(message)``; ``query``: its result is the reply)."""
        self.internal.add(pattern, message_type, callback)

    def remove_internal(self, pattern: str, message_type: str) -> bool:
        """Stop handing ``(pattern, message_type)`` to its callback; whether there was
        one. Events of a removed type still in flight are dropped, not delivered to the
        bus (unless the bus subscribes to that type itself)."""
        return self.internal.remove(pattern, message_type)

    # ------------------------------------------------------------------ frames

    def _reject(self, exc: WireError, pattern: str) -> None:
        self.logger.warning(
            "frame_rejected",
            transport=self.system,
            pattern=pattern,
            reason=exc.reason,
            detail=exc.detail[:300],
        )

    def _decode(self, data: bytes, pattern: str, message_type: str) -> Frame | None:
        try:
            frame = self.codec.decode(data)
        except WireError as exc:
            self._reject(exc, pattern)
            return None
        if frame.type != message_type or frame.pattern != pattern:
            self._misrouted(frame, pattern, message_type)
            return None
        self.metrics.wire(RECEIVED, pattern)
        return frame

    def _misrouted(self, frame: Frame, pattern: str, message_type: str) -> None:
        """Reject a frame that decoded fine but was read where ``pattern`` frames of
        ``message_type`` arrive (and it is not one)."""
        wrong = WireError(
            WRONG_DESTINATION,
            f"a {frame.pattern} frame of type {frame.type[:80]!r} arrived as a {pattern}"
            f" of {message_type[:80]!r}",
        )
        self.codec.count_rejected(WRONG_DESTINATION)
        self._reject(wrong, pattern)

    def reject_unanswerable_query(self, detail: str) -> None:
        """Count and log a query that has no return address (:data:`NO_REPLY_TO`)."""
        self.codec.count_rejected(NO_REPLY_TO)
        self._reject(WireError(NO_REPLY_TO, detail), "query")

    def _unsealed(self, data: bytes, pattern: str) -> bytes | None:
        """The frame in signed ``data``, or ``None`` (rejected) when the signature is
        missing or wrong. Only called when the transport has a signer."""
        assert self.signer is not None
        frame = self.signer.open(data)
        if frame is None:
            self.codec.count_rejected(BAD_SIGNATURE)
            self._reject(WireError(BAD_SIGNATURE, "no valid signature"), pattern)
        return frame

    async def handle_event(self, data: bytes, message_type: str) -> None:
        """Deliver the event frame (or each event of a batch frame, in order) read from
        the destination of ``message_type`` to the local subscribers or an internal
        callback; a frame of another type is rejected (see the module docstring). The
        events of one batch are delivered in one context, as one caller's messages are
        in process: each event's trace context is attached for it alone, and what else a
        handler sets in context variables may be seen by the next, as on the bus's own
        uninstrumented path."""
        if self.signer is not None:
            unsealed = self._unsealed(data, "publish")
            if unsealed is None:
                return
            data = unsealed
        frames = self._decode_events(data, message_type)
        internal = self.internal.callbacks
        retired = self.internal.retired
        bus = self.bus
        batch = self.begin_batch("publish", message_type, len(frames))
        try:
            for frame in frames:  # each event in turn, in this coroutine (none made per event)
                headers = frame.headers
                if batch is not None:
                    link_batch(headers)
                callback = internal.get(("publish", frame.type)) if internal else None
                if (
                    callback is None
                    and frame.type in retired
                    and not bus.get_subscribers(frame.type)
                ):
                    self.logger.debug("retired_internal_event", message_type=frame.type)
                    continue
                token = None
                try:
                    if callback is not None:
                        token = attach_trace(bus, headers)  # outside the chain: see there
                        await callback(frame.message)
                    else:
                        await bus.deliver_incoming(
                            "publish", frame.message, headers=headers, message_id=frame.id
                        )
                except Exception as exc:
                    self._failed("publish", frame, exc)
                except asyncio.CancelledError as exc:
                    reraise_if_stopping()
                    self._failed("publish", frame, exc)
                finally:
                    detach_trace(token)
        finally:
            end_batch(batch)

    def _decode_events(self, data: bytes, message_type: str) -> list[Frame]:
        """The event frames of ``message_type`` in ``data`` (one, or a batch); rejected
        ones are logged and counted."""
        frames = []
        for item in self.codec.decode_events(data):
            if isinstance(item, WireError):
                self._reject(item, "publish")
            elif item.type != message_type or item.pattern != "publish":
                self._misrouted(item, "publish", message_type)
            else:
                frames.append(item)
        if frames:
            self.metrics.wire(RECEIVED, "publish", len(frames))
        return frames

    async def handle_command(self, data: bytes, message_type: str) -> str:
        """Run one command frame read from the destination of ``message_type``; returns
        :data:`ACK`, :data:`REQUEUE` or :data:`REJECT` (undecodable, or not a command of
        ``message_type``)."""
        if self.signer is not None:
            unsealed = self._unsealed(data, "send")
            if unsealed is None:
                return REJECT
            data = unsealed
        frame = self._decode(data, "send", message_type)
        if frame is None:
            return REJECT
        if not self.bus.has_handler(frame.type):
            return REQUEUE
        link_batch(frame.headers)
        try:
            await self.bus.deliver_incoming(
                "send", frame.message, headers=frame.headers, message_id=frame.id
            )
        except Exception as exc:
            self._failed("send", frame, exc)
        except asyncio.CancelledError as exc:
            reraise_if_stopping()
            self._failed("send", frame, exc)
        return ACK

    async def handle_query(
        self,
        data: bytes,
        message_type: str,
        *,
        has_return_address: bool = False,
        reply_prefix: str = "",
    ) -> tuple[str | None, str | None, bytes | None]:
        """Answer one query frame read from the destination of ``message_type``:
        ``(reply_to, corr, reply frame)``; the reply is ``None`` when there is nobody to
        answer (expired; not a query of ``message_type``; no return address). The return
        address is the transport's when ``has_return_address`` (it knows where to reply
        without the frame), else the frame's ``reply_to``, which counts only if it starts
        with ``reply_prefix``; a query without one is rejected (:data:`NO_REPLY_TO`)
        before its handler runs, an undecodable frame without one is not answered. The
        handler runs for the frame's ttl, capped by :meth:`query_ttl_cap` (which also
        applies when the frame has no ttl). An unsigned frame, when the transport signs,
        is not answered."""
        if self.signer is not None:
            unsealed = self._unsealed(data, "query")
            if unsealed is None:
                return None, None, None
            data = unsealed
        try:
            frame = self.codec.decode(data)
        except WireError as exc:
            self._reject(exc, "query")
            if not has_return_address and not _within(exc.reply_to, reply_prefix):
                return None, None, None
            reply = self.codec.encode_reply(exc.corr, kind="rejected", error=exc)
            return exc.reply_to, exc.corr, reply
        if frame.type != message_type or frame.pattern != "query":
            self._misrouted(frame, "query", message_type)
            return None, None, None
        if not has_return_address and not _within(frame.reply_to, reply_prefix):
            self.reject_unanswerable_query(
                "no reply_to" if frame.reply_to is None else "reply_to outside the namespace"
            )
            return None, None, None
        self.metrics.wire(RECEIVED, "query")
        ttl, ts = frame.ttl, frame.ts
        if ttl is not None and ts is not None and time.time() - ts > ttl + QUERY_CLOCK_SLACK:
            self.logger.debug("query_expired", transport=self.system, message_type=frame.type)
            return None, None, None
        cap = self.query_ttl_cap()
        timeout = ttl if ttl is not None and 0.0 < ttl < cap else cap
        callback = self.internal.callbacks.get(("query", frame.type))
        # The bus's chain extracts the trace context of its messages; the transports' own
        # (a callback) bypass it, so their headers go to the bus's telemetry.
        token = attach_trace(self.bus, frame.headers) if callback is not None else None
        result: Any = None
        kind = ""
        error: BaseException | None = None
        try:
            if callback is not None:
                async with asyncio.timeout(timeout):
                    result = await callback(frame.message)
            else:
                _, result = await self.bus.deliver_incoming(
                    "query",
                    frame.message,
                    headers=frame.headers,
                    message_id=frame.id,
                    timeout=timeout,
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

    def query_ttl_cap(self) -> float:
        """The longest a query from the broker may run here (seconds): ``max_query_ttl``,
        else the bus's ``query_timeout``."""
        return self.max_query_ttl or self.bus.query_timeout

    def result_of(self, message_type: str, raw: bytes, corr: str) -> Any:
        """The result carried by a reply frame, or the matching exception raised. The
        reply must carry ``corr``, the query's unguessable correlation id; only a
        ``rejected`` error (a responder that could not read the query, so not its corr
        either) may come without one."""
        return read_reply(
            raw,
            message_type,
            corr,
            codec=self.codec,
            metrics=self.metrics,
            signer=self.signer,
            reject=self._reject,
        )

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


def _within(reply_to: str | None, prefix: str) -> bool:
    """Whether ``reply_to`` is a return address under ``prefix``."""
    return reply_to is not None and reply_to.startswith(prefix)
