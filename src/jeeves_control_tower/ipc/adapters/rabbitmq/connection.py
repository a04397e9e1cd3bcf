"""Opening the AMQP connection: fail fast the first time, reconnect forever afterwards.

aio-pika's robust connection reconnects by itself once connected, and restores the
channels, exchanges, queues, bindings and consumers declared through it. Its *first*
connect is one attempt: :func:`open_connection` bounds it by ``connect_timeout`` and turns
any failure (refused, login refused, TLS error, no answer) into a :class:`TransportError`
naming the server with its credentials replaced by ``***``. :class:`Link` follows the
connection afterwards: it logs a lost and a regained connection (never the URL's
credentials), counts reconnects and runs the transport's ``on_reconnect`` callbacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from collections.abc import Callable, Coroutine
from typing import Any

from ....types import LoggerProtocol
from ... import TransportError
from ..metrics import AdapterMetrics

__all__ = ["Link", "open_channels", "open_connection", "scrub"]

_CREDENTIALS = re.compile(r"//[^/@\s]*@")


def scrub(text: str) -> str:
    """``text`` with the credentials of any URL in it replaced by ``***``."""
    return _CREDENTIALS.sub("//***@", text)


async def open_connection(
    url: str,
    redacted: str,
    *,
    name: str,
    connect_timeout: float,
    ssl_context: ssl.SSLContext | None = None,
) -> Any:
    """A connected ``aio_pika.RobustConnection`` (see the module docstring)."""
    import aio_pika
    from yarl import URL

    options: dict[str, Any] = {
        "client_properties": {"connection_name": name},
        "reconnect_interval": 1.0,
    }
    if ssl_context is not None:
        options["ssl_context"] = ssl_context
    connection = aio_pika.RobustConnection(URL(url), **options)
    try:
        async with asyncio.timeout(connect_timeout):
            await connection.connect(timeout=connect_timeout)
    except BaseException as exc:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(connection.close(), timeout=1.0)
        if isinstance(exc, asyncio.CancelledError) and asyncio.current_task() is not None:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
        if isinstance(exc, TimeoutError):
            why = f"no answer within {connect_timeout}s"
        elif "Connection.Close" in str(exc):  # refused after the handshake: a vhost, say
            why = "the broker closed the connection at open (does the virtual host exist?)"
        else:
            why = f"{type(exc).__name__}: {scrub(str(exc))}"
        raise TransportError(f"cannot connect to {redacted}: {why}") from None
    return connection


async def open_channels(
    connection: Any, *, queries: int, dispatch: int, commands: int
) -> dict[str, Any]:
    """The transport's channels on ``connection``, by job: ``events`` (no confirms),
    ``requests`` (confirms, returns raise: no responder), ``queries``, ``dispatch`` and
    ``commands`` (confirms) with their prefetch counts."""
    events = await connection.channel(publisher_confirms=False)
    requests = await connection.channel(publisher_confirms=True, on_return_raises=True)
    answering = await connection.channel(publisher_confirms=False)
    await answering.set_qos(prefetch_count=queries)
    dispatching = await connection.channel(publisher_confirms=False)
    await dispatching.set_qos(prefetch_count=dispatch)
    handling = await connection.channel(publisher_confirms=True)
    await handling.set_qos(prefetch_count=commands)
    return {
        "events": events, "requests": requests, "queries": answering,
        "dispatch": dispatching, "commands": handling,
    }  # fmt: skip


class Link:
    """The connection's state for the transport (see the module docstring)."""

    def __init__(
        self,
        connection: Any,
        url: str,
        logger: LoggerProtocol,
        metrics: AdapterMetrics,
        closing: Callable[[], bool],
    ) -> None:
        self.connection = connection
        self.url = url
        self.logger = logger
        self.metrics = metrics
        self.closing = closing
        self.on_reconnect: list[Callable[[], Coroutine[Any, Any, None]]] = []
        connection.close_callbacks.add(self._lost)
        connection.reconnect_callbacks.add(self._regained)

    @property
    def up(self) -> bool:
        """Whether the connection is open now."""
        c = self.connection
        return not c.is_closed and c.connected.is_set()

    async def wait_up(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` seconds) until the connection is open again."""
        if self.up:
            return True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while not self.up:
                    await self.connection.connected.wait()
                    if not self.up:  # set, but the channels are still being restored
                        await asyncio.sleep(0.05)
        return self.up

    def _lost(self, _sender: Any, exc: BaseException | None = None) -> None:
        if not self.closing():
            self.logger.warning(
                "rabbitmq_disconnected",
                url=self.url,
                error_type=type(exc).__name__ if exc is not None else None,
            )

    def _regained(self, _sender: Any) -> None:
        self.metrics.reconnected()
        self.logger.info("rabbitmq_reconnected", url=self.url)
        for callback in self.on_reconnect:
            asyncio.get_running_loop().create_task(callback())

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.connection.close(), timeout=5.0)
