"""The fleet view of the observability endpoint: this process's URL in the heartbeats, and
``GET /api/peers`` (shape in ``docs/endpoint.md``).

``advertise_endpoint(server, remote)`` makes :class:`~..ipc.adapters.RemoteServices` carry
the endpoint's public URL in every heartbeat and lets the endpoint list the processes it
heard of, so a dashboard given any one endpoint can find the others. The URL defaults to
``server.url``; pass ``url=`` when the bound address (``127.0.0.1``, ``0.0.0.0``) is not
how other hosts reach it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..ipc.adapters.peers import PeerTable
    from ..ipc.adapters.services import RemoteServices
    from .server import ObservabilityServer

__all__ = ["advertise_endpoint", "peers_document"]


def advertise_endpoint(
    server: ObservabilityServer, remote: RemoteServices, url: str | None = None
) -> str:
    """Advertise ``url`` (default ``server.url``) in ``remote``'s heartbeats from the next
    one on and serve ``remote.peers`` at ``/api/peers``; returns the URL advertised.
    ``ValueError`` if it is not an http(s) URL (see ``valid_endpoint``)."""
    advertised = remote.advertise(url or server.url) or ""
    server.peers = remote.peers
    return advertised


def peers_document(peers: PeerTable | None) -> dict[str, Any]:
    """The ``/api/peers`` body: the table's snapshot, or an empty fleet when the endpoint
    advertises nothing."""
    if peers is None:
        body: dict[str, Any] = {"process": None, "endpoint": None, "ttl_seconds": None}
        body["peers"] = []
    else:
        body = peers.snapshot()
    return {"generated_at": time.time(), **body}
