"""Test your handlers without a broker: :class:`TestTransport` and its :class:`TestBroker`.

In the spirit of FastStream's ``TestBroker``. Code written against a broker transport::

    transport = await RedisTransport.connect(bus, url, registry=registry)

runs in a test with::

    transport = await TestTransport.connect(bus, registry=registry)

and every message still crosses a wire: :class:`TestTransport` is a
:class:`~jeeves_control_tower.ipc.adapters.BrokerTransport` whose "broker" is a Python
object, so messages are encoded and decoded by the same codec (an unregistered class or a
field the codec cannot carry fails here as it would in production), trace context and
headers travel in the frame, commands are deduplicated by id, and a query handler's
exception reaches the caller as :class:`~jeeves_control_tower.ipc.adapters.RemoteError`.
What differs from a real broker, on purpose:

- handlers run **inline**: ``publish``, ``send`` and ``query`` return after the handlers of
  every connected bus ran (``send`` to a type nobody handles yet returns at once; the
  command waits in the broker and runs when a handler registers), so a test needs no
  polling;
- nothing is durable: a command is handed to one handler once; there is no redelivery,
  no consumer-group timeout, no reconnect.

Several buses connected to one :class:`TestBroker` behave like processes sharing a broker
(events reach every subscribing bus, a command or query exactly one handling bus, in
turn). The broker records every frame it carried, decoded, for assertions:
``transport.published(OrderPlaced)``, ``transport.sent(...)``, ``transport.queried(...)``.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from ..ipc import InMemoryCommBus, NoHandlerError
from ..ipc.adapters import BrokerTransport, TransportFeatures

__all__ = ["Record", "TestBroker", "TestTransport"]


@dataclass(frozen=True)
class Record:
    """One frame the broker carried: its pattern (``publish``, ``send``, ``query``), the
    message type, the message as a receiver decodes it, its id and headers."""

    pattern: str
    message_type: str
    message: Any
    message_id: str | None
    headers: dict[str, str] | None


class TestBroker:
    """The in-memory broker :class:`TestTransport` instances share; keeps :attr:`records`.

    Contract: every transport connected to it sees the frames of the others; one event
    loop; not thread safe. Commands sent while no bus handles their type wait here (in
    order, per type) until one does.
    """

    __test__: ClassVar[bool] = False  # not a pytest test class, despite its name

    def __init__(self) -> None:
        #: Every frame carried, in the order the producers handed them over.
        self.records: list[Record] = []
        self._consumers: dict[tuple[str, str], list[TestTransport]] = {}
        self._turn = itertools.count()
        self._waiting: dict[str, deque[bytes]] = {}

    def filter(self, pattern: str, kind: type | str | None = None) -> list[Any]:
        """The messages of ``pattern`` carried so far, oldest first; ``kind`` keeps only
        instances of a class, or the messages of one type name (dynamic messages)."""
        return [
            r.message
            for r in self.records
            if r.pattern == pattern
            and (
                kind is None
                or (isinstance(kind, str) and r.message_type == kind)
                or (isinstance(kind, type) and isinstance(r.message, kind))
            )
        ]

    def waiting(self, message_type: str) -> int:
        """How many commands of ``message_type`` wait for a handler."""
        return len(self._waiting.get(message_type, ()))

    # ------------------------------------------------------------------ for TestTransport

    def record(self, pattern: str, transport: TestTransport, data: bytes) -> None:
        frame = transport.codec.decode(data)
        self.records.append(Record(pattern, frame.type, frame.message, frame.id, frame.headers))

    def consume(self, pattern: str, message_type: str, transport: TestTransport) -> None:
        self._consumers.setdefault((pattern, message_type), []).append(transport)

    def stop(self, pattern: str, message_type: str, transport: TestTransport) -> None:
        consumers = self._consumers.get((pattern, message_type), [])
        if transport in consumers:
            consumers.remove(transport)

    def consumers(self, pattern: str, message_type: str) -> list[TestTransport]:
        """The transports consuming ``(pattern, type)``; for send and query, rotated so
        that each call starts with the next one (one handler per message, in turn)."""
        found = list(self._consumers.get((pattern, message_type), ()))
        if pattern != "publish" and len(found) > 1:
            start = next(self._turn) % len(found)
            found = found[start:] + found[:start]
        return found

    async def deliver_command(self, message_type: str, data: bytes) -> None:
        """Queue a command behind those of its type still waiting, then hand over what
        a consuming bus takes (each command to one bus, once)."""
        self._waiting.setdefault(message_type, deque()).append(data)
        await self.release(message_type)

    async def release(self, message_type: str) -> None:
        """Deliver the waiting commands of ``message_type`` in order, until none is left
        or no bus takes the next one (it stays first in line)."""
        queue = self._waiting.get(message_type)
        while queue:
            data = queue.popleft()
            if not await self._hand_over(message_type, data):
                queue.appendleft(data)
                return

    async def _hand_over(self, message_type: str, data: bytes) -> bool:
        for transport in self.consumers("send", message_type):
            if transport.bus.has_handler(message_type):  # else handle_command would requeue
                await transport.inbound.handle_command(
                    data, message_type
                )  # an undecodable frame is dropped
                return True
        return False


class TestTransport(BrokerTransport):
    """A transport whose broker is a :class:`TestBroker` in this process.

    ``await TestTransport.connect(bus, broker=None, **options)`` connects ``bus`` to
    ``broker`` (a new one when omitted) and attaches to it, like ``RedisTransport.connect``;
    ``async with TestTransport(bus) as transport:`` does the same and closes on exit.
    ``options`` are :class:`BrokerTransport`'s (``registry``, ``codec_format``, ``dedupe``,
    ...); ``metrics`` defaults to ``False`` here (a test keeps the Prometheus registry
    clean).
    """

    __test__: ClassVar[bool] = False  # not a pytest test class, despite its name
    system: ClassVar[str] = "test"
    features: ClassVar[TransportFeatures] = TransportFeatures(
        "test",
        cross_process=True,
        publish_awaits_subscribers=True,
        durable_send=False,
        send_waits_for_handler=True,
        query_preserves_exception_type=False,
    )

    def __init__(
        self, bus: InMemoryCommBus, *, broker: TestBroker | None = None, **options: Any
    ) -> None:
        options.setdefault("metrics", False)
        super().__init__(bus, **options)
        self.broker = broker if broker is not None else TestBroker()

    @classmethod
    async def connect(
        cls, bus: InMemoryCommBus, *, broker: TestBroker | None = None, **options: Any
    ) -> Self:
        """Build, connect and attach to ``bus`` in one call."""
        return await cls(bus, broker=broker, **options).start()

    # ------------------------------------------------------------------ assertions

    def published(self, kind: type | str | None = None) -> list[Any]:
        """Events published through the broker by any connected bus (see
        :meth:`TestBroker.filter`)."""
        return self.broker.filter("publish", kind)

    def sent(self, kind: type | str | None = None) -> list[Any]:
        """Commands sent through the broker by any connected bus."""
        return self.broker.filter("send", kind)

    def queried(self, kind: type | str | None = None) -> list[Any]:
        """Queries asked through the broker by any connected bus."""
        return self.broker.filter("query", kind)

    # ------------------------------------------------------------------ BrokerTransport

    async def _connect(self) -> None:
        pass  # nothing to reach: the broker is an object

    async def _disconnect(self) -> None:
        pass  # _stop_consuming already took this transport off the broker

    async def _publish_frame(self, message_type: str, data: bytes) -> None:
        self.broker.record("publish", self, data)
        for transport in self.broker.consumers("publish", message_type):
            await transport.inbound.handle_event(data, message_type)

    async def _send_frame(self, message_type: str, data: bytes, message_id: str) -> None:
        self.broker.record("send", self, data)
        await self.broker.deliver_command(message_type, data)

    async def _request(self, message_type: str, data: bytes, corr: str, timeout: float) -> bytes:
        self.broker.record("query", self, data)
        consumers = self.broker.consumers("query", message_type)
        if not consumers:
            raise NoHandlerError(f"no bus on the test broker answers {message_type!r}")
        async with asyncio.timeout(timeout):
            _, _, reply = await consumers[0].inbound.handle_query(
                data, message_type, has_return_address=True
            )
        if reply is None:  # expired before it was answered
            raise TimeoutError(f"query {message_type!r} expired")
        return reply

    async def _start_consuming(self, pattern: str, message_type: str) -> None:
        self.broker.consume(pattern, message_type, self)
        if pattern == "send" and self.broker.waiting(message_type):
            self.spawn(self.broker.release(message_type))

    async def _stop_consuming(self, pattern: str, message_type: str) -> None:
        self.broker.stop(pattern, message_type, self)
