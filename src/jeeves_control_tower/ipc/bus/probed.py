"""The empty chain's steps with a message probe: metrics and flow without middleware.

When telemetry set a :class:`~jeeves_control_tower.ipc.telemetry.MessageProbe` on the bus
and no middleware applies to a message produced and handled here (direction ``"local"``),
its route is one of these steps: the handlers run exactly as on
:class:`~.delivery.Delivery`'s empty chain (same order, same eager start, same errors
logged), with the message counted in ``probe.inflight`` while it runs and one call of
``probe.message(...)`` when it is done. No context object is made, no hook is looked up.

Every other route with a probe (a chain, a transport, a message arriving from one) reports
from :class:`~.chain.ChainRoute`, with the same call. Event-loop-thread only.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from typing import Any

from ...types import LoggerProtocol
from .chain import Route
from .delivery import Delivery
from .eager import CoroutineType, Resume, resume_within
from .errors import NoHandlerError
from .handlers import HandlerEntry, command_failed, subscriber_failed
from .observation import outcome_of as _ended
from .observation import probe_failed, report

__all__ = ["ProbedDelivery"]

_perf = time.perf_counter
SYSTEM = "jeeves.commbus"


class ProbedDelivery:
    """:class:`~.delivery.Delivery`'s empty-chain steps reporting to ``probe``."""

    def __init__(self, delivery: Delivery, probe: Any, logger: LoggerProtocol) -> None:
        self._delivery = delivery
        self._probe = probe  # kept while this route can report to it (its message may not)
        self._subscribers = delivery.subscribers
        self._handlers = delivery.handlers
        self._inflight = probe.inflight
        self._logger = logger
        self._ok_publish = ended_ok(probe, "publish", logger)
        self._ok_send = ended_ok(probe, "send", logger)
        self._ok_query = ended_ok(probe, "query", logger)

    def step(self, pattern: str) -> Route:
        """The route of a ``pattern`` message produced and delivered here."""
        if pattern == "publish":
            return self.publish
        if pattern == "send":
            return self.send
        return self.query

    def _done(
        self,
        pattern: str,
        message_type: str,
        started: float,
        outcome: str,
        handlers: Any,
        error: Any,
        trace_id: int | None,
        message: Any,
    ) -> None:
        """:func:`~.observation.report` for a message of this route (the common case writes
        the call out instead: perf)."""
        report(
            self._probe, self._logger, pattern, "local", SYSTEM, message_type, started,
            outcome, handlers, error, trace_id, message,
        )  # fmt: skip

    # ------------------------------------------------------------------ publish

    def publish(self, event: Any, message_type: str, timeout: float | None) -> Any:
        """As :meth:`~.delivery.Delivery.to_subscribers`, reported."""
        inflight = self._inflight  # enter(), written out (perf)
        try:
            inflight["publish"] += 1
        except KeyError:
            inflight["publish"] = 1
        started = _perf()
        subs = self._subscribers.get(message_type)
        if not subs:
            self._done("publish", message_type, started, "no_handler", (), None, None, event)
            return "no_handler"
        if len(subs) == 1:  # alone: simply called, as on the unprobed path
            sub = subs[0]
            names = sub.names
            try:
                result = sub.fn(event)
            except Exception as exc:
                subscriber_failed(self._logger, message_type, sub, exc)
                self._done("publish", message_type, started, "error", names, [exc], None, event)
                return "error"
            except BaseException as exc:  # cancelled, or exiting: reported, then raised
                self._done("publish", message_type, started, _ended(exc), names, exc, None, event)
                raise
            if sub.is_async or (result is not None and inspect.isawaitable(result)):
                return self._publish_one(event, message_type, sub, started, result)
            try:  # _done(), written out on the common path (perf)
                self._ok_publish(message_type, started, names, event)
            except Exception as exc:
                probe_failed(self._logger, exc)
            return "ok"
        errors: list[BaseException] = []
        try:
            outcome = self._delivery.fan_out(event, message_type, subs, None, errors)
        except BaseException as exc:  # what fan_out does not catch: reported, then raised
            self._done("publish", message_type, started, _ended(exc), subs, exc, None, event)
            raise
        if outcome.__class__ is str:
            self._done("publish", message_type, started, outcome, subs, errors or None, None, event)
            return outcome
        return self._publish_rest(event, message_type, subs, started, outcome, errors)

    async def _publish_one(
        self, event: Any, message_type: str, sub: HandlerEntry, started: float, running: Any
    ) -> str:
        """The rest of a publish to a lone subscriber that returned an awaitable."""
        names = sub.names
        try:
            await running
        except Exception as exc:
            subscriber_failed(self._logger, message_type, sub, exc)
            self._done("publish", message_type, started, "error", names, [exc], None, event)
            return "error"
        except BaseException as exc:
            self._done("publish", message_type, started, _ended(exc), names, exc, None, event)
            raise
        try:  # _done(), written out on the common path (perf)
            self._ok_publish(message_type, started, names, event)
        except Exception as exc:
            probe_failed(self._logger, exc)
        return "ok"

    async def _publish_rest(
        self,
        event: Any,
        message_type: str,
        subs: tuple[HandlerEntry, ...],
        started: float,
        running: Any,
        errors: list[BaseException],
    ) -> str:
        """The rest of a publish fanned out to several subscribers."""
        try:
            outcome: str = await running
        except BaseException as exc:
            self._done("publish", message_type, started, _ended(exc), subs, exc, None, event)
            raise
        if outcome == "ok" and not errors:
            try:  # _done(), written out on the common path (perf)
                self._ok_publish(message_type, started, subs, event)
            except Exception as exc:
                probe_failed(self._logger, exc)
        else:
            self._done("publish", message_type, started, outcome, subs, errors or None, None, event)
        return outcome

    # ------------------------------------------------------------------ send

    def send(self, command: Any, message_type: str, timeout: float | None) -> Any:
        """As :meth:`~.delivery.Delivery.to_command_handler`, reported."""
        inflight = self._inflight  # enter(), written out (perf)
        try:
            inflight["send"] += 1
        except KeyError:
            inflight["send"] = 1
        started = _perf()
        handler = self._handlers.get(message_type)
        if handler is None:
            self._logger.warning("no_handler", pattern="send", message_type=message_type)
            self._done("send", message_type, started, "no_handler", (), None, None, command)
            return "no_handler"
        try:
            result = handler.fn(command)
        except Exception as exc:
            command_failed(self._logger, message_type, handler, exc)
            self._done("send", message_type, started, "error", handler.names, exc, None, command)
            return "error"
        except BaseException as exc:  # cancelled, or exiting: reported, then raised
            self._done(
                "send", message_type, started, _ended(exc), handler.names, exc, None, command
            )
            raise
        if handler.is_async or (result is not None and inspect.isawaitable(result)):
            return self._send_rest(command, message_type, handler, started, result)
        try:  # _done(), written out on the common path (perf)
            self._ok_send(message_type, started, handler.names, command)
        except Exception as exc:
            probe_failed(self._logger, exc)
        return "ok"

    async def _send_rest(
        self, command: Any, message_type: str, handler: HandlerEntry, started: float, running: Any
    ) -> str:
        try:
            await running
        except Exception as exc:
            command_failed(self._logger, message_type, handler, exc)
            self._done("send", message_type, started, "error", handler.names, exc, None, command)
            return "error"
        except BaseException as exc:
            self._done(
                "send", message_type, started, _ended(exc), handler.names, exc, None, command
            )
            raise
        try:  # _done(), written out on the common path (perf)
            self._ok_send(message_type, started, handler.names, command)
        except Exception as exc:
            probe_failed(self._logger, exc)
        return "ok"

    # ------------------------------------------------------------------ query

    def query(self, query: Any, message_type: str, timeout: float | None) -> Any:
        """As :meth:`~.delivery.Delivery.to_query_handler`, reported."""
        inflight = self._inflight  # enter(), written out (perf)
        try:
            inflight["query"] += 1
        except KeyError:
            inflight["query"] = 1
        started = _perf()
        handler = self._handlers.get(message_type)
        if handler is None or not handler.is_async:
            return self._query_plain(query, message_type, timeout, started, handler)
        names = handler.names
        try:  # Delivery.to_query_handler's async case, written out (perf: one frame less)
            coro: Any = handler.fn(query)
            pending = coro.send(None)
        except StopIteration as stop:
            result = stop.value
        except BaseException as exc:
            self._query_failed(query, message_type, started, names, exc)
            raise
        else:  # suspended: the timer is armed from here, as on the unprobed path
            resume = Resume(coro, pending)
            running = resume if timeout is None else resume_within(resume, timeout)
            return self._query_rest(query, message_type, started, names, running)
        if result.__class__ is CoroutineType:  # a coroutine as the value: not to be awaited
            return self._query_rest(query, message_type, started, names, _value(result))
        try:  # _done(), written out on the common path (perf)
            self._ok_query(message_type, started, names, query)
        except Exception as exc:
            probe_failed(self._logger, exc)
        return result

    def _query_plain(
        self,
        query: Any,
        message_type: str,
        timeout: float | None,
        started: float,
        handler: HandlerEntry | None,
    ) -> Any:
        """:meth:`query` with a plain function for a handler, or none."""
        names = handler.names if handler is not None else ()
        try:
            result = self._delivery.to_query_handler(query, message_type, timeout)
        except BaseException as exc:
            self._query_failed(query, message_type, started, names, exc)
            raise
        if result.__class__ is Resume or result.__class__ is CoroutineType:
            return self._query_rest(query, message_type, started, names, result)
        try:  # _done(), written out on the common path (perf)
            self._ok_query(message_type, started, names, query)
        except Exception as exc:
            probe_failed(self._logger, exc)
        return result

    async def _query_rest(
        self, query: Any, message_type: str, started: float, handlers: Any, running: Any
    ) -> Any:
        try:
            result = await running
        except BaseException as exc:
            self._query_failed(query, message_type, started, handlers, exc)
            raise
        try:  # _done(), written out on the common path (perf)
            self._ok_query(message_type, started, handlers, query)
        except Exception as exc:
            probe_failed(self._logger, exc)
        return result

    def _query_failed(
        self, query: Any, message_type: str, started: float, handlers: Any, exc: BaseException
    ) -> None:
        if not handlers and isinstance(exc, NoHandlerError):  # none found (not a handler's own)
            self._done("query", message_type, started, "no_handler", (), None, None, query)
            return
        self._done("query", message_type, started, _ended(exc), handlers, exc, None, query)


def ended_ok(probe: Any, pattern: str, logger: LoggerProtocol) -> Callable[..., None]:
    """``ok(message_type, started, handlers, message)``: how this route tells ``probe`` of a
    ``pattern`` message that ended "ok" (no error, no trace id looked up): the probe's own
    ``ended_ok(pattern, "local", SYSTEM)`` when it offers one (see
    :class:`~jeeves_control_tower.ipc.telemetry.MessageProbe`), else its ``message`` with
    the constant arguments filled in. A probe whose ``ended_ok`` raises is logged and told
    through ``message``."""
    ended = getattr(probe, "ended_ok", None)
    if ended is not None:
        try:
            found: Callable[..., None] = ended(pattern, "local", SYSTEM)
            return found
        except Exception as exc:
            probe_failed(logger, exc)
    message = probe.message

    def ok(message_type: str, started: float, handlers: Any, event: Any) -> None:
        message(pattern, "local", SYSTEM, message_type, started, "ok", handlers, None, None, event)

    return ok


async def _value(value: Any) -> Any:
    return value
