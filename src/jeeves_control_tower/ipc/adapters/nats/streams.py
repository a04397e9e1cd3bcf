"""The JetStream side of the NATS transport: the command and dead-letter streams.

Commands go to the work-queue stream ``{prefix}_commands`` (file storage); a command
given up on goes to ``{prefix}_dead`` (at most 10,000 kept). A send is retried with the
same ``Nats-Msg-Id`` until JetStream acknowledges it or ``send_timeout`` passes, so the
stream stores it once however often it was written.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ....types import LoggerProtocol
from ... import TransportError
from ..metrics import AdapterMetrics

__all__ = ["CommandStreams"]

#: How long one JetStream publish waits for its acknowledgement before it is sent again
#: (same ``Nats-Msg-Id``: the server drops the duplicate). Short, because a send written
#: into a socket whose server just died is never acknowledged: the retry after a
#: reconnect must not wait long for it.
_SEND_ATTEMPT_TIMEOUT = 1.0


class CommandStreams:
    """The streams of one transport over the JetStream context ``js``; ``client()``
    returns the connected nats-py client or raises :class:`TransportError`."""

    def __init__(
        self,
        js: Any,
        client: Callable[[], Any],
        *,
        prefix: str,
        send_timeout: float,
        metrics: AdapterMetrics,
        logger: LoggerProtocol,
    ) -> None:
        self.js = js
        self._client = client
        self.prefix = prefix
        self.stream = f"{prefix}_commands"
        self.dead_stream = f"{prefix}_dead"
        self.dead_letters = f"{prefix}.dead"
        self.send_timeout = send_timeout
        self.metrics = metrics
        self.logger = logger

    async def ensure(self) -> None:
        """Create both streams (one that exists with another config is used as it is)."""
        from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType
        from nats.js.errors import BadRequestError

        for name, subjects, extra in (
            (self.stream, [f"{self.prefix}.cmd.>"], {"retention": RetentionPolicy.WORK_QUEUE}),
            (self.dead_stream, [self.dead_letters], {"max_msgs": 10_000}),
        ):
            try:
                await self.js.add_stream(
                    name=name,
                    subjects=subjects,
                    storage=StorageType.FILE,
                    discard=DiscardPolicy.OLD,
                    **extra,
                )
            except BadRequestError:
                await self.js.stream_info(name)  # exists with another config: use it

    async def send(self, subject: str, data: bytes, message_id: str, message_type: str) -> None:
        """Store one command (see the module docstring); :class:`TransportError` when
        JetStream refused it or did not acknowledge it within ``send_timeout``."""
        import nats.errors

        headers = {"Nats-Msg-Id": message_id}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.send_timeout
        backoff = 0.05
        while True:
            client = self._client()
            remaining = deadline - loop.time()
            try:
                await self.js.publish(
                    subject,
                    data,
                    headers=headers,
                    timeout=max(0.05, min(_SEND_ATTEMPT_TIMEOUT, remaining)),
                )
                return
            except nats.errors.NoRespondersError:
                if client.is_connected:  # no stream listening: the server lost it
                    await self._recreate()
            except (nats.errors.TimeoutError, nats.errors.ConnectionReconnectingError):
                pass
            except nats.errors.Error as exc:
                raise TransportError(f"send not accepted: {type(exc).__name__}") from None
            if loop.time() + backoff >= deadline:
                raise TransportError(
                    f"send {message_type!r}: JetStream did not acknowledge within"
                    f" {self.send_timeout}s (server unreachable?); not sent"
                )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 1.0)

    async def _recreate(self) -> None:
        try:
            await self.ensure()
        except Exception as exc:
            self.logger.debug("nats_stream_recreate_failed", error_type=type(exc).__name__)

    async def dead_letter(self, data: bytes, reason: str, message_type: str) -> None:
        """Move a command given up on to the dead-letter stream (failures are logged)."""
        try:
            await self.js.publish(self.dead_letters, data, headers={"Jeeves-Reason": reason})
            self.metrics.dead_lettered(message_type, reason)
            await self.dead_letter_depth()
        except Exception as exc:
            self.logger.error("nats_dead_letter_failed", error_type=type(exc).__name__)

    async def dead_letter_depth(self) -> int:
        """The dead-letter stream's message count, now (also set as
        ``commbus_dead_letter_messages``)."""
        info = await self.js.stream_info(self.dead_stream)
        depth = int(info.state.messages)
        self.metrics.dead_letter_depth(self.dead_stream, depth)
        return depth
