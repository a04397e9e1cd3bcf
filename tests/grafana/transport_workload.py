"""A second deployment for the Prometheus tests: two instrumented buses talking over Redis.

The demo runs on the in-memory bus, so it exposes no ``commbus_wire_*`` series. This
workload does: a producer and a consumer bus (one "process": one metrics registry) joined by
:class:`RedisTransport`, publishing, sending and querying five times a second, plus one
undecodable frame a second (``commbus_wire_rejected_total{reason="malformed"}``), every
other one written to the command stream so that it is dead-lettered
(``commbus_dead_letters_total``, ``commbus_dead_letter_messages``). Its
``/metrics`` is served by prometheus_client on a free port.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server

from jeeves_control_tower.ipc import InMemoryCommBus
from jeeves_control_tower.ipc.adapters.redis import RedisTransport
from jeeves_control_tower.logging import NullLogger
from jeeves_control_tower.testing.messages import REGISTRY, Ask, DoWork, Happened

#: Message types this workload sends (none of them is a demo message type).
MESSAGE_TYPES = {"Happened", "DoWork", "Ask"}


async def _traffic(
    url: str, prefix: str, metrics: CollectorRegistry, stop: asyncio.Event, ready: threading.Event
) -> None:
    import redis.asyncio as aioredis

    producer = InMemoryCommBus(query_timeout=5.0, registry=metrics)
    consumer = InMemoryCommBus(query_timeout=5.0, registry=metrics)
    consumer.subscribe("Happened", lambda e: None)
    consumer.register_handler("DoWork", lambda c: None)
    consumer.register_handler("Ask", lambda q: q.n)
    options: dict[str, Any] = {
        "prefix": prefix,
        "registry": REGISTRY,
        "metrics_registry": metrics,
        "logger": NullLogger(),  # the junk frames are meant to be rejected
    }
    raw = aioredis.from_url(url)
    transports: list[RedisTransport] = []
    try:
        transports.append(await RedisTransport.connect(consumer, url, **options))
        transports.append(await RedisTransport.connect(producer, url, **options))
        await transports[0].sync()
        junk_channel = transports[0].destination("publish", "Happened")
        junk_stream = transports[0].destination("send", "DoWork")
        ready.set()
        n = 0
        while not stop.is_set():
            await producer.publish(Happened(n))
            await producer.send(DoWork(n))
            await producer.query(Ask(n))
            if n % 5 == 0:
                await raw.publish(junk_channel, b"junk")
            if n % 10 == 0:
                await raw.xadd(junk_stream, {"f": b"junk"})
            n += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.2)
    finally:
        ready.set()  # a failure to start is reported by the starter, not a hang
        for transport in transports:
            await transport.close()
        for bus in (producer, consumer):
            if bus.telemetry is not None:
                bus.telemetry.close()
        keys = [k async for k in raw.scan_iter(match=f"{prefix}*")]
        if keys:
            await raw.delete(*keys)
        await raw.aclose()


@contextlib.contextmanager
def transport_workload(url: str, prefix: str) -> Iterator[str]:
    """Run the workload on its own event loop in a thread; yields its ``host:port``."""
    metrics = CollectorRegistry()
    ready = threading.Event()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    failure: list[BaseException] = []

    def main() -> None:
        try:
            loop.run_until_complete(_traffic(url, prefix, metrics, stop, ready))
        except BaseException as exc:
            failure.append(exc)
        finally:
            loop.close()

    thread = threading.Thread(target=main, name="transport-workload", daemon=True)
    thread.start()
    server, server_thread = start_http_server(0, addr="127.0.0.1", registry=metrics)
    try:
        if not ready.wait(30) or failure:
            raise RuntimeError(f"the transport workload did not start: {failure}")
        yield f"127.0.0.1:{server.server_port}"
    finally:
        with contextlib.suppress(RuntimeError):  # the loop already ended
            loop.call_soon_threadsafe(stop.set)
        thread.join(15)
        server.shutdown()
        server.server_close()
        server_thread.join(5)
    if failure:
        raise failure[0]
