"""The hub's own bus, joined to its router as one more process.

:class:`HubBus` is the transport the hub attaches to the bus it serves: what that bus
publishes, sends and queries is routed by the hub exactly like a client's messages (an
event reaches every connected process and the hub's own subscribers), and what is routed
to it runs through the same inbound side as in any process (:class:`~.deliveries.Deliveries`).
No socket is involved: frames are handed over in memory.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ... import InMemoryCommBus, NoHandlerError, TransportError
from ..base import BrokerTransport, TransportFeatures
from ..metrics import SENT
from . import commbus_pb2 as pb
from .deliveries import Deliveries
from .router import Router

__all__ = ["HubBus"]


class HubBus(BrokerTransport):
    """The hub bus's transport (built by :class:`~.hub.GrpcHub`)."""

    system = "grpc"
    features = TransportFeatures("grpc")

    def __init__(self, bus: InMemoryCommBus, router: Router, url: str, **options: Any) -> None:
        super().__init__(bus, **options)
        self.router = router
        self.url = url
        self.process_id = f"hub:{self.process_id}"
        self.deliveries = Deliveries(self, self._respond)

    # Peer
    def deliver(self, delivery: pb.Delivery) -> bool:
        if self.closed:
            return False
        self.deliveries.handle(delivery)
        return True

    def cancel(self, rid: int) -> None:
        self.deliveries.cancel(rid)

    def _respond(self, response: pb.Response) -> None:
        self.router.respond(self, response)

    async def _connect(self) -> None:
        self.router.add_peer(self)

    async def _disconnect(self) -> None:
        self.router.remove_peer(self)
        await self.deliveries.close()

    async def _publish_frame(self, message_type: str, data: bytes) -> None:
        self.router.publish(message_type, self.seal(data))

    async def _send_frame(self, message_type: str, data: bytes, message_id: str) -> None:
        if not self.router.send(message_type, self.seal(data)):
            raise TransportError("the hub holds too many commands (max_waiting, max_command_bytes)")

    async def _request(self, message_type: str, data: bytes, corr: str, timeout: float) -> bytes:
        future: asyncio.Future[tuple[pb.Status, bytes, str]] = (
            asyncio.get_running_loop().create_future()
        )

        def answer(status: pb.Status, reply: bytes, message: str) -> None:
            if not future.done():
                future.set_result((status, reply, message))

        rid = self.router.query(message_type, self.seal(data), timeout, answer)
        try:
            status, reply, message = await future
        finally:
            if future.cancelled() or not future.done():  # the caller gave up
                self.router.cancel(rid)
        return answer_of(status, reply, message, message_type, self)

    async def _start_consuming(self, pattern: str, message_type: str) -> None:
        self.router.subscribe(self, pattern, message_type)

    async def _stop_consuming(self, pattern: str, message_type: str) -> None:
        self.router.unsubscribe(self, pattern, message_type)
        if pattern == "publish":
            self.deliveries.stop_events(message_type)


def answer_of(
    status: pb.Status, reply: bytes, message: str, message_type: str, transport: BrokerTransport
) -> bytes:
    """The reply frame of a routed query, or the exception its status means."""
    if status == pb.OK:
        transport.metrics.wire(SENT, "query")
        return reply
    if status == pb.NO_HANDLER:
        raise NoHandlerError(message or f"no process handles query type {message_type!r}")
    if status == pb.TIMEOUT:
        transport.metrics.wire(SENT, "query")
        raise TimeoutError(message or f"query {message_type!r} timed out")
    raise TransportError(f"query {message_type!r} not answered: {message or status}")
