"""The routes: what a message of each pattern and direction runs, compiled once.

A route takes a message to its step (:class:`~.chain.Step`: this process's handlers, or the
transport): through the middleware chain compiled for its pattern and direction
(:class:`~.chain.ChainRoute`), or, when no middleware applies, straight to the step (the
empty chain is no chain, and no context is made). The bus compiles its routes when the
middleware list or the transport changes (:func:`compile_routes`), never per message, and
calls them from ``publish``/``send``/``query`` and ``deliver_incoming``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ...types import LoggerProtocol
from .chain import ChainRoute, CompiledChain, Route
from .delivery import Delivery
from .eager import CoroutineType, Resume
from .middleware import PATTERNS
from .probed import ProbedDelivery
from .transport import ToTransport, Transport

__all__ = ["IncomingRoute", "Route", "Routes", "compile_routes", "run_incoming"]


class IncomingRoute:
    """The compiled route of a message a transport delivers, for one pattern: its chain
    (``chained``: ``route`` takes the wire headers and message id the message came with,
    for the middleware), or its step alone (which has no use for them)."""

    __slots__ = ("chained", "is_query", "route")

    def __init__(self, route: Callable[..., Any], chained: bool, pattern: str) -> None:
        self.route = route
        self.chained = chained
        self.is_query = pattern == "query"


@dataclass(frozen=True)
class Routes:
    """The compiled routes of a bus: its own messages' (direction "local", or "out" with a
    transport) and, by pattern, those a transport delivers (direction "in")."""

    publish: Route
    send: Route
    query: Route
    incoming: Mapping[str, IncomingRoute]


def compile_routes(
    chain: CompiledChain | None,
    transport: Transport | None,
    delivery: Delivery,
    logger: LoggerProtocol,
    probe: Any = None,
) -> Routes:
    """Compile the route of every pattern and direction from ``chain`` (``None``: no
    middleware) and ``transport`` (``None``: messages are delivered here). With a
    ``probe`` (a :class:`~jeeves_control_tower.ipc.telemetry.MessageProbe`), every route
    reports each message to it once: the empty chain of a message delivered here through
    :class:`~.probed.ProbedDelivery`, every other route through its :class:`ChainRoute`
    (an empty one where no middleware applies)."""
    direction = "local" if transport is None else "out"
    system = getattr(transport, "system", "jeeves.commbus")
    out = ToTransport(transport) if transport is not None else None
    probed = ProbedDelivery(delivery, probe, logger) if probe is not None else None
    empty = CompiledChain((), (), ()) if probe is not None else None
    own: dict[str, Route] = {}
    incoming: dict[str, IncomingRoute] = {}
    for pattern in PATTERNS:
        here = delivery.step(pattern)
        observed = delivery.observed_step(pattern)
        scoped = chain.scoped(pattern, direction) if chain is not None else None
        if scoped is None and probed is not None and out is None:
            own[pattern] = probed.step(pattern)
        else:
            scoped = scoped or empty
            if scoped is None:
                own[pattern] = here if out is None else out.step(pattern)
            else:
                step = observed if out is None else out.observed_step(pattern)
                route = ChainRoute(scoped, pattern, direction, system, step, logger, probe)
                own[pattern] = route.enter
        scoped = chain.scoped(pattern, "in") if chain is not None else None
        scoped = scoped or empty
        incoming[pattern] = (
            IncomingRoute(here, False, pattern)
            if scoped is None
            else IncomingRoute(
                ChainRoute(scoped, pattern, "in", system, observed, logger, probe).enter_incoming,
                True,
                pattern,
            )
        )
    return Routes(own["publish"], own["send"], own["query"], incoming)


async def run_incoming(
    incoming: IncomingRoute,
    message: Any,
    message_type: str,
    headers: dict[str, str] | None,
    message_id: str | None,
    timeout: float | None,
) -> tuple[str, Any]:
    """Run a message from a transport along ``route``: ``(outcome, result)``."""
    if incoming.chained:
        returned = incoming.route(message, message_type, timeout, headers, message_id)
    else:
        returned = incoming.route(message, message_type, timeout)
    if returned.__class__ is Resume or returned.__class__ is CoroutineType:
        returned = await returned
    # a query that returned is "ok" (failures raise); a publish or send returns its outcome
    return ("ok", returned) if incoming.is_query else (returned, None)
