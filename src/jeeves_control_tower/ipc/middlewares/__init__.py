"""Built-in middleware, one per module."""

from .circuit_breaker import CircuitBreakerMiddleware, CircuitOpenError

__all__ = ["CircuitBreakerMiddleware", "CircuitOpenError"]
