"""What the transports hand to the bus's telemetry: headers, never trace contexts.

The transports do no propagation (that lives in :mod:`jeeves_control_tower.instrumentation.
propagation`): a message of the application carries its headers through the middleware
chain (``ctx.headers`` out, ``deliver_incoming(headers=...)`` in), where the telemetry
injects and extracts. The transports' own traffic bypasses the chain, so its headers are
handed to the bus's telemetry handle (``bus.telemetry``, see
:mod:`jeeves_control_tower.ipc.telemetry`): :func:`outgoing_headers` asks it to add the
current context, :func:`attach_trace` / :func:`detach_trace` to make an arriving one
current. With no telemetry on the bus, the headers go as they are and nothing is attached.

Messages read in one batch: :func:`begin_batch` hands their count and the transport's
``BrokerSettings`` to the telemetry (``bus.telemetry.receive_batch``, when there is one),
:func:`link_batch` passes each message's headers on while the batch is handled and
:func:`end_batch` closes it; the telemetry makes the span and its links.
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from typing import Any, cast

__all__ = [
    "attach_trace",
    "begin_batch",
    "detach_trace",
    "end_batch",
    "link_batch",
    "outgoing_headers",
]

#: The telemetry record of the batch being handled in this task (None: none).
_batch: ContextVar[Any] = ContextVar("jeeves_batch_receive", default=None)


def outgoing_headers(bus: Any, headers: dict[str, str] | None) -> dict[str, str] | None:
    """``headers`` of a transport's own message (possibly ``None``) as the bus's telemetry
    wants them sent (with the current trace context); ``None`` when there is nothing."""
    inject = getattr(bus.telemetry, "inject", None)
    if inject is not None:
        headers = inject(headers)
    return headers or None


def attach_trace(bus: Any, headers: dict[str, str] | None) -> tuple[Any, object] | None:
    """Hand the headers of a transport's own arriving message to the bus's telemetry to
    make their context current; the token for :func:`detach_trace` (``None``: nothing)."""
    if not headers:
        return None
    telemetry = bus.telemetry
    attach = getattr(telemetry, "attach", None)
    if attach is None:
        return None
    token = attach(headers)
    return None if token is None else (telemetry, token)


def detach_trace(token: tuple[Any, object] | None) -> None:
    if token is not None:
        telemetry, inner = token
        telemetry.detach(inner)


def begin_batch(bus: Any, settings: Any, count: int) -> object | None:
    """Tell the bus's telemetry that ``count`` messages were read at once from the
    destination ``settings`` names; the token for :func:`end_batch` (``None`` when there is
    nothing to record: one message, no telemetry, or not sampled)."""
    if count < 2:
        return None
    hook = getattr(getattr(bus, "telemetry", None), "receive_batch", None)
    record = hook(settings, count) if hook is not None else None
    return None if record is None else (record, _batch.set(record))


def link_batch(headers: dict[str, str] | None) -> None:
    """Pass one message's headers to the batch being handled in this task, if any."""
    if headers:
        record = _batch.get()
        if record is not None:
            record.link(headers)


def end_batch(token: object | None) -> None:
    if token is not None:
        record, reset = cast("tuple[Any, Token[Any]]", token)
        _batch.reset(reset)
        record.end()
