"""The hub's side of one client's Connect stream.

A :class:`Session` is the client as a peer of the router. It reads the client's messages
in order and applies each (subscribe, publish, send, query, dispatch, answers, service
registration, heartbeats), and writes what is routed to the client
(:class:`~.writer.StreamWriter`, started at once when the stream is idle), a bounded amount
of it waiting: when ``max_queue`` messages wait because the client does not read its stream
(or reads too slowly), the client is disconnected (``slow_consumer``) rather than let the
hub's memory grow; likewise when the frames waiting for it reach ``max_queue_bytes``.
Everything the client sends is checked first (:mod:`.checks`); a
refused message is counted and answered with a ``Notice`` (or a ``Result`` for a request),
never routed. A client may hold at most ``max_interests`` subscriptions and have
:data:`MAX_DISPATCHES` dispatches running and ``max_pending`` queries unanswered, their
frames (queries) and envelopes (dispatches) ``max_pending_bytes`` in all (beyond:
``REFUSED``, as is a query or dispatch whose id is pending already, or an envelope
nested too deep to parse); a query runs for ``max_timeout`` at most. Every dispatch
request gets its one ``Result`` (``UNAVAILABLE`` should the hub itself fail on it),
unless the client cancels it. A ``cancel`` from the client, or
its stream ending, makes the hub forget its queries at once and tell their responders to
stop (a late answer is dropped), and cancels its dispatches.
"""

from __future__ import annotations

import asyncio
from typing import Any

from . import commbus_pb2 as pb
from .checks import PATTERNS, frame_problem, name_problem
from .contracts import Host
from .writer import StreamWriter

__all__ = ["MAX_DISPATCHES", "Session"]

#: Dispatches one client may have running through the hub at once (beyond: refused).
MAX_DISPATCHES = 1000


class Session:
    """One client of the hub (see the module docstring)."""

    def __init__(self, hub: Host, context: Any, process_id: str) -> None:
        self.hub = hub
        self.context = context
        self.process_id = process_id
        #: Messages and bytes of frames waiting to be written (bounded by ``max_queue`` and
        #: ``max_queue_bytes``).
        self.queued = 0
        self.queued_bytes = 0
        self.writer = StreamWriter(self._write, self._write_failed)
        self.closed_reason: str | None = None
        self.last_heard = asyncio.get_running_loop().time()
        self._tasks: set[asyncio.Task[Any]] = set()
        #: Unanswered queries: the client's request id -> (the router's id, frame size).
        self._queries: dict[int, tuple[int, int]] = {}
        #: Running dispatches: the client's request id -> the task running it.
        self._dispatches: dict[int, asyncio.Task[Any]] = {}
        #: Bytes of the frames and envelopes of the client's unanswered requests.
        self.pending_bytes = 0
        #: Set once the session is closed: the Connect call then ends.
        self.ended = asyncio.Event()

    # ------------------------------------------------------------------ to the client

    def deliver(self, delivery: pb.Delivery) -> bool:
        return self.put(pb.HubMessage(delivery=delivery), len(delivery.data))

    def cancel(self, rid: int) -> None:
        self.put(pb.HubMessage(cancel=pb.Cancel(id=rid)))

    def put(self, message: pb.HubMessage, size: int = 0) -> bool:
        """Queue ``message`` (of about ``size`` bytes) for the client; ``False`` (and the
        client disconnected) when its queue is full, in messages or in bytes."""
        if self.closed_reason is not None:
            return False
        if self.queued >= self.hub.max_queue or self.queued_bytes + size > self.hub.max_queue_bytes:
            self.close("slow_consumer")
            return False
        self.queued += 1
        self.queued_bytes += size
        self.writer.put((message, size))
        return True

    def close(self, reason: str) -> None:
        """End the stream (the client sees it end and may reconnect); ``reason`` is
        counted in ``commbus_grpc_disconnects_total``."""
        if self.closed_reason is not None:
            return
        self.closed_reason = reason
        self.hub.session_closed(self, reason)
        for routed, _ in self._queries.values():
            self.hub.router.cancel(routed)  # nobody is waiting for these answers now
        self._queries.clear()
        self.ended.set()  # the stream ends now, whatever is still queued for it

    def result(self, rid: int, status: pb.Status, data: bytes = b"", message: str = "") -> None:
        result = pb.Result(id=rid, status=status, data=data, message=message)
        self.put(pb.HubMessage(result=result), len(data))

    def notice(self, status: pb.Status, message: str, message_type: str = "") -> None:
        self.put(pb.HubMessage(notice=pb.Notice(status=status, message=message, type=message_type)))

    async def _write(self, item: tuple[pb.HubMessage, int]) -> None:
        message, size = item
        self.queued -= 1
        self.queued_bytes -= size
        if self.closed_reason is None:
            await self.context.write(message)

    def _write_failed(self, exc: BaseException) -> None:
        self.close("closed")

    # ------------------------------------------------------------------ from the client

    def refuse(self, reason: str, detail: str, message_type: str = "") -> None:
        self.hub.metrics.rejected(reason)
        self.notice(pb.REFUSED, f"{reason}: {detail}", message_type[:256])

    def _frame_ok(self, frame: pb.Frame, pattern: str) -> bool:
        problem = name_problem(frame.type)
        if problem is not None:
            self.refuse("malformed", problem)
            return False
        if self.hub.check_frames:
            problem = frame_problem(frame.data, pattern, frame.type, self.hub.signer)
            if problem is not None:
                self.refuse(problem, f"{pattern} frame refused", frame.type)
                return False
        return True

    def handle(self, message: pb.ClientMessage) -> None:
        """Apply one message read from the client's stream."""
        self.last_heard = asyncio.get_running_loop().time()
        kind = message.WhichOneof("kind")
        router = self.hub.router
        if kind == "publish":
            frame = message.publish
            if frame.pattern == "publish" and self._frame_ok(frame, "publish"):
                router.publish(frame.type, frame.data)
            elif frame.pattern != "publish":
                self.refuse("malformed", "a publish frame must say pattern 'publish'")
        elif kind == "response":
            router.respond(self, message.response)
        elif kind == "query":
            self._query(message.query)
        elif kind == "send":
            request = message.send
            if request.frame.pattern != "send" or not self._frame_ok(request.frame, "send"):
                self.result(request.id, pb.REFUSED, message="malformed command")
            elif router.send(request.frame.type, request.frame.data):
                self.result(request.id, pb.OK)
            else:
                self.result(request.id, pb.REFUSED, message="the hub holds too many commands")
        elif kind == "subscribe":
            self._subscribe(message.subscribe)
        elif kind == "unsubscribe":
            router.unsubscribe(self, message.unsubscribe.pattern, message.unsubscribe.type)
        elif kind == "dispatch":
            size = len(message.dispatch.dispatch.envelope)
            if message.dispatch.id in self._dispatches:
                self.result(message.dispatch.id, pb.REFUSED, message="a dispatch with this id runs")
            elif len(self._tasks) >= MAX_DISPATCHES:
                self.result(message.dispatch.id, pb.REFUSED, message="too many dispatches")
            elif self._over_budget(size):
                self.result(message.dispatch.id, pb.REFUSED, message="too many pending bytes")
            else:
                self.pending_bytes += size
                rid = message.dispatch.id
                self._dispatches[rid] = self._spawn(self._dispatch(message.dispatch, size))
        elif kind == "register_service":
            name = message.register_service.name
            problem = self.hub.services.register(self, message.register_service)
            if problem is not None:
                self.hub.logger.warning(
                    "grpc_service_refused", process=self.process_id[:200], service=name[:200]
                )
                self.notice(pb.REFUSED, problem, name[:256])
        elif kind == "unregister_service":
            self.hub.services.unregister(self, message.unregister_service.type)
        elif kind == "heartbeat":
            self.hub.services.heartbeat(self, message.heartbeat)
        elif kind == "cancel":
            self._cancel(message.cancel.id)
        else:
            self.refuse("malformed", f"unexpected message {kind or 'without a kind'}")

    def _subscribe(self, interest: pb.Interest) -> None:
        problem = name_problem(interest.type)
        if interest.pattern not in PATTERNS:
            problem = f"unknown pattern {interest.pattern[:20]!r}"
        elif problem is None and self.hub.router.interests(self) >= self.hub.max_interests:
            problem = f"more than {self.hub.max_interests} subscriptions"
        if problem is not None:
            self.refuse("malformed", problem, interest.type)
            if interest.id:
                self.result(interest.id, pb.REFUSED, message=problem)
            return
        self.hub.router.subscribe(self, interest.pattern, interest.type)
        if interest.id:
            self.result(interest.id, pb.OK)

    def _query(self, request: pb.Request) -> None:
        frame = request.frame
        if frame.pattern != "query" or not self._frame_ok(frame, "query"):
            self.result(request.id, pb.REFUSED, message="malformed query")
            return
        if not request.timeout > 0:
            self.result(request.id, pb.REFUSED, message="a query needs a timeout")
            return
        rid, size = request.id, len(frame.data)
        if rid in self._queries:
            self.result(rid, pb.REFUSED, message="a query with this id is pending")
            return
        if len(self._queries) >= self.hub.max_pending:
            self.result(rid, pb.REFUSED, message=f"more than {self.hub.max_pending} queries")
            return
        if self._over_budget(size):
            self.result(rid, pb.REFUSED, message="too many pending bytes")
            return
        timeout = min(request.timeout, self.hub.max_timeout)
        self.pending_bytes += size
        pending = True

        def answer(status: pb.Status, data: bytes, text: str) -> None:
            nonlocal pending
            if pending:  # once: at once (refused, no handler) or when answered later
                pending = False
                self.pending_bytes -= size
                self._queries.pop(rid, None)
            self.result(rid, status, data, text)

        routed = self.hub.router.query(frame.type, frame.data, timeout, answer)
        if pending:  # delivered, waiting for its answer (or for forget)
            self._queries[rid] = (routed, size)

    def _cancel(self, rid: int) -> None:
        """The client gave up on its query or dispatch ``rid``: forget it, tell the
        responder (a dispatch: cancelled in the hub's coordinator); no Result follows."""
        query = self._queries.pop(rid, None)
        if query is not None:
            self.pending_bytes -= query[1]
            self.hub.router.cancel(query[0])
        task = self._dispatches.get(rid)
        if task is not None:
            task.cancel()

    def _over_budget(self, size: int) -> bool:
        return self.pending_bytes + size > self.hub.max_pending_bytes

    async def _dispatch(self, request: pb.Request, size: int) -> None:
        try:
            status, data, text = await self.hub.services.dispatch(request.dispatch)
        except Exception as exc:  # the caller still gets its one Result
            self.hub.logger.error(
                "grpc_dispatch_failed", error_type=type(exc).__name__, error=str(exc)[:300]
            )
            status, data, text = pb.UNAVAILABLE, b"", f"the hub failed: {type(exc).__name__}"
        finally:
            self.pending_bytes -= size
            if self._dispatches.get(request.id) is asyncio.current_task():
                del self._dispatches[request.id]
        self.result(request.id, status, data, text)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def finish(self) -> None:
        self.writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
