"""The targets: the in-memory bus, or two buses with their own transport over Redis or NATS
(a producer side and a consumer side, as two processes would have them); broker clean-up."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from jeeves_control_tower.ipc import CommBusCoordinator, InMemoryCommBus
from jeeves_control_tower.ipc.adapters import BrokerTransport, RemoteServices
from jeeves_control_tower.ipc.middlewares.dedupe import DedupeMiddleware

from .measure import CountingLogger
from .messages import MESSAGES
from .settings import NATS_URL, QUERY_TIMEOUT, REDIS_URL, SERVICES
from .telemetry import Telemetry
from .workload import Load


@dataclass
class Setup:
    """One target, ready to load: where producers call, and how to take it down."""

    producer_bus: InMemoryCommBus
    producer_coordinator: CommBusCoordinator
    consumer_bus: InMemoryCommBus
    close: Callable[[], Awaitable[dict[str, Any]]]
    info: dict[str, Any]


def _coordinator(
    bus: InMemoryCommBus, logger: CountingLogger, tel: Telemetry
) -> CommBusCoordinator:
    return CommBusCoordinator(logger, bus, **tel.options())


def _bus(logger: CountingLogger, tel: Telemetry) -> InMemoryCommBus:
    return InMemoryCommBus(logger=logger, query_timeout=QUERY_TIMEOUT, **tel.options())


async def setup_inmemory(load: Load, logger: CountingLogger, tel: Telemetry) -> Setup:
    bus = _bus(logger, tel)
    coordinator = _coordinator(bus, logger, tel)
    load.register(bus, coordinator)

    async def close() -> dict[str, Any]:
        return {}

    return Setup(bus, coordinator, bus, close, {})


async def setup_broker(kind: str, load: Load, logger: CountingLogger, tel: Telemetry) -> Setup:
    transport_cls: type[BrokerTransport]
    if kind == "redis":
        from jeeves_control_tower.ipc.adapters.redis import RedisTransport

        transport_cls, url, prefix = RedisTransport, REDIS_URL, f"jtload:{uuid.uuid4().hex[:10]}:"
    else:
        from jeeves_control_tower.ipc.adapters.nats import NatsTransport

        transport_cls, url, prefix = NatsTransport, NATS_URL, f"jtload{uuid.uuid4().hex[:10]}"
    options = {
        "prefix": prefix,
        "registry": MESSAGES,
        "metrics_registry": tel.registry,
        "logger": logger,
    }
    connect: Any = transport_cls.connect
    consumer_bus, producer_bus = _bus(logger, tel), _bus(logger, tel)
    consumer_coordinator = _coordinator(consumer_bus, logger, tel)
    producer_coordinator = _coordinator(producer_bus, logger, tel)
    load.register(consumer_bus, consumer_coordinator)
    made: list[Any] = []
    try:
        consumer_tp = await connect(consumer_bus, url, **options)
        made.append(consumer_tp)
        producer_tp = await connect(producer_bus, url, **options)
        made.append(producer_tp)
        await consumer_tp.sync()
        consumer_rs = await RemoteServices(consumer_coordinator, consumer_tp, logger=logger).start()
        made.insert(0, consumer_rs)
        producer_rs = await RemoteServices(producer_coordinator, producer_tp, logger=logger).start()
        made.insert(0, producer_rs)
        await consumer_rs.announce()
        deadline = time.monotonic() + 10
        while not all(
            (s := producer_coordinator.get_service(name)) is not None and s.healthy
            for name, *_ in SERVICES
        ):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{kind}: the services were not discovered within 10 s")
            await asyncio.sleep(0.05)
    except BaseException:
        for thing in made:
            with contextlib.suppress(Exception):
                await thing.close()
        await cleanup(kind, url, prefix)
        raise
    info = {"prefix": prefix, "server_version": await server_version(kind, url)}

    async def close() -> dict[str, Any]:
        backlog = await broker_backlog(kind, url, prefix, consumer_tp)
        dedupe = [
            len(mw)
            for bus in (consumer_bus, producer_bus)
            for mw in bus.middlewares
            if isinstance(mw, DedupeMiddleware)
        ]
        for thing in made:
            await thing.close()
        left = await cleanup(kind, url, prefix)
        return {"backlog_at_end": backlog, "dedupe_entries": dedupe, "left_after_cleanup": left}

    return Setup(producer_bus, producer_coordinator, consumer_bus, close, info)


async def server_version(kind: str, url: str) -> str:
    with contextlib.suppress(Exception):
        if kind == "redis":
            import redis.asyncio as aioredis

            r = aioredis.from_url(url)
            try:
                return str((await r.info("server"))["redis_version"])
            finally:
                await r.aclose()
        import nats

        nc = await nats.connect(url)
        try:
            return str(nc.connected_server_version)
        finally:
            await nc.close()
    return "?"


async def broker_backlog(kind: str, url: str, prefix: str, transport: Any) -> dict[str, Any]:
    """Commands still stored on the broker after the drain (should be none)."""
    with contextlib.suppress(Exception):
        if kind == "redis":
            import redis.asyncio as aioredis

            r = aioredis.from_url(url)
            try:
                stream = transport.destination("send", "LoadCommand")
                pending = await r.xpending(stream, "handlers")
                return {"stream_length": await r.xlen(stream), "pending": pending["pending"]}
            finally:
                await r.aclose()
        import nats

        nc = await nats.connect(url)
        try:
            info = await nc.jetstream().stream_info(f"{prefix}_commands")
            return {"stream_messages": info.state.messages}
        finally:
            await nc.close()
    return {"unknown": True}


async def cleanup(kind: str, url: str, prefix: str) -> int:
    """Delete this run's broker state; returns what is left (0: all gone)."""
    if kind == "redis":
        import redis.asyncio as aioredis

        r = aioredis.from_url(url)
        try:
            keys = [k async for k in r.scan_iter(match=f"{prefix}*", count=1000)]
            if keys:
                await r.delete(*keys)
            return len([k async for k in r.scan_iter(match=f"{prefix}*", count=1000)])
        finally:
            await r.aclose()
    import nats
    from nats.js.errors import NotFoundError

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        left = 0
        for name in (f"{prefix}_commands", f"{prefix}_dead"):
            with contextlib.suppress(NotFoundError):
                await js.delete_stream(name)
            try:
                await js.stream_info(name)
                left += 1
            except NotFoundError:
                pass
        return left
    finally:
        await nc.close()
