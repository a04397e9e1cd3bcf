"""Built-in middleware, one per module."""

from .circuit_breaker import CircuitBreakerMiddleware, CircuitOpenError
from .dedupe import DedupeMiddleware

__all__ = ["CircuitBreakerMiddleware", "CircuitOpenError", "DedupeMiddleware"]
