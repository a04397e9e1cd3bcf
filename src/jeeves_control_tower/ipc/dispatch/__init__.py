"""Dispatch: :class:`CommBusCoordinator`, its service registry and the dispatch engine.

- :mod:`.coordinator`: the coordinator (public API, registry operations, typed messaging);
- :mod:`.dispatcher`: one dispatch from admission to outcome (attempts, retries, deadline,
  observers), owned by the coordinator;
- :mod:`.service_registry`: services by name, each with its admission slots;
- :mod:`.admission`: per-service concurrency slots and the priority wait queue;
- :mod:`.retry`: the retry backoff policy;
- :mod:`.attempt`: what a handler may learn of its attempt (target, deadline) and the
  exception that steers retries (:class:`AttemptFailed`);
- :mod:`.contracts`: the handler signature, the outcomes, the observer and remote protocols.
"""

from .attempt import AttemptFailed, DispatchAttempt, current_attempt
from .contracts import (
    DISPATCH_OUTCOMES,
    DispatchHandler,
    DispatchObserver,
    RemoteDispatcher,
    WholeDispatchObserver,
)
from .coordinator import CommBusCoordinator, CommBusCoordinatorProtocol
from .retry import RetryPolicy

__all__ = [
    "DISPATCH_OUTCOMES",
    "AttemptFailed",
    "CommBusCoordinator",
    "CommBusCoordinatorProtocol",
    "DispatchAttempt",
    "DispatchHandler",
    "DispatchObserver",
    "RemoteDispatcher",
    "RetryPolicy",
    "WholeDispatchObserver",
    "current_attempt",
]
