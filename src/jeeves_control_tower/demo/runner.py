"""Running the demo: build the instrumented system, serve its endpoint, generate traffic.

:func:`run_demo` is the coroutine the CLI runs; :func:`run_demo_in_background` runs the
same thing on its own event loop in a daemon thread (the dashboard uses it when no endpoint
is configured, tests use it to get a live endpoint).

Each :class:`DemoSystem` has its own Prometheus registry, flow recorder and tracer
provider, so any number of demos can live in one process without sharing a series.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry

from ..ipc import CommBusCoordinator, InMemoryCommBus, RetryPolicy
from ..logging import NullLogger
from ..observability import FlowRecorder, ObservabilityServer, serve
from ..types import LoggerProtocol
from .broker import BrokerLink, connect_demo
from .otel import tracer_provider as otel_tracer_provider
from .services import Behaviour
from .wiring import DemoServices
from .workload import HealthFlapper, Workload

__all__ = ["DemoConfig", "DemoHandle", "DemoSystem", "run_demo", "run_demo_in_background"]


@dataclass(frozen=True)
class DemoConfig:
    """``rate``: operations started per second (each may fan out into several messages).
    ``flap_period``/``flap_down``: the billing service is unhealthy for ``flap_down``
    seconds in every ``flap_period``. ``seed`` makes a run reproducible."""

    rate: float = 20.0
    seed: int | None = None
    flap_period: float = 30.0
    flap_down: float = 6.0
    latency_scale: float = 1.0
    max_inflight: int = 500
    flow_capacity: int = 5000


class DemoSystem:
    """The bus, the coordinator, the services and the traffic, fully instrumented.

    Without ``tracer_provider``, the system builds its own from the ``OTEL_*`` environment
    (:mod:`.otel`); ``otlp_endpoint``, when given, is the full OTLP/HTTP traces URL
    (e.g. ``http://collector:4318/v1/traces``) and wins over the environment."""

    def __init__(
        self,
        config: DemoConfig | None = None,
        *,
        registry: CollectorRegistry | None = None,
        flow: FlowRecorder | None = None,
        tracer_provider: Any = None,
        otlp_endpoint: str | None = None,
        logger: LoggerProtocol | None = None,
    ) -> None:
        self.config = config or DemoConfig()
        self.registry = registry if registry is not None else CollectorRegistry()
        self.flow = (
            flow if flow is not None else FlowRecorder(self.config.flow_capacity, handler_runs=True)
        )
        self._own_provider = tracer_provider is None
        self.tracer_provider = tracer_provider or otel_tracer_provider(otlp_endpoint)
        logger = logger if logger is not None else NullLogger()
        telemetry: dict[str, Any] = {
            "tracer_provider": self.tracer_provider,
            "registry": self.registry,
            "flow": self.flow,
        }
        self.bus = InMemoryCommBus(query_timeout=2.0, logger=logger, **telemetry)
        self.coordinator = CommBusCoordinator(
            logger,
            self.bus,
            retry_policy=RetryPolicy(initial_delay=0.02, max_delay=0.25),
            max_queue=200,
            **telemetry,
        )
        rng = random.Random(self.config.seed)
        self.services = DemoServices(Behaviour(rng, self.config.latency_scale), self.coordinator)
        self.workload = Workload(
            self.services, rng, self.config.rate, max_inflight=self.config.max_inflight
        )
        self.flapper = HealthFlapper(
            self.services, "billing", self.config.flap_period, self.config.flap_down
        )
        #: The broker the bus is attached to (:mod:`.broker`); ``None``: in-process.
        self.link: BrokerLink | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Generate traffic until ``stop`` is set; returns once everything has wound down."""
        await asyncio.gather(self.workload.run(stop), self.flapper.run(stop))

    def close(self) -> None:
        """Detach the telemetry and flush spans (only a provider this system created)."""
        for handle in (self.coordinator.telemetry, self.bus.telemetry):
            if handle is not None:
                handle.close()
        if self._own_provider:
            self.tracer_provider.shutdown()


ReadyCallback = Callable[[ObservabilityServer, DemoSystem], None]


async def run_demo(
    config: DemoConfig | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    token: str | None = None,
    duration: float | None = None,
    stop: asyncio.Event | None = None,
    on_ready: ReadyCallback | None = None,
    otlp_endpoint: str | None = None,
    logger: LoggerProtocol | None = None,
    transport: str | None = None,
    prefix: str | None = None,
) -> DemoSystem:
    """Serve the endpoint and run the demo until ``stop`` is set or ``duration`` seconds
    have passed. ``on_ready(server, system)`` is called once the endpoint is listening
    (and, with ``transport``, once the bus is attached to that broker URL with ``prefix``:
    :func:`.broker.connect_demo`; a broker that cannot be reached raises
    :class:`~jeeves_control_tower.ipc.TransportError` before any traffic).
    Tracing as :class:`DemoSystem` sets it up (``otlp_endpoint``: the full traces URL)."""
    system = DemoSystem(config, otlp_endpoint=otlp_endpoint, logger=logger)
    stop = stop if stop is not None else asyncio.Event()
    timer = None
    server = serve(system.coordinator, host=host, port=port, token=token, logger=logger)
    try:
        if transport is not None:
            system.link = await connect_demo(
                system, transport, server=server, prefix=prefix, logger=logger
            )
        if duration is not None:
            timer = asyncio.get_running_loop().call_later(duration, stop.set)
        if on_ready is not None:
            on_ready(server, system)
        await system.run(stop)
    finally:
        if timer is not None:
            timer.cancel()
        try:
            if system.link is not None:
                await system.link.close()
        finally:
            server.close()
            system.close()
    return system


class DemoHandle:
    """A demo running in a background thread: ``url`` of its endpoint, ``stop()`` it."""

    def __init__(self) -> None:
        self.url = ""
        self.server: ObservabilityServer | None = None
        self.system: DemoSystem | None = None
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the traffic, close the endpoint and wait for the thread (idempotent)."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            # RuntimeError: the loop closed in between, so it has already stopped
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> DemoHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_demo_in_background(
    rate: float = 20.0,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    token: str | None = None,
    config: DemoConfig | None = None,
    startup_timeout: float = 15.0,
) -> DemoHandle:
    """Start the demo and its endpoint on a daemon thread; returns once it is listening.

    ``config`` wins over ``rate``. Raises what the demo raised if it failed to start."""
    handle = DemoHandle()
    config = config or DemoConfig(rate=rate)

    def ready(server: ObservabilityServer, system: DemoSystem) -> None:
        handle.server, handle.system, handle.url = server, system, server.url
        handle._ready.set()

    async def main() -> None:
        handle._loop = asyncio.get_running_loop()
        handle._stop = asyncio.Event()
        await run_demo(config, host=host, port=port, token=token, stop=handle._stop, on_ready=ready)

    def thread_main() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # reported to the starter, not lost in the thread
            handle.error = exc
        finally:
            handle._ready.set()

    handle._thread = threading.Thread(target=thread_main, name="jeeves-demo", daemon=True)
    handle._thread.start()
    if not handle._ready.wait(startup_timeout):
        handle.stop()
        raise TimeoutError(f"the demo did not start within {startup_timeout}s")
    if handle.error is not None:
        raise RuntimeError("the demo failed to start") from handle.error
    return handle
