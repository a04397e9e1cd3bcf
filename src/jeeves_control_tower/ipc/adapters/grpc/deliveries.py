"""The consuming side every process joined to the hub shares: what the hub delivers,
into the transport's inbound side, and the answers back.

- events: one :class:`~..pump.OrderedPump` per type, in arrival order (at most
  ``pending`` frames waiting; beyond that they are dropped and counted, as a slow
  consumer);
- commands: each in a task; the outcome (``ACK`` / ``REQUEUE`` / ``REJECT``) goes back as
  the response, so the hub routes a requeued command to another process;
- queries: each in a task (at most ``max_concurrency`` at once, the rest waiting in
  order: :class:`~..responder.QueryRunner`), the reply frame goes back;
- dispatches (to a service this process registered with the hub): ``dispatch(delivery)``
  gives the answer, when the process serves services;
- a ``cancel`` from the hub (the caller gave up): :meth:`Deliveries.cancel` cancels the
  task answering that query or dispatch, or drops the query still waiting; nothing is
  answered for it.

Event-loop-thread only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ..inbound import ACK, REQUEUE
from ..metrics import SENT
from ..pump import OrderedPump
from ..responder import QueryRunner
from . import commbus_pb2 as pb

if TYPE_CHECKING:
    from ..base import BrokerTransport

__all__ = ["Deliveries", "DispatchServer", "Respond"]

#: ``respond(response)``: hand an answer to the hub (without waiting).
Respond = Callable[[pb.Response], None]
#: ``await dispatch(delivery) -> response``: run a dispatch to one of this process's services.
DispatchServer = Callable[[pb.Delivery], Awaitable[pb.Response]]

_PENDING = 10_000
_OUTCOMES = {ACK: pb.OK, REQUEUE: pb.REQUEUE}


class Deliveries:
    """Runs what the hub delivers to ``transport`` (see the module docstring)."""

    def __init__(self, transport: BrokerTransport, respond: Respond) -> None:
        self.transport = transport
        self.respond = respond
        self.dispatch: DispatchServer | None = None
        self._pumps: dict[str, OrderedPump] = {}
        #: The tasks answering queries and dispatches, by delivery id.
        self._running: dict[int, asyncio.Task[Any]] = {}
        self.queries = QueryRunner(
            self._answer,
            transport.spawn,
            max_concurrency=transport.max_concurrency,
            pending=_PENDING,
            closing=lambda: transport.closed,
        )

    def handle(self, delivery: pb.Delivery) -> None:
        pattern = delivery.pattern
        if pattern == "publish":
            pump = self._pumps.get(delivery.type)
            if pump is None:
                message_type = delivery.type
                pump = self._pumps[message_type] = OrderedPump(
                    lambda data: self.transport.inbound.handle_event(data, message_type),
                    self.transport.spawn,
                    self._failed,
                    _PENDING,
                )
            if not pump.offer(delivery.data):
                self.transport.metrics.dropped()
        elif pattern == "query":
            if not self.queries.offer(delivery.data, str(delivery.id), delivery.type):
                self.respond(pb.Response(id=delivery.id, status=pb.UNAVAILABLE, message="busy"))
        elif pattern == "send":
            self.transport.spawn(self._command(delivery))
        elif pattern == "dispatch" and self.dispatch is not None:
            self.transport.spawn(self._dispatch(self.dispatch, delivery))
        else:
            self.respond(
                pb.Response(id=delivery.id, status=pb.NO_HANDLER, message=f"no {pattern} here")
            )

    def cancel(self, rid: int) -> None:
        """The hub no longer waits for the answer to delivery ``rid``: stop it."""
        task = self._running.pop(rid, None)
        if task is not None:
            task.cancel()
        else:
            self.queries.drop(str(rid))

    def _started(self, rid: int) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._running[rid] = task

    def _ended(self, rid: int) -> None:
        if self._running.get(rid) is asyncio.current_task():
            del self._running[rid]

    async def close(self) -> None:
        for pump in self._pumps.values():
            await pump.close()
        self._pumps.clear()

    def stop_events(self, message_type: str) -> None:
        """Forget the pump of ``message_type`` (no longer consumed); what it holds still runs."""
        pump = self._pumps.pop(message_type, None)
        if pump is not None:
            self.transport.spawn(pump.close())

    async def _command(self, delivery: pb.Delivery) -> None:
        outcome = await self.transport.inbound.handle_command(delivery.data, delivery.type)
        self.respond(pb.Response(id=delivery.id, status=_OUTCOMES.get(outcome, pb.REJECT)))

    async def _answer(self, data: bytes, rid: str, message_type: str) -> None:
        transport = self.transport
        self._started(int(rid))
        try:
            _, _, reply = await transport.inbound.handle_query(
                data, message_type, has_return_address=True
            )
        except Exception as exc:  # handle_query answers errors itself: this is a bug
            transport.logger.error("grpc_query_failed", error_type=type(exc).__name__)
            reply = None
        finally:
            self._ended(int(rid))
        if reply is None:
            self.respond(pb.Response(id=int(rid), status=pb.REJECT, message="not answered"))
            return
        self.respond(pb.Response(id=int(rid), status=pb.OK, data=transport.seal(reply)))
        transport.metrics.wire(SENT, "reply")

    async def _dispatch(self, serve: DispatchServer, delivery: pb.Delivery) -> None:
        self._started(delivery.id)
        try:
            response = await serve(delivery)
        except Exception as exc:
            response = pb.Response(
                status=pb.UNAVAILABLE, message=f"{type(exc).__name__}: {str(exc)[:300]}"
            )
        finally:
            self._ended(delivery.id)
        response.id = delivery.id
        self.respond(response)

    def _failed(self, exc: BaseException) -> None:
        self.transport.logger.error(
            "event_delivery_failed", error_type=type(exc).__name__, error=str(exc)
        )
