"""Inter-process communication: the bus, the coordinator, middleware and message types.

This module only re-exports; each piece lives in its own module.
"""

from .commbus import (
    CommBusProtocol,
    InMemoryCommBus,
    NoHandlerError,
    QueryAbortedError,
    Transport,
    TransportError,
    get_commbus,
    reset_commbus,
)
from .coordinator import (
    CommBusCoordinator,
    CommBusCoordinatorProtocol,
    DispatchHandler,
    DispatchObserver,
    RemoteDispatcher,
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
from .middleware import (
    AfterMiddleware,
    BeforeMiddleware,
    HandlerHook,
    Middleware,
    MiddlewareContext,
)
from .retry import RetryPolicy

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
    "get_commbus",
    "get_message_type",
    "reset_commbus",
]
