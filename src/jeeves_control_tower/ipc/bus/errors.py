"""The bus's own exceptions, re-exported by :mod:`jeeves_control_tower.ipc` and by
:mod:`jeeves_control_tower.ipc.commbus`.

Their ``__module__`` stays ``jeeves_control_tower.ipc.commbus``, where users have imported
them from: the module-qualified class name is what spans and logs report as
``error.type``, and that must not change when code moves between private modules (alert
rules and dashboards select on it).
"""

from __future__ import annotations

__all__ = ["NoHandlerError", "QueryAbortedError", "TransportError"]


class NoHandlerError(ValueError):
    """A query has no handler registered for its type."""


class QueryAbortedError(ValueError):
    """A middleware's ``before`` hook returned ``None`` for a query."""


class TransportError(RuntimeError):
    """A transport could not accept a publish or send (broker down and buffer full, say).

    Raised to the caller: a message that did not leave is never dropped silently."""


for _cls in (NoHandlerError, QueryAbortedError, TransportError):
    _cls.__module__ = "jeeves_control_tower.ipc.commbus"
del _cls
