"""What a transport guarantees, and small helpers every transport uses."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

__all__ = ["TransportFeatures", "default_process_id", "redact_url"]


@dataclass(frozen=True)
class TransportFeatures:
    """What a transport guarantees (the conformance suite is parameterised by it)."""

    name: str
    cross_process: bool = True
    #: ``publish`` returns only after every subscriber ran (in-memory only).
    publish_awaits_subscribers: bool = False
    #: ``send`` survives the death of the handling process (redelivered to a live one).
    durable_send: bool = True
    #: a command sent while no process handles its type waits for one.
    send_waits_for_handler: bool = True
    #: a query handler's exception reaches the caller as the same type (else RemoteError).
    query_preserves_exception_type: bool = False


def redact_url(url: str) -> str:
    """``url`` without its credentials (``redis://:secret@host`` -> ``redis://***@host``)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "***" if "@" in url else url
    userinfo, at, host = rest.rpartition("@")
    return f"{scheme}://***@{host}" if at and userinfo else url


def default_process_id() -> str:
    """``host:pid:random``: names this process's consumers and reply inbox."""
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"
