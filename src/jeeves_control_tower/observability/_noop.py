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
import time
from collections.abc import Callable

from opentelemetry import trace
from opentelemetry.trace import NoOpTracerProvider, ProxyTracerProvider, TracerProvider

from .otel_metrics import RECHECK_SECONDS

__all__ = ["LocalGate", "NoopWatch"]


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


class LocalGate:
    """Whether a tracing middleware applies to messages produced and handled here
    (direction ``local``), for its ``applies_to``.

    With no ``refresh`` (the bus's ``refresh_routes``), or while ``watched()`` is false (the
    probe that calls :meth:`look` is not the bus's any more), always. Otherwise not while
    the tracer is a no-op: such a message would get no span and no context switch from the
    middleware, so it takes the bus's direct path instead of a chain whose one hook only
    steps aside. Messages crossing a transport always apply (their context still goes on
    and comes off the wire). :meth:`look`, called by the bus's message probe once the time
    it returned has come, calls ``refresh`` when an SDK provider has appeared since, so
    local messages are traced again from the next one (within about
    :data:`.otel_metrics.RECHECK_SECONDS` of the provider being set, as with the
    middleware's own check; the probe calls it at the end of a message, so on a bus idle
    since the provider was set, the message that finds it is the last one untraced).
    Event-loop thread.
    """

    __slots__ = ("_clock", "_noop", "_refresh", "_shut", "_watched")

    def __init__(
        self,
        noop: NoopWatch,
        refresh: Callable[[], None] | None,
        clock: Callable[[], float] = time.perf_counter,
        watched: Callable[[], bool] | None = None,
    ) -> None:
        self._noop = noop
        self._refresh = refresh
        self._watched = watched
        self._clock = clock
        self._shut = False

    def applies(self, direction: str) -> bool:
        if direction != "local" or self._refresh is None:
            return True
        if self._watched is not None and not self._watched():
            self._shut = False  # nobody would reopen it: the middleware checks for itself
            return True
        self._shut = self._noop.is_noop(self._clock())
        return not self._shut

    def look(self, now: float) -> float:
        """Open the gate if it is shut and the tracer is no longer a no-op; when to look
        next (``inf``: never, without ``refresh``). ``now``: ``time.perf_counter()``."""
        if self._refresh is None:
            return math.inf
        if self._shut and not self._noop.is_noop(now):
            self._shut = False
            self._refresh()
        return now + RECHECK_SECONDS
