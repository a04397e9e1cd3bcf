"""Whether this package's spans would come from OpenTelemetry's no-op tracer (no SDK), read
through public API only.

A tracer from the global provider (``tracer_provider=None``, or the API's
``ProxyTracerProvider`` passed in) hands out the no-op tracer's spans until an SDK provider
is set globally; ``set_tracer_provider`` can happen once per process, so once a real global
provider is seen it stays. While the global provider is still the API's placeholder,
:meth:`NoopWatch.is_noop` looks again at most once per :data:`.otel_metrics.RECHECK_SECONDS`
(as the OpenTelemetry metrics do), so a message in between costs one float comparison; an
injected provider is judged once. A provider set later is picked up within that interval.
"""

from __future__ import annotations

import math

from opentelemetry import trace
from opentelemetry.trace import NoOpTracerProvider, ProxyTracerProvider, TracerProvider

from .otel_metrics import RECHECK_SECONDS

__all__ = ["NoopWatch"]


class NoopWatch:
    """See the module docstring. ``now`` is a ``time.perf_counter()`` reading."""

    __slots__ = ("_global", "_noop_until")

    def __init__(self, tracer_provider: TracerProvider | None) -> None:
        self._global = tracer_provider is None or isinstance(tracer_provider, ProxyTracerProvider)
        self._noop_until = -math.inf
        if isinstance(tracer_provider, NoOpTracerProvider):
            self._noop_until = math.inf

    @property
    def settled(self) -> bool:
        """True once the spans are known to come from a real SDK for good (an injected SDK
        provider, or a real global one seen): :meth:`is_noop` is ``False`` from then on."""
        # Once the global provider is judged (or for an injected one) only a no-op provider
        # is noop for good (``inf``); a past ``_noop_until`` is never looked at again.
        return not self._global and self._noop_until != math.inf

    def is_noop(self, now: float) -> bool:
        if now < self._noop_until:
            return True
        if not self._global:
            return False
        provider = trace.get_tracer_provider()
        if isinstance(provider, ProxyTracerProvider):
            self._noop_until = now + RECHECK_SECONDS
            return True
        self._global = False  # a global provider is set for good: judge it once
        if isinstance(provider, NoOpTracerProvider):
            self._noop_until = math.inf
            return True
        return False
