"""The control-tower hub: a bus and its coordinator, served over gRPC (``commbus.proto``).

``hub = await serve_grpc(bus_or_coordinator, host="127.0.0.1", port=50051)`` (or
``jeeves-ipc hub --port N``) exposes the bus to any process that speaks the proto: a
Python process joins with :class:`~.transport.GrpcTransport`, any other language with the
generated stubs of ``commbus.proto`` (``jeeves_control_tower/ipc/adapters/grpc/commbus.proto``).
Given a bus, the hub builds its coordinator instrumented as the bus is (same registry and
providers: dispatches through the hub get spans and metrics), uninstrumented when it is not.

Limits (everything a client sends is hostile):

- ``max_frame_bytes`` (1 MiB): the largest frame; the server refuses any gRPC message
  over ``max_frame_bytes + 64 KiB`` (``RESOURCE_EXHAUSTED``) before reading it.
- ``max_queue`` (10,000) messages or ``max_queue_bytes`` (64 MiB) of frames waiting to be
  written to one client; a client that falls that far behind is disconnected
  (``slow_consumer``).
- ``max_clients`` (1,000), ``max_interests`` (10,000 subscriptions per client),
  ``max_waiting`` (10,000 commands held for want of a consumer with room), ``max_timeout`` (300 s,
  the longest a query or a dispatch from a client runs; a dispatch asking for more
  than :data:`~.hubservices.MAX_RETRIES` (10) retries is refused).
- ``max_unacked`` (100): commands a client has been handed and not answered, all types
  together (its prefetch: the next ones wait in the hub, in order per type);
  ``max_command_bytes`` (256 MiB): the command frames the hub holds, waiting and in
  flight (beyond: ``send`` refused), so a client that never answers its commands can
  neither grow the hub's memory nor take more than its prefetch of in-flight slots.
- ``max_in_flight`` (100,000): queries, dispatch attempts and commands the hub waits
  answers for, all clients together (beyond: a query is refused, a command waits); per client
  ``max_pending`` (1,000) unanswered queries and ``max_pending_bytes`` (64 MiB) of their
  frames and of its dispatches' envelopes (beyond: refused), so that one client cannot
  take every slot. A query's frame is not kept once delivered. A caller that gives up
  (its stream or its unary call ends) frees its entries at once.
- ``token``: with one, every call must carry ``authorization: Bearer <token>`` (compared
  in constant time), else ``UNAUTHENTICATED``. ``tls=(private_key_pem, certificate_pem)``
  serves TLS only. Loopback (``127.0.0.1``) by default.
- Frames are checked before they are routed (:mod:`.checks`); a second stream claiming a
  process id already connected is refused (``ALREADY_EXISTS``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from typing import Any, Self

from ....logging import ensure_logger
from ... import CommBusCoordinator, InMemoryCommBus
from ..metrics import AdapterMetrics
from ..peers import PeerTable
from . import commbus_pb2 as pb
from .hubmetrics import HubMetrics
from .hubservices import Client, HubServices
from .local import HubBus
from .router import Router
from .service import add_commbus_service

__all__ = ["GrpcHub", "serve_grpc"]

#: What a gRPC message may carry beyond one frame (the envelope fields, a batch's framing).
FRAME_OVERHEAD = 64 << 10


class GrpcHub:
    """See the module docstring. ``await GrpcHub(...).start()``; ``await hub.close()``."""

    def __init__(
        self,
        bus_or_coordinator: InMemoryCommBus | CommBusCoordinator,
        *,
        host: str = "127.0.0.1",
        port: int = 50051,
        token: str | None = None,
        tls: tuple[bytes, bytes] | None = None,
        max_frame_bytes: int = 1 << 20,
        max_queue: int = 10_000,
        max_queue_bytes: int = 64 << 20,
        max_clients: int = 1000,
        max_interests: int = 10_000,
        max_waiting: int = 10_000,
        max_timeout: float = 300.0,
        max_in_flight: int = 100_000,
        max_unacked: int = 100,
        max_command_bytes: int = 256 << 20,
        max_pending: int = 1000,
        max_pending_bytes: int = 64 << 20,
        heartbeat_interval: float = 1.0,
        check_frames: bool = True,
        signing_key: bytes | str | None = None,
        metrics_registry: Any = None,
        metrics: bool = True,
        logger: Any = None,
        **bus_options: Any,
    ) -> None:
        if isinstance(bus_or_coordinator, CommBusCoordinator):
            self.coordinator = bus_or_coordinator
        else:
            # Instrumented as the bus is (its registry and providers are inherited).
            instrumented = getattr(bus_or_coordinator, "telemetry", None) is not None
            self.coordinator = CommBusCoordinator(None, bus_or_coordinator, instrument=instrumented)
        self.bus = self.coordinator.commbus
        self.host, self.port = host, port
        self._token = None if token is None else f"Bearer {token}".encode()
        self._tls = tls
        self.max_frame_bytes = max_frame_bytes
        self.max_queue, self.max_clients = max_queue, max_clients
        self.max_queue_bytes = max_queue_bytes
        self.max_interests, self.max_timeout = max_interests, max_timeout
        self.max_pending, self.max_pending_bytes = max_pending, max_pending_bytes
        self.heartbeat_interval = heartbeat_interval
        self.check_frames = check_frames
        self.logger = ensure_logger(logger, "jeeves_control_tower.adapters.grpc.hub")
        self.metrics = AdapterMetrics("grpc", metrics_registry, enabled=metrics)
        self.hub_metrics = HubMetrics(metrics_registry, enabled=metrics)
        self.router = Router(
            max_waiting=max_waiting,
            max_in_flight=max_in_flight,
            max_unacked=max_unacked,
            max_command_bytes=max_command_bytes,
            on_redelivered=self.metrics.redelivered,
            on_stray=lambda: self.metrics.rejected("unexpected_reply"),
        )
        self.services = HubServices(self.coordinator, self.router, heartbeat_interval, max_timeout)
        self.local = HubBus(
            self.bus,
            self.router,
            f"grpc://{host}:{port}",
            max_frame_bytes=max_frame_bytes,
            signing_key=signing_key,
            metrics_registry=metrics_registry,
            metrics=metrics,
            logger=logger,
            **bus_options,
        )
        self.signer = self.local.signer
        self.sessions: dict[str, Client] = {}
        #: The processes connected to the hub, for the observability endpoint's
        #: ``/api/peers`` (``server.peers = hub.peers``): refreshed every heartbeat
        #: interval while connected, a goodbye when a stream ends.
        self.peers = PeerTable(3 * heartbeat_interval, 30 * heartbeat_interval)
        self._server: Any = None
        self._expiry: asyncio.Task[None] | None = None

    @property
    def address(self) -> str:
        """``host:port`` the hub listens on (the bound port once started)."""
        return f"{self.host}:{self.port}"

    async def start(self) -> Self:
        import grpc

        await self.local.start()
        limit = self.max_frame_bytes + FRAME_OVERHEAD
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                ("grpc.max_concurrent_streams", 1000),
                ("grpc.keepalive_time_ms", 20_000),
                ("grpc.http2.max_pings_without_data", 0),
                ("grpc.keepalive_permit_without_calls", 1),
            ]
        )
        add_commbus_service(server, self)
        bind = f"{self.host}:{self.port}"
        if self._tls is not None:
            credentials = grpc.ssl_server_credentials([self._tls])
            self.port = server.add_secure_port(bind, credentials)
        else:
            self.port = server.add_insecure_port(bind)
        await server.start()
        self._server = server
        self._expiry = asyncio.get_running_loop().create_task(self._expire())
        self.logger.info("grpc_hub_started", address=self.address, tls=self._tls is not None)
        return self

    async def close(self, grace: float = 1.0) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        for session in list(self.sessions.values()):
            session.close("hub_closed")
        if self._server is not None:
            await self._server.stop(grace)
        await self.local.close()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def wait_closed(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()

    # ------------------------------------------------------------------ for the service

    def authorized(self, context: Any) -> bool:
        """Whether the call carries the configured bearer token (always, without one)."""
        if self._token is None:
            return True
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                given = value.encode() if isinstance(value, str) else bytes(value)
                return hmac.compare_digest(given, self._token)
        return False

    def session_opened(self, session: Client) -> str | None:
        """Add ``session``; why not (``None``: added). A process id already connected is
        refused (``duplicate_process``): a stream cannot take over another's
        subscriptions and services by claiming its id; a client reconnecting before the
        hub saw its old stream end is refused until it did, and retries."""
        if session.process_id in self.sessions:
            self.hub_metrics.refused("duplicate_process")
            return "this process id is connected already"
        if len(self.sessions) >= self.max_clients:
            self.hub_metrics.refused("too_many_clients")
            return "too many clients"
        self.sessions[session.process_id] = session
        self.router.add_peer(session)
        self.peers.heard(session.process_id, {"services": []})
        self.hub_metrics.clients(1)
        self.logger.info("grpc_client_connected", process=session.process_id[:200])
        return None

    def session_closed(self, session: Client, reason: str) -> None:
        if self.sessions.get(session.process_id) is session:
            del self.sessions[session.process_id]
        self.router.remove_peer(session)
        self.services.session_gone(session)
        self.peers.heard(session.process_id, {"services": [], "bye": True})
        self.hub_metrics.clients(-1)
        self.hub_metrics.disconnected(reason)
        self.logger.info(
            "grpc_client_disconnected", process=session.process_id[:200], reason=reason
        )

    def welcome(self) -> pb.HubMessage:
        return pb.HubMessage(
            welcome=pb.Welcome(
                hub_id=self.local.process_id,
                heartbeat_interval=self.heartbeat_interval,
                max_frame_bytes=self.max_frame_bytes,
            )
        )

    async def _expire(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            with contextlib.suppress(Exception):
                self.services.expire(loop.time())
                self._fleet()

    def _fleet(self) -> None:
        """Refresh :attr:`peers`: the hub itself and each connected process, with the
        services it holds."""
        owners = self.services.owners()
        held: dict[str, list[dict[str, str]]] = {}
        for name, owner in owners.items():
            held.setdefault(owner, []).append({"name": name})
        local = [s.name for s in self.coordinator.list_services(healthy_only=False)]
        self.peers.local(self.local.process_id, None, [n for n in local if n not in owners])
        for process_id in self.sessions:
            self.peers.heard(process_id, {"services": held.get(process_id, [])})


async def serve_grpc(
    bus_or_coordinator: InMemoryCommBus | CommBusCoordinator,
    host: str = "127.0.0.1",
    port: int = 50051,
    **options: Any,
) -> GrpcHub:
    """Start a :class:`GrpcHub` for ``bus_or_coordinator`` (``port=0``: any free port,
    see ``hub.port``); ``await hub.close()`` stops it."""
    return await GrpcHub(bus_or_coordinator, host=host, port=port, **options).start()
