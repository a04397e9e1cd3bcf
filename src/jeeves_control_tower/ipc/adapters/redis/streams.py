"""Durable commands over Redis Streams: one stream per command type, one consumer group.

Every process that handles the type reads the stream through the same group
(``XREADGROUP ... >``), so each command goes to exactly one of them. After handling a
batch the consumer acknowledges and deletes its entries (``XACK`` + ``XDEL``; the stream
only holds commands not yet handled). A consumer that dies leaves its entries pending;
every ``claim_interval`` each live consumer takes over entries idle for more than
``min_idle`` (``XAUTOCLAIM``) and handles them: at-least-once delivery. While a batch is
being handled its entries are re-claimed by their owner every ``min_idle / 3`` (``XCLAIM
JUSTID``, which resets their idle time), so a slow but live consumer is never robbed.
An entry delivered more than ``max_deliveries`` times (a command that kills its
consumer), frames that cannot be decoded or are not commands of the stream's type, and
entries without the frame field ``f`` (counted in ``commbus_wire_rejected_total`` as
``malformed``) go to the dead-letter stream ``{prefix}dead`` (capped at about 10,000
entries) and are acknowledged; each is counted in ``commbus_dead_letters_total`` and the
stream's length is then measured into ``commbus_dead_letter_messages``.

Ordering: one consumer handles its batch in stream order, one command at a time;
across consumers there is no ordering.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import ResponseError

from ....types import LoggerProtocol
from ..consumer import ConsumerLoop
from ..inbound import ACK, REJECT
from ..metrics import AdapterMetrics
from ..tracecontext import end_batch
from .conn import UNREACHABLE, DedicatedConnection
from .mux import MuxConnection

__all__ = ["StreamConsumer"]

GROUP = "handlers"
FIELD = b"f"


def _fields(raw: Any) -> dict[bytes, bytes]:
    if isinstance(raw, dict):
        return raw
    if not raw:
        return {}
    return dict(zip(raw[::2], raw[1::2], strict=False))


class StreamConsumer(ConsumerLoop):
    """Consumes one command stream; :meth:`stop` lets the batch in hand finish."""

    def __init__(
        self,
        client: Any,
        writer: MuxConnection,
        stream: str,
        consumer: str,
        handle: Callable[[bytes], Awaitable[str]],
        *,
        message_type: str,
        dead_letters: str,
        prefetch: int,
        min_idle: float,
        max_deliveries: int,
        metrics: AdapterMetrics,
        logger: LoggerProtocol,
        begin_batch: Callable[[int], object | None] = lambda count: None,
    ) -> None:
        super().__init__()
        # telemetry of a batch read (tracecontext.begin_batch / end_batch)
        self._begin_batch = begin_batch
        self._client = client
        self._reads = DedicatedConnection(client)
        self._writer = writer
        self.stream = stream
        self._consumer = consumer
        self._handle = handle
        self._message_type = message_type
        self._dead = dead_letters
        self._prefetch = prefetch
        self._min_idle_ms = max(1, int(min_idle * 1000))
        self._claim_interval = max(0.05, min_idle / 2)
        self._block_ms = max(10, min(5000, int(self._claim_interval * 1000)))
        self._max_deliveries = max_deliveries
        self._metrics = metrics
        self._logger = logger

    async def _closed(self) -> None:
        await self._reads.close()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = 0.02
        group_ready = False
        # After (re)connecting, first re-read this consumer's own pending entries: a
        # batch Redis delivered whose reply was lost with the connection is only there.
        recover: str | None = "0"
        next_claim = loop.time()
        while not self._stopping:
            try:
                if not group_ready:
                    await self._ensure_group()
                    group_ready = True
                entries: list[Any] = []
                if recover is not None:
                    entries = await self._read(recover)
                    recover = entries[-1][0] if entries else None
                elif loop.time() >= next_claim:
                    next_claim = loop.time() + self._claim_interval
                    entries = await self._claim()
                if not entries and recover is None:
                    if self._stopping:
                        break
                    self._reading = True
                    try:
                        entries = await self._read(">")
                    finally:
                        self._reading = False
                if entries:
                    await self._process(entries)
                backoff = 0.02
            except ResponseError as exc:
                recover = "0"
                if "NOGROUP" in str(exc):  # the broker lost its state (restart, flush)
                    group_ready = False
                    continue
                self._logger.error("redis_stream_error", stream=self.stream, error=str(exc))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
            except UNREACHABLE as exc:
                recover = "0"
                self._logger.debug("redis_stream_unreachable", error_type=type(exc).__name__)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)

    async def _ensure_group(self) -> None:
        try:
            await self._client.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _read(self, after: str) -> list[Any]:
        """New entries (``after == ">"``, blocking) or this consumer's pending ones."""
        block = ("BLOCK", self._block_ms) if after == ">" else ()
        reply = await self._reads.call(
            "XREADGROUP", "GROUP", GROUP, self._consumer, "COUNT", self._prefetch,
            *block, "STREAMS", self.stream, after,
        )  # fmt: skip
        if not reply:
            return []
        per_stream = reply.values() if isinstance(reply, dict) else (r[1] for r in reply)
        return [(entry_id, _fields(raw)) for entries in per_stream for entry_id, raw in entries]

    async def _claim(self) -> list[Any]:
        reply = await self._client.xautoclaim(
            self.stream, GROUP, self._consumer, self._min_idle_ms, "0-0", count=self._prefetch
        )
        entries = [e for e in reply[1] if e and e[1]]
        if not entries:
            return []
        self._metrics.redelivered(len(entries))
        self._logger.info("redis_commands_reclaimed", stream=self.stream, count=len(entries))
        return await self._drop_poison(entries)

    async def _drop_poison(self, entries: list[Any]) -> list[Any]:
        ids = [e[0] for e in entries]
        pending = await self._client.xpending_range(
            self.stream, GROUP, min=ids[0], max=ids[-1], count=len(ids) + 100,
            consumername=self._consumer,
        )  # fmt: skip
        counts = {p["message_id"]: p["times_delivered"] for p in pending}
        keep = []
        for entry_id, fields in entries:
            if counts.get(entry_id, 0) > self._max_deliveries:
                await self._dead_letter(fields.get(FIELD, b""), "max_deliveries")
                await self._ack([entry_id])
            else:
                keep.append((entry_id, fields))
        return keep

    async def _process(self, entries: list[Any]) -> None:
        ids = [e[0] for e in entries]
        keepalive = asyncio.get_running_loop().create_task(self._keepalive(ids))
        done: list[Any] = []
        batch = self._begin_batch(len(entries))
        try:
            for entry_id, fields in entries:
                if not fields:  # deleted after it was delivered: nothing left to do
                    done.append(entry_id)
                    continue
                data = fields.get(FIELD)
                if data is None:
                    self._metrics.rejected("malformed")
                    self._logger.warning(
                        "frame_rejected",
                        transport="redis",
                        pattern="send",
                        reason="malformed",
                        detail="a stream entry without the frame field 'f'",
                    )
                    outcome = REJECT
                else:
                    outcome = await self._handle(data)
                if outcome == REJECT:
                    await self._dead_letter(data or b"", "rejected")
                if outcome in (ACK, REJECT):
                    done.append(entry_id)
        finally:
            end_batch(batch)
            keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keepalive
            if done:
                await self._ack(done)

    async def _keepalive(self, ids: list[Any]) -> None:
        while True:
            await asyncio.sleep(self._min_idle_ms / 3000)
            try:
                await self._client.xclaim(self.stream, GROUP, self._consumer, 0, ids, justid=True)
            except (*UNREACHABLE, ResponseError) as exc:
                self._logger.debug("redis_keepalive_failed", error=str(exc))

    async def _ack(self, ids: list[Any]) -> None:
        try:
            await self._writer.submit("XACK", self.stream, GROUP, *ids)
            await self._writer.submit("XDEL", self.stream, *ids)
        except Exception as exc:  # left pending: another consumer will redeliver it
            self._logger.error("redis_ack_failed", stream=self.stream, error=str(exc))

    async def _dead_letter(self, data: bytes, reason: str) -> None:
        try:
            await self._writer.submit(
                "XADD", self._dead, "MAXLEN", "~", 10_000, "*",
                "f", data, "reason", reason, "stream", self.stream,
            )  # fmt: skip
            self._metrics.dead_lettered(self._message_type, reason)
            depth = await self._writer.submit("XLEN", self._dead)
            self._metrics.dead_letter_depth(self._dead, int(depth))
        except Exception as exc:
            self._logger.error("redis_dead_letter_failed", stream=self.stream, error=str(exc))
