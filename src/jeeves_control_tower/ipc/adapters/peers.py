"""The processes of a fleet, as heard in service heartbeats, and the URL each advertises.

:class:`RemoteServices` feeds a :class:`PeerTable`: this process's own entry at each
heartbeat it sends (:meth:`PeerTable.local`), a peer's at each heartbeat received
(:meth:`PeerTable.heard`). The observability endpoint reads it from its own thread
(``GET /api/peers``), so every access is under one lock and readers get plain copies.

A heartbeat comes from the broker, so nothing in it is trusted: the optional ``endpoint``
field is kept only if :func:`valid_endpoint` accepts it (an absolute ``http``/``https`` URL
of at most :data:`MAX_ENDPOINT` characters, no credentials, query or fragment), a peer
lists at most :data:`MAX_SERVICES` service names of at most :data:`MAX_NAME` characters,
and the table holds at most ``max_peers`` processes (the one heard from longest ago is
dropped first). A heartbeat without the field (an older peer) is a peer without an
endpoint.

What :meth:`PeerTable.snapshot` returns is bounded too, below what a dashboard reads
(256 KiB): at most :data:`LISTED_SERVICES` names per process and :data:`MAX_DOCUMENT` bytes
of JSON in all, the processes that matter first (this one, then the live ones heard most
recently, then the others), so fake heartbeats cannot push the real processes out of reach.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "LISTED_SERVICES",
    "MAX_DOCUMENT",
    "MAX_ENDPOINT",
    "MAX_NAME",
    "MAX_SERVICES",
    "PeerTable",
    "valid_endpoint",
]

MAX_ENDPOINT = 512
MAX_NAME = 200
MAX_SERVICES = 256
#: Service names listed per process in a snapshot (the table keeps up to MAX_SERVICES).
LISTED_SERVICES = 32
#: Bytes of compact JSON a snapshot's ``peers`` list may take in all.
MAX_DOCUMENT = 128 * 1024


def valid_endpoint(value: Any) -> str | None:
    """``value`` as an endpoint URL (trailing ``/`` removed), or ``None`` if it is not an
    absolute http(s) URL with a host, at most :data:`MAX_ENDPOINT` characters, without
    user info, query, fragment or control characters."""
    if not isinstance(value, str) or not value or len(value) > MAX_ENDPOINT:
        return None
    if not value.isprintable() or any(c.isspace() for c in value):
        return None
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    if "@" in parts.netloc or parts.query or parts.fragment or "?" in value or "#" in value:
        return None
    return value.rstrip("/")


@dataclass
class _Peer:
    endpoint: str | None
    services: list[str]
    last_heartbeat: float  # wall clock, for display
    heard_at: float  # monotonic, for liveness
    bye: bool


class PeerTable:
    """Thread-safe table of the processes heard (see the module docstring).

    A peer is alive while its last heartbeat is at most ``ttl`` seconds old and was not a
    goodbye; a peer silent for ``forget_after`` seconds is dropped from the table.
    """

    def __init__(self, ttl: float, forget_after: float, *, max_peers: int = 1000) -> None:
        self.ttl = ttl
        self.forget_after = forget_after
        self.max_peers = max_peers
        self._lock = threading.Lock()
        self._peers: dict[str, _Peer] = {}
        self._self: tuple[str, str | None, list[str]] | None = None

    def local(self, process: str, endpoint: str | None, services: list[str]) -> None:
        """Record this process's own id, advertised URL and local services."""
        with self._lock:
            self._self = (process, endpoint, list(services))

    def heard(self, process: str, payload: dict[str, Any]) -> None:
        """Record a heartbeat ``payload`` received from ``process`` (already a string)."""
        raw = payload.get("services")
        names = [
            s["name"][:MAX_NAME]
            for s in (raw if isinstance(raw, list) else [])[:MAX_SERVICES]
            if isinstance(s, dict) and isinstance(s.get("name"), str)
        ]
        peer = _Peer(
            endpoint=valid_endpoint(payload.get("endpoint")),
            services=names,
            last_heartbeat=time.time(),
            heard_at=time.monotonic(),
            bye=payload.get("bye") is True,
        )
        process = process[:MAX_NAME]
        with self._lock:
            self._peers.pop(process, None)  # re-inserted last: dict order = oldest first
            self._peers[process] = peer
            while len(self._peers) > self.max_peers:
                del self._peers[next(iter(self._peers))]

    def snapshot(self, max_bytes: int = MAX_DOCUMENT) -> dict[str, Any]:
        """``{"process", "endpoint", "ttl_seconds", "peers": [...], "omitted": N}``; each
        peer is ``{"process", "endpoint", "services", "last_heartbeat", "alive", "self"}``:
        this process first, then the live peers, then the others, each group heard most
        recently first; at most :data:`LISTED_SERVICES` names each (``services_omitted``
        says how many more), and peers only while their compact JSON stays within
        ``max_bytes`` in all (``omitted`` counts those left out)."""
        now = time.monotonic()
        with self._lock:
            gone = [p for p, s in self._peers.items() if now - s.heard_at > self.forget_after]
            for process in gone:
                del self._peers[process]
            me = self._self
            heard = list(self._peers.items())
        entries = []
        if me is not None:
            entries.append(_entry(me[0], me[1], me[2], time.time(), alive=True, is_self=True))
        others = [
            (not s.bye and now - s.heard_at <= self.ttl, s.heard_at, process, s)
            for process, s in heard
            if me is None or process != me[0]
        ]
        others.sort(key=lambda o: (o[0], o[1]), reverse=True)
        entries.extend(
            _entry(p, s.endpoint, s.services, s.last_heartbeat, alive=alive, is_self=False)
            for alive, _, p, s in others
        )
        peers: list[dict[str, Any]] = []
        used = 0
        for entry in entries:
            size = len(json.dumps(entry, separators=(",", ":"))) + 1
            if used + size > max_bytes:
                continue  # a smaller entry further on may still fit
            used += size
            peers.append(entry)
        return {
            "process": me[0] if me else None,
            "endpoint": me[1] if me else None,
            "ttl_seconds": self.ttl,
            "omitted": len(entries) - len(peers),
            "peers": peers,
        }


def _entry(
    process: str,
    endpoint: str | None,
    services: list[str],
    last_heartbeat: float,
    *,
    alive: bool,
    is_self: bool,
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "process": process,
        "endpoint": endpoint,
        "services": services[:LISTED_SERVICES],
        "last_heartbeat": last_heartbeat,
        "alive": alive,
        "self": is_self,
    }
    if len(services) > LISTED_SERVICES:
        entry["services_omitted"] = len(services) - LISTED_SERVICES
    return entry
