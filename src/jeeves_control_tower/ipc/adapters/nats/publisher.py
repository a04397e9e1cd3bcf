"""Events out over core NATS: batched while connected, one by one while reconnecting."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

from ... import TransportError
from ..wire import EventBatcher, Signer

__all__ = ["EventPublisher"]


class EventPublisher:
    """Hands encoded event frames to the nats-py client, in order per subject.

    While connected (and with a :attr:`batcher`), the frames of one subject queued in one
    loop iteration go out as one batch frame (:mod:`..wire.batching`); else each frame is
    sent on its own after what is batched for its subject, so that the client's errors (a
    full reconnect buffer) reach the publisher as :class:`TransportError`. Frames are
    sealed with ``signer`` when there is one. Event-loop-thread only.
    """

    __slots__ = ("_subject_of", "_subjects", "batcher", "client", "signer")

    def __init__(self, subject_of: Callable[[str], str], signer: Signer | None) -> None:
        self._subject_of = subject_of
        self._subjects: dict[str, str] = {}  # event type -> subject (the hot path)
        self.signer = signer
        #: The nats-py client, once connected.
        self.client: Any = None
        #: The batcher, once connected with batching on (see the transport).
        self.batcher: EventBatcher | None = None

    def queue(self, message_type: str, data: bytes) -> Awaitable[None] | None:
        """Queue one event frame (the transport's ``_queue_event``): ``None`` once it is
        batched, else an awaitable that completes when the client holds it."""
        subject = self._subjects.get(message_type)
        if subject is None:
            subject = self._subjects[message_type] = self._subject_of(message_type)
        nc = self.client
        if nc is None:
            raise TransportError("the NATS transport is not connected")
        batcher = self.batcher
        if batcher is not None and nc.is_connected:
            pending = batcher.add(subject, data)
            if pending is not False:
                return pending
        return self._send_alone(subject, data)

    async def flush(self) -> None:
        """Hand everything batched so far to the client."""
        if self.batcher is not None:
            await self.batcher.flush()

    async def _send_alone(self, subject: str, data: bytes) -> None:
        if self.batcher is not None:
            pending = self.batcher.take(subject)
            if pending is not None:
                await pending
        await self.send((subject, data))

    async def send(self, item: tuple[str, bytes]) -> None:
        """Hand one frame (an event or a batch of events) to nats-py."""
        nc = self.client
        signer = self.signer
        if signer is not None:
            item = (item[0], signer.seal(item[1]))
        try:
            await nc.publish(*item)
        except Exception as exc:
            self._failed(nc, exc)

    @staticmethod
    def _failed(nc: Any, exc: Exception) -> NoReturn:
        import nats.errors

        if nc is None or nc.is_closed:
            raise TransportError("the NATS transport is not connected") from None
        if isinstance(exc, nats.errors.Error):
            raise TransportError(f"publish not accepted: {type(exc).__name__}") from None
        raise exc
