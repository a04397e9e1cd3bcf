"""Inter-process communication: the bus, the coordinator, middleware and message types.

This module is the front door and only re-exports; behind it, :mod:`.bus` (the bus, its
run path and middleware chain), :mod:`.middlewares` (the built-ins), :mod:`.dispatch` (the
coordinator and its dispatch engine), :mod:`.messages` (the message types) and
:mod:`.adapters` (broker transports).
"""

from .bus import (
    AfterMiddleware,
    BeforeMiddleware,
    CommBusProtocol,
    HandlerHook,
    InMemoryCommBus,
    Middleware,
    MiddlewareContext,
    NoHandlerError,
    QueryAbortedError,
    Transport,
    TransportError,
    get_commbus,
    reset_commbus,
)
from .dispatch import (
    CommBusCoordinator,
    CommBusCoordinatorProtocol,
    DispatchHandler,
    DispatchObserver,
    RemoteDispatcher,
    RetryPolicy,
    WholeDispatchObserver,
)
from .messages import (
    Command,
    DynamicEvent,
    DynamicQuery,
    Event,
    HandlerFunc,
    Message,
    Query,
    get_message_type,
)

__all__ = [
    "AfterMiddleware",
    "BeforeMiddleware",
    "CommBusCoordinator",
    "CommBusCoordinatorProtocol",
    "CommBusProtocol",
    "Command",
    "DispatchHandler",
    "DispatchObserver",
    "DynamicEvent",
    "DynamicQuery",
    "Event",
    "HandlerFunc",
    "HandlerHook",
    "InMemoryCommBus",
    "Message",
    "Middleware",
    "MiddlewareContext",
    "NoHandlerError",
    "Query",
    "QueryAbortedError",
    "RemoteDispatcher",
    "RetryPolicy",
    "Transport",
    "TransportError",
    "WholeDispatchObserver",
    "get_commbus",
    "get_message_type",
    "reset_commbus",
]
