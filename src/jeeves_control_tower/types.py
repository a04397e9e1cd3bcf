"""Shared value types: services, dispatch targets, request envelopes, the logger protocol.

Everything here is plain data with validation at construction time; nothing in this module
does I/O or imports an optional dependency.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "DispatchTarget",
    "Envelope",
    "LoggerProtocol",
    "RequestContext",
    "SchedulingPriority",
    "ServiceDescriptor",
]

#: Upper bound on the number of entries in :attr:`RequestContext.tags`.
MAX_TAGS = 64
#: Upper bound on the length of one tag key or value.
MAX_TAG_LENGTH = 256
#: Upper bound on the entries of :attr:`RequestContext.trace_carrier`.
MAX_CARRIER_ENTRIES = 8
#: Upper bound on one carrier value (W3C: tracestate and baggage stay within 8192).
MAX_CARRIER_LENGTH = 8192


@runtime_checkable
class LoggerProtocol(Protocol):
    """A structlog-style logger: a message plus keyword fields, and ``bind``.

    Implementations must not raise on arbitrary keyword fields. A stdlib
    :class:`logging.Logger` does not satisfy this protocol by itself (it rejects unknown
    keywords); every entry point of this package wraps one with
    :func:`jeeves_control_tower.logging.ensure_logger`, so passing it is still fine.
    """

    def debug(self, message: str, /, **fields: Any) -> Any: ...

    def info(self, message: str, /, **fields: Any) -> Any: ...

    def warning(self, message: str, /, **fields: Any) -> Any: ...

    def error(self, message: str, /, **fields: Any) -> Any: ...

    def bind(self, **fields: Any) -> Any: ...


class SchedulingPriority(StrEnum):
    """Dispatch priority. When a service is full, waiting dispatches are admitted in this
    order (REALTIME first), first-in first-out within one priority."""

    REALTIME = "realtime"
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"
    IDLE = "idle"

    @property
    def rank(self) -> int:
        """0 for REALTIME up to 4 for IDLE; lower is admitted first."""
        return _PRIORITY_RANK[self]


_PRIORITY_RANK = {p: i for i, p in enumerate(SchedulingPriority)}


def _require_name(value: object, what: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")


@dataclass
class ServiceDescriptor:
    """A service known to the coordinator.

    ``current_load`` is maintained by the coordinator: the number of dispatch attempts
    running in the service right now. ``max_concurrent`` is enforced: further dispatches
    wait for a slot in priority order. Both may be read at any time; only the coordinator
    should write ``current_load``.
    """

    name: str
    service_type: str
    version: str = "1.0.0"
    capabilities: list[str] = field(default_factory=list)
    max_concurrent: int = 10
    current_load: int = 0
    healthy: bool = True
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _require_name(self.name, "ServiceDescriptor.name")
        _require_name(self.service_type, "ServiceDescriptor.service_type")
        if (
            not isinstance(self.max_concurrent, int)
            or isinstance(self.max_concurrent, bool)
            or self.max_concurrent < 1
        ):
            raise ValueError(
                f"ServiceDescriptor.max_concurrent must be an int >= 1, got {self.max_concurrent!r}"
            )
        if not isinstance(self.capabilities, list) or not all(
            isinstance(c, str) for c in self.capabilities
        ):
            raise ValueError("ServiceDescriptor.capabilities must be a list of strings")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe snapshot (``metadata`` is copied shallowly)."""
        return {
            "name": self.name,
            "service_type": self.service_type,
            "version": self.version,
            "capabilities": list(self.capabilities),
            "max_concurrent": self.max_concurrent,
            "current_load": self.current_load,
            "healthy": self.healthy,
            "metadata": dict(self.metadata),
        }


@dataclass
class DispatchTarget:
    """Where and how to dispatch one request.

    ``timeout_seconds`` is the deadline for the whole dispatch (waiting for a slot, every
    attempt and every backoff); any positive int or float. ``max_retries`` is how many
    times a failing handler is retried. ``retry_count`` is kept for compatibility with the
    reference API: the coordinator never mutates the caller's target and records the
    attempts on the envelope instead.
    """

    service_name: str
    method: str
    priority: SchedulingPriority = SchedulingPriority.NORMAL
    timeout_seconds: float = 300
    retry_count: int = 0
    max_retries: int = 3

    def __post_init__(self) -> None:
        _require_name(self.service_name, "DispatchTarget.service_name")
        _require_name(self.method, "DispatchTarget.method")
        if not isinstance(self.priority, SchedulingPriority):
            try:
                self.priority = SchedulingPriority(self.priority)
            except ValueError:
                raise ValueError(
                    f"DispatchTarget.priority must be a SchedulingPriority, got {self.priority!r}"
                ) from None
        t = self.timeout_seconds
        if not isinstance(t, (int, float)) or isinstance(t, bool) or not math.isfinite(t) or t <= 0:
            raise ValueError(f"DispatchTarget.timeout_seconds must be a positive number, got {t!r}")
        for name in ("retry_count", "max_retries"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"DispatchTarget.{name} must be an int >= 0, got {v!r}")


@dataclass(frozen=True)
class RequestContext:
    """Immutable identity of one request, carried by its :class:`Envelope`.

    ``trace_id`` / ``span_id`` (hex) identify a caller's span but carry no sampling
    decision: telemetry links to them and never continues them as a parent.
    ``trace_carrier`` is the caller's W3C trace context as propagator headers
    (``traceparent``, ``tracestate``, ``baggage``; at most :data:`MAX_CARRIER_ENTRIES`
    entries of at most :data:`MAX_CARRIER_LENGTH` characters): a dispatch continues it,
    sampling decision and tracestate included (``{}``: none).
    """

    request_id: str
    capability: str
    session_id: str | None = None
    user_id: str | None = None
    trace_id: str | None = None
    span_id: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    trace_carrier: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _require_name(self.request_id, "RequestContext.request_id")
        _require_name(self.capability, "RequestContext.capability")
        for name in ("session_id", "user_id", "trace_id", "span_id"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, str):
                raise ValueError(f"RequestContext.{name} must be a string or None, got {v!r}")
        if not isinstance(self.tags, dict):
            raise ValueError(f"RequestContext.tags must be a dict, got {type(self.tags).__name__}")
        if len(self.tags) > MAX_TAGS:
            raise ValueError(
                f"RequestContext.tags holds {len(self.tags)} entries; at most {MAX_TAGS}"
            )
        for k, v in self.tags.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise ValueError("RequestContext.tags keys and values must be strings")
            if not k or len(k) > MAX_TAG_LENGTH or len(v) > MAX_TAG_LENGTH:
                raise ValueError(
                    f"RequestContext.tags: key {k[:40]!r} must be 1..{MAX_TAG_LENGTH} characters"
                    f" and its value at most {MAX_TAG_LENGTH}"
                )
        carrier = self.trace_carrier
        if not isinstance(carrier, dict) or len(carrier) > MAX_CARRIER_ENTRIES:
            raise ValueError(
                f"RequestContext.trace_carrier must be a dict of at most {MAX_CARRIER_ENTRIES}"
                " entries"
            )
        for k, v in carrier.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise ValueError("RequestContext.trace_carrier keys and values must be strings")
            if not k or len(k) > MAX_TAG_LENGTH or len(v) > MAX_CARRIER_LENGTH:
                raise ValueError(
                    f"RequestContext.trace_carrier: key {k[:40]!r} must be 1..{MAX_TAG_LENGTH}"
                    f" characters and its value at most {MAX_CARRIER_LENGTH}"
                )
        # Freeze private copies so later mutation of the caller's dicts cannot leak in.
        object.__setattr__(self, "tags", dict(self.tags))
        object.__setattr__(self, "trace_carrier", dict(carrier))

    def to_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "capability": self.capability,
            "session_id": self.session_id,
            "user_id": self.user_id,
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "tags": dict(self.tags),
            "trace_carrier": dict(self.trace_carrier),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RequestContext:
        if not isinstance(data, dict):
            raise ValueError("RequestContext.from_dict expects a dict")
        return cls(
            request_id=data.get("request_id"),  # type: ignore[arg-type]
            capability=data.get("capability"),  # type: ignore[arg-type]
            session_id=data.get("session_id"),
            user_id=data.get("user_id"),
            trace_id=data.get("trace_id"),
            span_id=data.get("span_id"),
            tags=dict(data.get("tags") or {}),
            trace_carrier=data.get("trace_carrier") or {},  # checked (and copied) on init
        )


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _dt_to_str(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _dt_from_str(value: object, what: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"Envelope.{what} must be an ISO-8601 string or None")
    return datetime.fromisoformat(value)


@dataclass
class Envelope:
    """A request travelling through dispatch.

    ``request_id``, ``session_id`` and ``user_id`` mirror the :class:`RequestContext`; left
    empty they are filled from it, and a value that contradicts it is a ``ValueError``.
    ``metadata``, ``outputs``, ``errors`` and ``processing_history`` must hold JSON-safe
    values for :meth:`to_dict` / :meth:`from_dict` to round-trip; the coordinator appends
    one entry to ``processing_history`` per dispatch attempt.
    """

    request_context: RequestContext
    envelope_id: str = ""
    request_id: str = ""
    session_id: str | None = None
    user_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)
    processing_history: list[dict[str, Any]] = field(default_factory=list)
    terminated: bool = False
    termination_reason: str | None = None
    created_at: datetime = field(default_factory=_utcnow)
    completed_at: datetime | None = None

    def __post_init__(self) -> None:
        ctx = self.request_context
        if not isinstance(ctx, RequestContext):
            raise ValueError(
                f"Envelope.request_context must be a RequestContext, got {type(ctx).__name__}"
            )
        if not self.envelope_id:
            self.envelope_id = uuid.uuid4().hex
        elif not isinstance(self.envelope_id, str):
            raise ValueError("Envelope.envelope_id must be a string")
        for name in ("request_id", "session_id", "user_id"):
            mine = getattr(self, name)
            theirs = getattr(ctx, name)
            if not mine:
                setattr(self, name, theirs if name != "request_id" else ctx.request_id)
            elif theirs is not None and mine != theirs:
                raise ValueError(
                    f"Envelope.{name}={mine!r} contradicts request_context.{name}={theirs!r}"
                )

    def terminate(self, reason: str) -> None:
        """Mark the envelope terminated with ``reason`` and stamp ``completed_at``."""
        self.terminated = True
        self.termination_reason = reason
        self.completed_at = _utcnow()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict; ``Envelope.from_dict(e.to_dict()) == e``."""
        return {
            "envelope_id": self.envelope_id,
            "request_context": self.request_context.to_dict(),
            "request_id": self.request_id,
            "session_id": self.session_id,
            "user_id": self.user_id,
            "metadata": self.metadata,
            "outputs": self.outputs,
            "errors": self.errors,
            "processing_history": self.processing_history,
            "terminated": self.terminated,
            "termination_reason": self.termination_reason,
            "created_at": _dt_to_str(self.created_at),
            "completed_at": _dt_to_str(self.completed_at),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Envelope:
        """Rebuild an envelope from :meth:`to_dict` output; bad shapes raise ``ValueError``."""
        if not isinstance(data, dict):
            raise ValueError("Envelope.from_dict expects a dict")
        created = _dt_from_str(data.get("created_at"), "created_at")
        for name, kind in (
            ("metadata", dict),
            ("outputs", dict),
            ("errors", list),
            ("processing_history", list),
        ):
            if name in data and not isinstance(data[name], kind):
                raise ValueError(f"Envelope.{name} must be a {kind.__name__}")
        return cls(
            request_context=RequestContext.from_dict(data.get("request_context")),  # type: ignore[arg-type]
            envelope_id=data.get("envelope_id") or "",
            request_id=data.get("request_id") or "",
            session_id=data.get("session_id"),
            user_id=data.get("user_id"),
            metadata=dict(data.get("metadata") or {}),
            outputs=dict(data.get("outputs") or {}),
            errors=list(data.get("errors") or []),
            processing_history=list(data.get("processing_history") or []),
            terminated=bool(data.get("terminated", False)),
            termination_reason=data.get("termination_reason"),
            created_at=created if created is not None else _utcnow(),
            completed_at=_dt_from_str(data.get("completed_at"), "completed_at"),
        )
