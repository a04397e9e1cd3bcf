"""A separate OS process for the multi-process tests: ``python -m tests.ipc.adapters.mp_worker``.

Arguments: ``ROLES TRANSPORT URL PREFIX [options as JSON]``. The worker connects a bus to
the broker, prints ``{"ready": pid}`` once its registrations are in effect, reports what
it handles as one JSON object per line on stdout, and shuts down cleanly when its stdin
closes (or is killed by the test). ``ROLES`` is one role or several, comma-separated
(``subscriber,consumer,responder``). With ``JT_WORKER_LOG=1`` in its environment the
worker's transport logs to stderr (pytest shows it when a test fails). Roles:

- ``subscriber``: ``{"event": n}`` for each ``Happened``.
- ``consumer``: ``{"handled": n}`` for each ``DoWork``; option ``hang_on`` makes it print
  ``{"started": n}`` and hang on that command (to be killed mid-command), ``sleep`` slows
  each command down.
- ``responder``: answers ``Ask`` with ``n * 2`` inside an instrumented bus and prints the
  spans it recorded (``{"spans": [...]}``) after each query; option ``dispatch`` makes it
  compute the answer through an instrumented coordinator's dispatch, ``sampler`` =
  ``"parent_off"`` samples with ``ParentBased(ALWAYS_OFF)`` (default: ``ParentBased(ALWAYS_ON)``).
- ``slow_service``: serves the dispatch service ``slow`` (``max_concurrent=1``) through
  ``RemoteServices``, printing ``{"serving": tag}`` (the envelope's ``metadata["tag"]``)
  as each dispatch starts and taking ``sleep`` seconds (0.3) over it.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import os
import sys
import time
from typing import Any

from opentelemetry import trace

from jeeves_control_tower.ipc import CommBusCoordinator, InMemoryCommBus
from jeeves_control_tower.logging import NullLogger
from jeeves_control_tower.observability import trace_carrier
from jeeves_control_tower.testing.messages import REGISTRY, Ask, DoWork
from jeeves_control_tower.types import DispatchTarget, Envelope, RequestContext, ServiceDescriptor


class _StderrLogger:
    """Logs to stderr (``JT_WORKER_LOG=1``: to see why a worker misbehaved)."""

    def _log(self, level: str, message: str, fields: dict[str, Any]) -> None:
        sys.stderr.write(f"{time.time():.3f} worker {os.getpid()} {level} {message} {fields}\n")

    def debug(self, message: str, /, **fields: Any) -> None:
        self._log("debug", message, fields)

    def info(self, message: str, /, **fields: Any) -> None:
        self._log("info", message, fields)

    def warning(self, message: str, /, **fields: Any) -> None:
        self._log("warning", message, fields)

    def error(self, message: str, /, **fields: Any) -> None:
        self._log("error", message, fields)

    def bind(self, **fields: Any) -> _StderrLogger:
        return self


def emit(**fields: Any) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


async def connect(
    kind: str, bus: InMemoryCommBus, url: str, prefix: str, opts: dict[str, Any]
) -> Any:
    common: dict[str, Any] = {"prefix": prefix, "registry": REGISTRY, "metrics": False}
    common["logger"] = _StderrLogger() if os.environ.get("JT_WORKER_LOG") else NullLogger()
    if kind == "redis":
        from jeeves_control_tower.ipc.adapters.redis import RedisTransport

        return await RedisTransport.connect(
            bus, url, min_idle=opts.get("redelivery", 30.0), **common
        )
    if kind == "rabbitmq":
        from jeeves_control_tower.ipc.adapters.rabbitmq import RabbitMQTransport

        return await RabbitMQTransport.connect(bus, url, **common)
    from jeeves_control_tower.ipc.adapters.nats import NatsTransport

    return await NatsTransport.connect(bus, url, ack_wait=opts.get("redelivery", 30.0), **common)


async def main(roles: set[str], kind: str, url: str, prefix: str, opts: dict[str, Any]) -> None:
    exporter: Any = None
    coordinator: CommBusCoordinator | None = None
    dispatching: asyncio.Task[None] | None = None
    if "responder" in roles:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased
        from prometheus_client import CollectorRegistry

        exporter = InMemorySpanExporter()
        parent_off = opts.get("sampler") == "parent_off"
        provider = TracerProvider(sampler=ParentBased(ALWAYS_OFF if parent_off else ALWAYS_ON))
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        bus = InMemoryCommBus(tracer_provider=provider, registry=CollectorRegistry(), flow=False)
    else:
        bus = InMemoryCommBus(instrument=False)

    if "subscriber" in roles:
        bus.subscribe("Happened", lambda e: emit(event=e.n))
    if "consumer" in roles:

        async def handle(cmd: DoWork) -> None:
            if cmd.n == opts.get("hang_on"):
                emit(started=cmd.n)
                await asyncio.sleep(3600)
            if opts.get("sleep"):
                await asyncio.sleep(opts["sleep"])
            emit(handled=cmd.n)

        bus.register_handler("DoWork", handle)
    if "responder" in roles:
        if opts.get("dispatch"):
            coordinator = CommBusCoordinator(NullLogger(), bus)

            async def double(e: Envelope) -> Envelope:
                e.outputs["n"] = e.metadata["n"] * 2
                return e

            coordinator.register_service(ServiceDescriptor(name="svc", service_type="worker"))
            coordinator.register_handler("svc", double)

        # The dispatches run in a task of their own, started with no trace context (like a
        # work queue): the caller's context reaches them only through the envelope.
        queue: asyncio.Queue[tuple[Envelope, asyncio.Future[int]]] = asyncio.Queue()

        async def dispatcher() -> None:
            assert coordinator is not None
            while True:
                envelope, answered = await queue.get()
                done = await coordinator.dispatch(
                    DispatchTarget(service_name="svc", method="run"), envelope
                )
                answered.set_result(int(done.outputs["n"]))

        if coordinator is not None:
            dispatching = asyncio.create_task(dispatcher(), context=contextvars.Context())

        async def answer(q: Ask) -> int:
            asyncio.get_running_loop().call_later(0.05, report_spans)
            if coordinator is None:
                return q.n * 2
            caller = trace.get_current_span().get_span_context()
            request = RequestContext(
                request_id=f"q{q.n}",
                capability="run",
                trace_id=f"{caller.trace_id:032x}",
                span_id=f"{caller.span_id:016x}",
                trace_carrier=trace_carrier(),
            )
            answered: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            await queue.put((Envelope(request_context=request, metadata={"n": q.n}), answered))
            return await answered

        def report_spans() -> None:
            spans = exporter.get_finished_spans()
            emit(spans=[_span(s) for s in spans])

        bus.register_handler("Ask", answer)

    slow: CommBusCoordinator | None = None
    if "slow_service" in roles:
        slow = CommBusCoordinator(NullLogger(), bus, instrument=False)

        async def serve(e: Envelope) -> Envelope:
            emit(serving=e.metadata["tag"])
            await asyncio.sleep(opts.get("sleep", 0.3))
            return e

        slow.register_service(ServiceDescriptor("slow", "worker", max_concurrent=1))
        slow.register_handler("slow", serve)

    transport = await connect(kind, bus, url, prefix, opts)
    services = None
    if slow is not None:
        from jeeves_control_tower.ipc.adapters.services import RemoteServices

        services = await RemoteServices(slow, transport, interval=0.2).start()
    await transport.sync()
    emit(ready=os.getpid())
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # until the test closes our stdin
    if services is not None:
        await services.close()
    await transport.close()
    if dispatching is not None:
        dispatching.cancel()


def _span(span: Any) -> dict[str, Any]:
    ctx = span.get_span_context()
    return {
        "name": span.name,
        "trace_id": f"{ctx.trace_id:032x}",
        "span_id": f"{ctx.span_id:016x}",
        "parent": f"{span.parent.span_id:016x}" if span.parent is not None else None,
        "kind": span.kind.name,
        "trace_state": ctx.trace_state.to_header(),
        "attributes": dict(span.attributes or {}),
    }


if __name__ == "__main__":
    _, roles, kind, url, prefix, *rest = sys.argv
    options = json.loads(rest[0]) if rest else {}
    asyncio.run(main(set(roles.split(",")), kind, url, prefix, options))
