"""OtelMetrics: the messaging semantic-conventions metrics, through an OpenTelemetry
``MeterProvider`` (the global one or an injected one), next to the Prometheus families.

Instruments (names from ``opentelemetry.semconv``; see docs/observability.md):

- ``messaging.client.sent.messages`` (counter) and ``messaging.client.operation.duration``
  (histogram, s): one per message produced here (``publish`` / ``send`` / ``query``, and
  ``dispatch`` for the coordinator), operation type ``send``.
- ``messaging.client.consumed.messages`` (counter) and ``messaging.process.duration``
  (histogram, s): one per message delivered to at least one local handler (in process, or
  from a broker), operation name and type ``process``.

Attributes: ``messaging.system``, ``messaging.operation.name``,
``messaging.operation.type``, ``messaging.destination.name`` (the message type, or the
service of a dispatch: the values the Prometheus label limiter admitted, so cardinality is
bounded the same way) and, when the operation did not end ``ok``, ``error.type``.

Cost: with no recording provider (the API's no-op provider, or the global placeholder the
API hands out before any provider is set), nothing is recorded and the caller's check is
two attribute reads and a float comparison against the message's own start time: while the
global placeholder is in place, the global provider is looked up again at most once per
:data:`RECHECK_SECONDS` (``set_meter_provider`` can happen once per process, so once a
real one is seen it stays). When live, the attribute
set of each ``(system, operation, destination, error type)`` is built once and cached
(bounded). Callers wrap the recording in their error guard: this module may raise.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from opentelemetry import metrics
from opentelemetry.metrics import Counter, Histogram, MeterProvider, NoOpMeterProvider
from opentelemetry.semconv._incubating.metrics.messaging_metrics import (
    MESSAGING_CLIENT_CONSUMED_MESSAGES,
    MESSAGING_CLIENT_OPERATION_DURATION,
    MESSAGING_CLIENT_SENT_MESSAGES,
    MESSAGING_PROCESS_DURATION,
)

from .. import __version__
from .semconv import (
    ERROR_TYPE,
    MESSAGING_DESTINATION_NAME,
    MESSAGING_OPERATION_NAME,
    MESSAGING_OPERATION_TYPE,
    MESSAGING_SYSTEM,
    OP_PROCESS,
    OP_SEND,
    SCHEMA_URL,
    error_type,
)

__all__ = [
    "DURATION_BUCKETS",
    "INSTRUMENT_NAMES",
    "RECHECK_SECONDS",
    "OtelMetrics",
    "is_recording_provider",
    "outcome_error",
]

#: The bucket boundaries the messaging conventions advise for their duration histograms
#: (seconds), handed to the SDK as ``explicit_bucket_boundaries_advisory``.
DURATION_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip
#: While the global provider is the API's placeholder, the seconds between two looks at it.
RECHECK_SECONDS = 1.0
INSTRUMENT_NAMES = (
    MESSAGING_CLIENT_SENT_MESSAGES,
    MESSAGING_CLIENT_CONSUMED_MESSAGES,
    MESSAGING_CLIENT_OPERATION_DURATION,
    MESSAGING_PROCESS_DURATION,
)
_CACHE_LIMIT = 4096
_PROCESS = "process"


def is_recording_provider(provider: MeterProvider) -> bool:
    """False for the API's own providers (``NoOpMeterProvider`` and the global placeholder
    ``get_meter_provider()`` returns before one is set, both defined in the
    ``opentelemetry.metrics`` package); True for any other (an SDK's)."""
    if isinstance(provider, NoOpMeterProvider):
        return False
    return not type(provider).__module__.startswith("opentelemetry.metrics")


class OtelMetrics:
    """The four messaging instruments of one meter provider (``None``: the global one,
    looked up lazily). Before recording, the caller checks :attr:`live`, and when it is
    false, ``now >= next_look and look(now)`` (``now``: a ``time.perf_counter()`` reading).
    Thread-safe enough: racing caches at worst build an attribute set twice."""

    def __init__(self, meter_provider: MeterProvider | None = None) -> None:
        self._provider = meter_provider
        self.live = False
        self.next_look = float("-inf")
        self._attrs: dict[tuple[str, str, str, str | None], dict[str, str]] = {}
        self._sent: Counter
        self._consumed: Counter
        self._operation: Histogram
        self._process: Histogram
        # No look here: the first message looks, under its caller's error guard, so a
        # provider that raises can never break building a bus.

    @classmethod
    def create(cls, meter_provider: MeterProvider | None) -> OtelMetrics | None:
        """``None`` when an injected provider can never record (the no-op one)."""
        if meter_provider is not None and not is_recording_provider(meter_provider):
            return None
        return cls(meter_provider)

    def look(self, now: float) -> bool:
        """Whether recording is on; when it is off, looks for a recording global provider
        and, finding none, sets :attr:`next_look` to ``now`` + :data:`RECHECK_SECONDS`."""
        if self.live:
            return True
        self.next_look = now + RECHECK_SECONDS
        provider = self._provider
        if provider is None:
            provider = metrics.get_meter_provider()
            if not is_recording_provider(provider):
                return False
        meter = provider.get_meter("jeeves_control_tower", __version__, schema_url=SCHEMA_URL)
        self._sent = meter.create_counter(
            MESSAGING_CLIENT_SENT_MESSAGES,
            unit="{message}",
            description="Number of messages producer attempted to send to the broker.",
        )
        self._consumed = meter.create_counter(
            MESSAGING_CLIENT_CONSUMED_MESSAGES,
            unit="{message}",
            description="Number of messages that were delivered to the application.",
        )
        self._operation = meter.create_histogram(
            MESSAGING_CLIENT_OPERATION_DURATION,
            unit="s",
            description="Duration of messaging operation initiated by a producer or consumer"
            " client.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self._process = meter.create_histogram(
            MESSAGING_PROCESS_DURATION,
            unit="s",
            description="Duration of processing operation.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.live = True
        return True

    def look_now(self) -> bool:
        """:meth:`look`, when :attr:`next_look` has passed (for callers with no clock
        reading at hand)."""
        now = time.perf_counter()
        return now >= self.next_look and self.look(now)

    def _attributes(
        self, system: str, operation: str, destination: str, error: str | None
    ) -> dict[str, str]:
        key = (system, operation, destination, error)
        attrs = self._attrs.get(key)
        if attrs is None:
            attrs = {
                MESSAGING_SYSTEM: system,
                MESSAGING_OPERATION_NAME: operation,
                MESSAGING_OPERATION_TYPE: OP_PROCESS if operation == _PROCESS else OP_SEND,
                MESSAGING_DESTINATION_NAME: destination,
            }
            if error is not None:
                attrs[ERROR_TYPE] = error
            if len(self._attrs) < _CACHE_LIMIT:
                self._attrs[key] = attrs
        return attrs

    def sent(
        self, system: str, operation: str, destination: str, error: str | None, seconds: float
    ) -> None:
        """One message produced (``operation``: publish, send, query, dispatch)."""
        attrs = self._attributes(system, operation, destination, error)
        self._sent.add(1, attrs)
        self._operation.record(seconds, attrs)

    def consumed(self, system: str, destination: str, error: str | None, seconds: float) -> None:
        """One message delivered to the local handlers, which took ``seconds``."""
        attrs = self._attributes(system, _PROCESS, destination, error)
        self._consumed.add(1, attrs)
        self._process.record(seconds, attrs)


def outcome_error(
    outcome: str, error: BaseException | None, limit: Callable[[str], str]
) -> str | None:
    """``error.type`` of an operation: none when ``ok``; for ``error`` with an exception,
    its short name (:func:`.semconv.error_type`) through the label limiter ``limit``; the
    outcome itself otherwise (``timeout``, ``no_handler``, ``aborted``, ``cancelled``...)."""
    if outcome == "ok":
        return None
    if outcome == "error" and error is not None:
        return limit(error_type(error))
    return outcome
