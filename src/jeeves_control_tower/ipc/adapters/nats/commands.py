"""Durable commands over JetStream: a work-queue stream, one pull consumer per type.

All processes handling a command type pull from the same durable consumer, so each
command goes to exactly one of them; it is acknowledged (``ack``, and the work-queue
stream deletes it) after handling. A command not acknowledged within ``ack_wait`` (its
process died) is delivered again by the server: at-least-once. While a batch is being
handled, its messages are marked in progress every ``ack_wait / 3`` so a slow but live
consumer keeps them. A message delivered more than ``max_deliveries`` times, or a frame
that cannot be decoded, is copied to the dead-letter subject and terminated (``term``).
A command whose type no longer has a local handler is ``nak``-ed for another process.

Ordering: one consumer handles a batch in stream order, one command at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from ....types import LoggerProtocol
from ..consumer import ConsumerLoop
from ..inbound import ACK, REJECT, REQUEUE
from ..metrics import AdapterMetrics
from ..tracecontext import end_batch

__all__ = ["JetStreamConsumer"]


class JetStreamConsumer(ConsumerLoop):
    """Pulls one command type; :meth:`stop` lets the batch in hand finish."""

    def __init__(
        self,
        js: Any,
        *,
        stream: str,
        subject: str,
        durable: str,
        handle: Callable[[bytes], Awaitable[str]],
        dead_letter: Callable[[bytes, str], Awaitable[None]],
        prefetch: int,
        ack_wait: float,
        max_deliveries: int,
        metrics: AdapterMetrics,
        logger: LoggerProtocol,
        begin_batch: Callable[[int], object | None] = lambda count: None,
    ) -> None:
        super().__init__()
        # telemetry of a batch fetched (tracecontext.begin_batch / end_batch)
        self._begin_batch = begin_batch
        self._js = js
        self._stream = stream
        self.subject = subject
        self._durable = durable
        self._handle = handle
        self._dead_letter = dead_letter
        self._prefetch = prefetch
        self._ack_wait = ack_wait
        self._max_deliveries = max_deliveries
        self._metrics = metrics
        self._logger = logger

    async def _subscribe(self) -> Any:
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        config = ConsumerConfig(
            durable_name=self._durable,
            filter_subject=self.subject,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self._ack_wait,
            max_deliver=-1,
            max_ack_pending=-1,
        )
        return await self._js.pull_subscribe(
            self.subject, durable=self._durable, stream=self._stream, config=config
        )

    async def _run(self) -> None:
        import nats.errors
        import nats.js.errors

        psub: Any = None
        backoff = 0.02
        while not self._stopping:
            try:
                if psub is None:
                    psub = await self._subscribe()
                if self._stopping:
                    break
                self._reading = True
                try:
                    msgs = await psub.fetch(self._prefetch, timeout=2.0)
                except nats.errors.TimeoutError:
                    msgs = []
                finally:
                    self._reading = False
                if msgs:
                    await self._process(msgs)
                backoff = 0.02
            except nats.js.errors.NotFoundError:
                psub = None  # the consumer (or stream) is gone: recreate it
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
            except (nats.errors.Error, OSError, TimeoutError) as exc:
                self._logger.debug("nats_consumer_retry", error_type=type(exc).__name__)
                if isinstance(exc, nats.js.errors.Error):
                    psub = None
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
        if psub is not None:
            with contextlib.suppress(Exception):
                await psub.unsubscribe()

    async def _process(self, msgs: list[Any]) -> None:
        pending = list(msgs)
        keepalive = asyncio.get_running_loop().create_task(self._keepalive(pending))
        batch = self._begin_batch(len(msgs))
        try:
            for msg in msgs:
                await self._one(msg)  # in progress (kept alive) until handled
                pending.remove(msg)
        finally:
            end_batch(batch)
            keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keepalive

    async def _one(self, msg: Any) -> None:
        delivered = _delivered(msg)
        if delivered > 1:
            self._metrics.redelivered()
        if delivered > self._max_deliveries:
            await self._dead_letter(msg.data, "max_deliveries")
            await msg.term()
            return
        outcome = await self._handle(msg.data)
        try:
            if outcome == ACK:
                await msg.ack()
            elif outcome == REJECT:
                await self._dead_letter(msg.data, "rejected")
                await msg.term()
            elif outcome == REQUEUE:
                await msg.nak()
        except Exception as exc:  # not acknowledged: JetStream redelivers after ack_wait
            self._logger.error("nats_ack_failed", subject=self.subject, error=str(exc))

    async def _keepalive(self, pending: list[Any]) -> None:
        while True:
            await asyncio.sleep(self._ack_wait / 3)
            for msg in list(pending):
                with contextlib.suppress(Exception):
                    await msg.in_progress()


def _delivered(msg: Any) -> int:
    try:
        return int(msg.metadata.num_delivered)
    except Exception:
        return 1
