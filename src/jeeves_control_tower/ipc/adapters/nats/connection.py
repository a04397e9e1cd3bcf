"""Opening the NATS connection: fail fast the first time, reconnect forever afterwards.

nats-py treats a failed *first* connect like a lost connection: with reconnects allowed
it retries a refused login, an unverifiable certificate or a dead address forever.
:func:`open_client` therefore makes the first connect with reconnects off and one retry at
most (nats-py's server pool needs ``max_reconnect_attempts >= 1`` to ever give up on a
refused TCP connection), bounds the whole handshake, and restores the caller's reconnect
policy once connected, so a broker restart later is survived. :class:`ConnectionEvents`
holds nats-py's callbacks: errors are logged with credentials scrubbed, and the last one
explains a failed first connect.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable
from typing import Any

from ....types import LoggerProtocol
from ... import TransportError
from ..metrics import AdapterMetrics
from .client import DirectClient

__all__ = ["ConnectionEvents", "open_client", "scrub"]

_CREDENTIALS = re.compile(r"//[^/@\s]*@")


def scrub(text: str) -> str:
    """``text`` with the credentials of any URL in it replaced by ``***``."""
    return _CREDENTIALS.sub("//***@", text)


class ConnectionEvents:
    """nats-py's error, disconnect and reconnect callbacks for one transport (``url``:
    the redacted URL, for logs; ``closing()``: whether the transport is closing)."""

    def __init__(
        self,
        url: str,
        logger: LoggerProtocol,
        metrics: AdapterMetrics,
        closing: Callable[[], bool],
    ) -> None:
        self.url = url
        self.logger = logger
        self.metrics = metrics
        self.closing = closing
        #: The last error nats-py reported (explains a failed first connect).
        self.last_error: Exception | None = None
        #: Set once the first connect succeeded.
        self.connected = False

    def callbacks(self) -> dict[str, Any]:
        return {
            "error_cb": self.on_error,
            "disconnected_cb": self.on_disconnected,
            "reconnected_cb": self.on_reconnected,
        }

    async def on_error(self, exc: Exception) -> None:
        self.last_error = exc
        self.logger.warning("nats_error", error_type=type(exc).__name__, error=scrub(str(exc)))

    async def on_disconnected(self) -> None:
        if self.connected and not self.closing():  # not a failed first connect
            self.logger.warning("nats_disconnected", url=self.url)

    async def on_reconnected(self) -> None:
        self.metrics.reconnected()
        self.logger.info("nats_reconnected", url=self.url)

    def why(self, exc: BaseException) -> str:
        """What made the first connect fail, credentials scrubbed. nats-py reports a
        server that refused every TCP attempt as ``NoServersError``; the error behind it
        (passed to the error callback) is the useful one."""
        import nats.errors

        if isinstance(exc, TimeoutError):
            return f"no answer within the connect timeout (TimeoutError: {scrub(str(exc))})"
        if isinstance(exc, nats.errors.NoServersError) and self.last_error is not None:
            exc = self.last_error
        return f"{type(exc).__name__}: {scrub(str(exc))}"


async def open_client(url: str, options: dict[str, Any], events: ConnectionEvents) -> DirectClient:
    """A connected client (see the module docstring); :class:`TransportError` naming the
    server (credentials replaced by ``***``) when the first connect fails."""
    options = {**options, **events.callbacks()}
    policy = {k: options[k] for k in ("allow_reconnect", "max_reconnect_attempts")}
    options["allow_reconnect"] = False
    options["max_reconnect_attempts"] = 1
    connect_timeout = float(options.get("connect_timeout") or 2)
    # Each step of nats-py's handshake is bounded by connect_timeout; this bounds the
    # whole of it (TCP twice, INFO, TLS, CONNECT/PONG) so connect always returns.
    deadline = 4 * connect_timeout + float(options.get("reconnect_time_wait") or 0) + 1
    events.last_error = None
    client = DirectClient()
    try:
        await asyncio.wait_for(client.connect(servers=[url], **options), deadline)
    except Exception as exc:
        with contextlib.suppress(Exception):  # a failed connect may hold a socket
            # bounded: after a failed TLS handshake nats-py's close() never returns
            await asyncio.wait_for(client.close(), timeout=1.0)
        raise TransportError(f"cannot connect to {events.url}: {events.why(exc)}") from None
    client.options.update(policy)  # from now on: reconnect as configured
    events.connected = True
    return client
