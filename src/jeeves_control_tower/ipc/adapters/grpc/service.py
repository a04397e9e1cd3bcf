"""The ``jeeves.commbus.v1.CommBus`` service: the hub's gRPC methods.

Handlers are registered generically (``grpc.method_handlers_generic_handler``) with the
generated message classes' (de)serialisers; no generated service stub is needed. Every
method checks the bearer token first (``UNAUTHENTICATED``), then the request
(``INVALID_ARGUMENT``, counted in ``commbus_wire_rejected_total``).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from . import commbus_pb2 as pb
from .checks import frame_problem, name_problem
from .contracts import Host
from .session import Session

__all__ = ["SERVICE", "add_commbus_service"]

SERVICE = "jeeves.commbus.v1.CommBus"
#: How long a new stream may take to say hello.
HELLO_TIMEOUT = 5.0


def add_commbus_service(server: Any, hub: Host) -> None:
    import grpc

    methods = _Methods(hub, grpc)
    unary = grpc.unary_unary_rpc_method_handler
    handlers = {
        "Publish": unary(methods.publish, pb.Frame.FromString, pb.Accepted.SerializeToString),
        "Send": unary(methods.send, pb.Frame.FromString, pb.Accepted.SerializeToString),
        "Query": unary(methods.query, pb.Frame.FromString, pb.ReplyFrame.SerializeToString),
        "Dispatch": unary(
            methods.dispatch, pb.DispatchRequest.FromString, pb.DispatchReply.SerializeToString
        ),
        "Connect": grpc.stream_stream_rpc_method_handler(
            methods.connect, pb.ClientMessage.FromString, pb.HubMessage.SerializeToString
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))


class _Methods:
    def __init__(self, hub: Host, grpc: Any) -> None:
        self.hub = hub
        self.grpc = grpc

    async def _guard(self, context: Any) -> None:
        if not self.hub.authorized(context):
            self.hub.hub_metrics.refused("unauthenticated")
            await context.abort(
                self.grpc.StatusCode.UNAUTHENTICATED, "a valid bearer token is required"
            )

    async def _checked(self, frame: pb.Frame, pattern: str, context: Any) -> None:
        await self._guard(context)
        hub = self.hub
        problem = name_problem(frame.type)
        if problem is None and frame.pattern != pattern:
            problem = f"a {pattern} frame must say pattern {pattern!r}"
        if problem is not None:
            hub.metrics.rejected("malformed")
            await context.abort(self.grpc.StatusCode.INVALID_ARGUMENT, problem)
        if hub.check_frames:
            reason = frame_problem(frame.data, pattern, frame.type, hub.signer)
            if reason is not None:
                hub.metrics.rejected(reason)
                await context.abort(
                    self.grpc.StatusCode.INVALID_ARGUMENT, f"frame refused: {reason}"
                )

    async def publish(self, frame: pb.Frame, context: Any) -> pb.Accepted:
        await self._checked(frame, "publish", context)
        self.hub.router.publish(frame.type, frame.data)
        return pb.Accepted()

    async def send(self, frame: pb.Frame, context: Any) -> pb.Accepted:
        await self._checked(frame, "send", context)
        if not self.hub.router.send(frame.type, frame.data):
            await context.abort(self.grpc.StatusCode.RESOURCE_EXHAUSTED, "too many commands held")
        return pb.Accepted()

    async def query(self, frame: pb.Frame, context: Any) -> pb.ReplyFrame:
        await self._checked(frame, "query", context)
        left = context.time_remaining()
        timeout = min(left, self.hub.max_timeout) if left is not None else self.hub.max_timeout
        future: asyncio.Future[tuple[pb.Status, bytes, str]] = (
            asyncio.get_running_loop().create_future()
        )

        def answer(status: pb.Status, data: bytes, text: str) -> None:
            if not future.done():
                future.set_result((status, data, text))

        router = self.hub.router
        rid = router.query(frame.type, frame.data, max(timeout, 0.001), answer)
        try:
            status, data, text = await future
        finally:
            if future.cancelled() or not future.done():  # the caller gave up
                router.cancel(rid)
        if status == pb.OK:
            return pb.ReplyFrame(data=data)
        codes = self.grpc.StatusCode
        code = {pb.NO_HANDLER: codes.NOT_FOUND, pb.TIMEOUT: codes.DEADLINE_EXCEEDED}
        await context.abort(code.get(status, codes.UNAVAILABLE), text)
        raise AssertionError("unreachable")  # abort raises

    async def dispatch(self, request: pb.DispatchRequest, context: Any) -> pb.DispatchReply:
        await self._guard(context)
        status, data, text = await self.hub.services.dispatch(request)
        if status != pb.OK:
            await context.abort(self.grpc.StatusCode.INVALID_ARGUMENT, text)
        return pb.DispatchReply(envelope=data)

    async def connect(self, requests: Any, context: Any) -> None:
        await self._guard(context)
        hub = self.hub
        try:
            first = await asyncio.wait_for(context.read(), HELLO_TIMEOUT)
        except TimeoutError:
            first = self.grpc.aio.EOF
        if first is self.grpc.aio.EOF:
            hub.hub_metrics.refused("no_hello")
            return
        process_id = first.hello.process_id if first.WhichOneof("kind") == "hello" else ""
        if name_problem(process_id) is not None:
            hub.hub_metrics.refused("no_hello")
            await context.abort(self.grpc.StatusCode.INVALID_ARGUMENT, "say hello first")
        session = Session(hub, context, process_id)
        refused = hub.session_opened(session)
        if refused is not None:
            code = self.grpc.StatusCode
            busy = refused == "too many clients"
            await context.abort(code.RESOURCE_EXHAUSTED if busy else code.ALREADY_EXISTS, refused)
        session.put(hub.welcome())
        loop = asyncio.get_running_loop()
        reader = loop.create_task(self._read(session, context))
        ended = loop.create_task(session.ended.wait())
        try:
            await asyncio.wait({reader, ended}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            session.close(session.closed_reason or "closed")
            for task in (reader, ended):
                task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.gather(reader, ended, return_exceptions=True)
            await session.finish()

    async def _read(self, session: Session, context: Any) -> None:
        # context.read(), not the request iterator: one async generator less per message.
        handle = session.handle
        read = context.read
        eof = self.grpc.aio.EOF
        while True:
            message = await read()
            if message is eof:
                return
            try:
                handle(message)
            except Exception as exc:  # a bug here must not take the hub down
                session.hub.logger.error("grpc_client_message_failed", error=str(exc)[:300])
