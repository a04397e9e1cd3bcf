"""What the hub's parts ask of the hub (:class:`~.hub.GrpcHub` provides it): the one
seam between the gRPC service, the client sessions and the hub that owns them."""

from __future__ import annotations

from typing import Any, Protocol

from ..metrics import AdapterMetrics
from ..wire import Signer
from . import commbus_pb2 as pb
from .hubmetrics import HubMetrics
from .hubservices import Client, HubServices
from .router import Router

__all__ = ["Host"]


class Host(Protocol):
    router: Router
    services: HubServices
    metrics: AdapterMetrics
    hub_metrics: HubMetrics
    logger: Any
    signer: Signer | None
    check_frames: bool
    max_queue: int
    max_queue_bytes: int
    max_interests: int
    max_timeout: float
    max_pending: int
    max_pending_bytes: int

    def authorized(self, context: Any) -> bool: ...

    def session_opened(self, session: Client) -> str | None: ...

    def session_closed(self, session: Client, reason: str) -> None: ...

    def welcome(self) -> pb.HubMessage: ...
