"""The middleware contract: the context a message carries and the hooks a middleware has.

A middleware has ``before(ctx, message)`` and ``after(ctx, message, result, error)``; either
may be a plain method or a coroutine function. ``before`` hooks run in registration order,
``after`` hooks in reverse, so the first middleware added is the outermost.

- ``before`` returns the message to carry on with (possibly a replacement) or ``None`` to
  abort the message (``ctx.outcome == "aborted"``).
- ``after`` runs for every middleware whose ``before`` was called, whatever happened next; it
  sees the result and the error, and **its return value becomes the result**. An exception
  raised inside ``after`` is logged and ignored.

A middleware may also implement the :class:`HandlerHook` pair to observe each handler run
(the tracing middleware opens a child span per subscriber this way).

A middleware that only concerns some messages may say so with ``applies_to(pattern,
direction) -> bool`` (``pattern``: publish, send, query; ``direction``: local, out, in; see
:class:`MiddlewareContext`). It is asked when the chain is compiled (when middleware is
added or removed, a transport attached, or ``bus.refresh_routes()`` called), never per
message, so its answer must depend only on its arguments and on state that changes only
with a call of ``bus.refresh_routes()`` (a middleware whose answer changes makes that call). A
message it does not apply to skips both its hooks, and a message no middleware applies to
runs through the empty chain (no context is made for it). Without ``applies_to`` a
middleware sees every message.

How the list is compiled and run lives in :mod:`.chain`.
"""

from __future__ import annotations

import itertools
import os
import time
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "AfterMiddleware",
    "AnyMiddleware",
    "BeforeMiddleware",
    "HandlerHook",
    "Middleware",
    "MiddlewareContext",
    "new_message_id",
    "validate_middleware",
]

PATTERNS = ("publish", "send", "query")
DIRECTIONS = ("local", "out", "in")

# "_", not "-": an id must never read as part of a long number to the wire codec's
# big-integer guard (formats.py), whatever digits the random prefix ends with.
_id_head = os.urandom(6).hex() + "_"
_id_counter = itertools.count(1)


def new_message_id() -> str:
    """A process-unique, cluster-unique-in-practice message id (random prefix + counter)."""
    return _id_head + str(next(_id_counter))


class MiddlewareContext:
    """What middleware knows about one message in flight.

    The reference fields ``message``, ``message_type``, ``timestamp`` and ``metadata`` are
    always available; ``timestamp``, ``metadata`` and ``message_id`` are created on first
    read so that a chain that never reads them costs nothing. The bus also sets
    ``pattern`` ("publish" / "send" / "query"), ``handlers`` (names of the handlers the
    message reached) and, before the ``after`` hooks run, ``outcome`` ("ok", "error",
    "timeout", "no_handler", "aborted", or "cancelled" when the caller's task was cancelled
    while the message was in flight).

    ``direction`` says where the message is going: ``"local"`` (no transport: produced and
    handled here), ``"out"`` (the application produced it and a transport carries it to
    a broker) or ``"in"`` (a transport delivered it from a broker to local handlers).
    ``headers`` are the wire headers: middleware adds to them on the way out (a
    ``traceparent``, say) and reads them on the way in.

    ``system`` names the messaging system carrying the message (``messaging.system``):
    ``"jeeves.commbus"`` in process, the transport's ``system`` (``"redis"``, ``"nats"``)
    for a message going out to or coming in from a broker.

    ``hooks`` are the :class:`HandlerHook` middleware to be called around each handler run
    of this message. A middleware with nothing to do for this message may drop itself from
    it in ``before`` (an unsampled trace, say); when it is empty the handlers run without a
    context copy, which keeps the unobserved path cheap.

    ``trace_id`` is filled in by telemetry (``None`` until then): the trace id of the
    recording span current while the ``after`` hooks run, ``0`` when none records.

    One context belongs to one message and is only touched from the event loop thread.
    """

    __slots__ = (
        "_message_id",
        "_metadata",
        "_timestamp",
        "direction",
        "handlers",
        "headers",
        "hooks",
        "message",
        "message_type",
        "outcome",
        "pattern",
        "started",
        "system",
        "trace_id",
    )

    def __init__(
        self,
        message: Any,
        message_type: str,
        timestamp: datetime | None = None,
        metadata: dict[str, Any] | None = None,
        pattern: str = "publish",
        message_id: str | None = None,
        direction: str = "local",
        system: str = "jeeves.commbus",
    ) -> None:
        # (the bus passes every argument by position: a context is made per message)
        self.message = message
        self.message_type = message_type
        self.pattern = pattern
        self.direction = direction
        self.headers: dict[str, str] | None = None
        self.hooks: tuple[Any, ...] = ()
        self.system = system
        self.outcome = "ok"
        self.handlers: list[str] = []
        self.started = time.perf_counter()
        self._timestamp = timestamp
        self._metadata = metadata
        self._message_id = message_id
        # Per-message cache for telemetry (perf): the trace id of the recording span current
        # for this message's ``after`` hooks (0: none), looked up once by the first hook that
        # needs it and shared with the others instead of one context lookup per hook.
        self.trace_id: int | None = None

    @property
    def timestamp(self) -> datetime:
        """When the message entered the bus (UTC; read off the monotonic clock the bus
        started it with, so reading it late still gives the entry time)."""
        if self._timestamp is None:
            wall = time.time() - (time.perf_counter() - self.started)
            self._timestamp = datetime.fromtimestamp(wall, tz=UTC)
        return self._timestamp

    @timestamp.setter
    def timestamp(self, value: datetime) -> None:
        self._timestamp = value

    @property
    def metadata(self) -> dict[str, Any]:
        """Free-form per-message storage shared by all middleware."""
        if self._metadata is None:
            self._metadata = {}
        return self._metadata

    @metadata.setter
    def metadata(self, value: dict[str, Any]) -> None:
        self._metadata = value

    @property
    def message_id(self) -> str:
        """The message's id: taken from a ``message_id`` attribute of the message when it has
        a non-empty string one, generated otherwise."""
        if self._message_id is None:
            own = getattr(self.message, "message_id", None)
            # new_message_id(), written out (perf: read once per traced message)
            self._message_id = (
                own if isinstance(own, str) and own else _id_head + str(next(_id_counter))
            )
        return self._message_id

    @message_id.setter
    def message_id(self, value: str) -> None:
        self._message_id = value

    def __repr__(self) -> str:
        return (
            f"MiddlewareContext(pattern={self.pattern!r}, message_type={self.message_type!r},"
            f" outcome={self.outcome!r})"
        )


@runtime_checkable
class Middleware(Protocol):
    """Middleware protocol (methods may also be plain, non-async functions)."""

    async def before(self, ctx: MiddlewareContext, message: Any) -> Any | None:
        """Called before the handler(s). Return ``None`` to abort, or the (possibly
        replaced) message to continue with."""
        ...

    async def after(
        self, ctx: MiddlewareContext, message: Any, result: Any, error: Exception | None
    ) -> Any | None:
        """Called after the handler(s) with their result and error; the return value becomes
        the result."""
        ...


class BeforeMiddleware(Protocol):
    """A middleware with only a ``before`` hook, plain or ``async``: what
    :meth:`~jeeves_control_tower.ipc.InMemoryCommBus.add_middleware` accepts besides
    a full :class:`Middleware` (the bus skips the hook it lacks)."""

    def before(self, ctx: MiddlewareContext, message: Any) -> Any: ...


class AfterMiddleware(Protocol):
    """A middleware with only an ``after`` hook, plain or ``async``."""

    def after(
        self, ctx: MiddlewareContext, message: Any, result: Any, error: BaseException | None
    ) -> Any: ...


#: Anything ``add_middleware`` takes: a full middleware or one with a single hook.
AnyMiddleware = Middleware | BeforeMiddleware | AfterMiddleware


@runtime_checkable
class HandlerHook(Protocol):
    """Optional per-handler observation, implemented by middleware that wants it.

    ``handler_start`` runs inside the handler's own copy of the context (anything it sets
    in context variables, such as the current span, is seen by that handler only) right
    before the handler starts; its return value is handed to ``handler_end`` when the
    handler has finished, failed, timed out or been cancelled. Both must be fast and must
    not raise (the bus logs and ignores it if they do).
    """

    def handler_start(self, ctx: MiddlewareContext, handler_name: str) -> Any: ...

    def handler_end(
        self, ctx: MiddlewareContext, token: Any, error: BaseException | None
    ) -> None: ...


def validate_middleware(middleware: Any) -> None:
    """Raise ``TypeError`` unless ``middleware`` has a callable ``before`` or ``after``."""
    before = getattr(middleware, "before", None)
    after = getattr(middleware, "after", None)
    if before is None and after is None:
        raise TypeError(
            f"middleware {type(middleware).__name__} has neither a 'before' nor an 'after' hook"
        )
    applies_to = getattr(middleware, "applies_to", None)
    for name, hook in (("before", before), ("after", after), ("applies_to", applies_to)):
        if hook is not None and not callable(hook):
            raise TypeError(f"middleware {type(middleware).__name__}.{name} is not callable")
