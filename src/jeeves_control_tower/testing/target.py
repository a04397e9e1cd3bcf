"""What the conformance suite runs against: a transport, its features, and N buses.

The suite's user describes the transport with a :class:`TransportUnderTest` (its declared
:class:`~jeeves_control_tower.ipc.adapters.TransportFeatures` and a ``connect`` factory);
each test gets a :class:`Harness` built from it, whose :meth:`Harness.bus` gives a bus "in
another process" (a new bus connected through the transport) for every call.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from ..ipc import InMemoryCommBus, Transport
from ..ipc.adapters import MessageRegistry, TransportFeatures
from .messages import REGISTRY

__all__ = [
    "IN_MEMORY",
    "Connect",
    "ConnectedTransport",
    "Harness",
    "TransportUnderTest",
]

#: The in-process bus's own semantics (no transport attached).
IN_MEMORY = TransportFeatures(
    "memory",
    cross_process=False,
    publish_awaits_subscribers=True,
    durable_send=False,
    send_waits_for_handler=False,
    query_preserves_exception_type=True,
)


@runtime_checkable
class ConnectedTransport(Transport, Protocol):
    """A transport the suite can wait for and close (a ``BrokerTransport`` is one).

    ``sync()`` returns once the registrations made on its bus so far are in effect on
    the broker (a message published after it reaches the new subscribers); ``close()``
    detaches from the bus and releases the connection, and may be called once.
    """

    async def sync(self) -> None: ...

    async def close(self) -> None: ...


#: ``await connect(bus, registry)``: attach a transport to ``bus`` (encoding the suite's
#: messages with ``registry``) and return it, connected and consuming.
Connect = Callable[[InMemoryCommBus, MessageRegistry], Awaitable[ConnectedTransport]]


@dataclass(frozen=True)
class TransportUnderTest:
    """A transport as the suite sees it.

    ``features``: what it guarantees; the tests whose subject it does not declare are
    skipped, and where a declared value changes the expected behaviour the test checks
    the declared one. ``connect``: attaches a new transport to a bus, all of them on one
    broker namespace private to the test (a unique prefix), so that buses connected by
    the same test see each other and nothing else. ``None`` tests the in-process bus
    itself: every "process" is then the same bus.
    """

    features: TransportFeatures
    connect: Connect | None


@dataclass
class Harness:
    """One test's view of the transport: :meth:`bus` per process, :meth:`sync`, features."""

    target: TransportUnderTest
    registry: MessageRegistry = field(default_factory=lambda: REGISTRY)
    transports: list[ConnectedTransport] = field(default_factory=list)
    _shared: InMemoryCommBus | None = None

    @property
    def features(self) -> TransportFeatures:
        return self.target.features

    async def bus(self) -> InMemoryCommBus:
        """A bus "in another process" (the same one when there is no transport)."""
        connect = self.target.connect
        if connect is None:
            if self._shared is None:
                self._shared = InMemoryCommBus(query_timeout=5.0, instrument=False)
            return self._shared
        bus = InMemoryCommBus(query_timeout=5.0, instrument=False)
        self.transports.append(await connect(bus, self.registry))
        return bus

    async def sync(self) -> None:
        """Wait until every bus's registrations are in effect on the broker."""
        for transport in self.transports:
            await transport.sync()

    async def close(self) -> None:
        """Close every transport :meth:`bus` connected (each is tried)."""
        errors: list[BaseException] = []
        for transport in self.transports:
            try:
                await transport.close()
            except Exception as exc:
                errors.append(exc)
        self.transports.clear()
        if errors:
            raise errors[0]
