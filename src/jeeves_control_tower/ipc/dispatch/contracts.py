"""What dispatch asks of the code around it: the handler signature, the outcomes, and the
protocols of a remote dispatcher and of dispatch telemetry."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from ...types import DispatchTarget, Envelope
from .service_registry import RegistryObserver

__all__ = [
    "DISPATCH_OUTCOMES",
    "DispatchHandler",
    "DispatchObserver",
    "RemoteDispatcher",
    "WholeDispatchObserver",
]

#: A local dispatch handler: takes the envelope, returns the (processed) envelope.
DispatchHandler = Callable[[Envelope], Awaitable[Envelope]]

#: Every outcome a dispatch can end with (the ``outcome`` metric label).
DISPATCH_OUTCOMES = (
    "ok",
    "error",
    "timeout",
    "overloaded",
    "unknown_service",
    "unhealthy",
    "no_handler",
    "cancelled",
)


class RemoteDispatcher(Protocol):
    """Carries a dispatch to a service whose handler lives in another process (see
    :meth:`~jeeves_control_tower.ipc.CommBusCoordinator.attach_remote`)."""

    async def dispatch(
        self, target: DispatchTarget, envelope: Envelope, deadline: float
    ) -> Envelope:
        """``deadline`` is on the event loop's clock (``loop.time()``)."""
        ...


class DispatchObserver(RegistryObserver, Protocol):
    """Telemetry for dispatch. Methods must be fast; exceptions are logged and ignored.

    ``attempt_start`` runs inside the attempt's own context copy, so what it makes current
    (a span) is what the handler sees. An observer with ``observes_attempts = False`` is
    not called per attempt (see :class:`WholeDispatchObserver`); one with a method
    ``watches_attempts(token) -> bool`` is asked once per dispatch, right after its
    ``dispatch_start`` returned ``token``, and when no observer of a dispatch wants its
    attempts they run with no attempt hooks: each in a context of its own when some
    observer's ``dispatch_start`` returned a token other than ``None`` (a dispatch span, say,
    sampled or not), otherwise in the caller's context as with no observer.

    An observer may also have a method ``wants_dispatch(envelope) -> bool``: the coordinator
    may ask it before a dispatch starts (it does when the observer is its only one), and on
    ``False`` the dispatch runs unobserved by it: no hook of it is called for that dispatch
    (a tracer with no SDK behind it and no caller's context in the envelope has nothing to
    do). One that raises is reported and observes the dispatch.
    """

    def dispatch_start(self, target: DispatchTarget, envelope: Envelope) -> Any: ...

    def attempt_start(self, token: Any, target: DispatchTarget, attempt: int) -> Any: ...

    def attempt_end(self, token: Any, attempt_token: Any, error: BaseException | None) -> None: ...

    def dispatch_end(
        self,
        token: Any,
        target: DispatchTarget,
        outcome: str,
        attempts: int,
        error: BaseException | None,
        duration: float,
    ) -> None: ...


class WholeDispatchObserver:
    """Base for dispatch observers that only watch whole dispatches: the per-attempt hooks
    of :class:`DispatchObserver` do nothing, and ``observes_attempts = False`` tells the
    dispatcher so (when no observer of a dispatch watches attempts, they run with no
    attempt hooks)."""

    observes_attempts = False

    def attempt_start(self, token: Any, target: DispatchTarget, attempt: int) -> None:
        return None

    def attempt_end(self, token: Any, attempt_token: Any, error: BaseException | None) -> None:
        return None
