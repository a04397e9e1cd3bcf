"""The bus: :class:`InMemoryCommBus`, its one run path and the seam to a transport.

- :mod:`.bus`: the bus (public API, registration, middleware and transport);
- :mod:`.default`: the process-wide bus (:func:`get_commbus`, :func:`reset_commbus`);
- :mod:`.protocol`: :class:`CommBusProtocol`, what the coordinator and adapters need;
- :mod:`.routes`: what a message of each pattern and direction runs, compiled once;
- :mod:`.delivery`: the last step of a message delivered here (fan-out, handler runs);
- :mod:`.chain`: the middleware chain, compiled once, run per message;
- :mod:`.middleware`: the middleware contract (:class:`MiddlewareContext`, the protocols);
- :mod:`.eager`: handlers started without a task until they suspend;
- :mod:`.hooks`: the per-handler hooks of a message on a chain;
- :mod:`.transport`: the :class:`Transport` protocol and the step that hands a message to it;
- :mod:`.handlers`, :mod:`.errors`: registered handlers and argument checks; the exceptions.
"""

from .bus import InMemoryCommBus
from .default import get_commbus, reset_commbus
from .errors import NoHandlerError, QueryAbortedError, TransportError
from .middleware import (
    AfterMiddleware,
    AnyMiddleware,
    BeforeMiddleware,
    HandlerHook,
    Middleware,
    MiddlewareContext,
    new_message_id,
)
from .protocol import CommBusProtocol
from .transport import Transport

__all__ = [
    "AfterMiddleware",
    "AnyMiddleware",
    "BeforeMiddleware",
    "CommBusProtocol",
    "HandlerHook",
    "InMemoryCommBus",
    "Middleware",
    "MiddlewareContext",
    "NoHandlerError",
    "QueryAbortedError",
    "Transport",
    "TransportError",
    "get_commbus",
    "new_message_id",
    "reset_commbus",
]
