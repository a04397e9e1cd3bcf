"""Broker cleanup for the conformance subclasses (other tests import it from here too).

The suite itself is :mod:`jeeves_control_tower.testing.conformance`; this directory only
subclasses it once per transport of the project (``test_conformance.py``).
"""

from __future__ import annotations

import contextlib

__all__ = ["nats_cleanup", "rabbitmq_cleanup", "redis_cleanup"]


async def redis_cleanup(url: str, prefix: str) -> None:
    """Delete every key under ``prefix``."""
    import redis.asyncio as aioredis

    client = aioredis.from_url(url)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def nats_cleanup(url: str, prefix: str) -> None:
    """Delete the JetStream streams of ``prefix``."""
    import nats

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        for name in (f"{prefix}_commands", f"{prefix}_dead"):
            with contextlib.suppress(Exception):
                await js.delete_stream(name)
    finally:
        await nc.close()


async def rabbitmq_cleanup(url: str, durable: set[tuple[str, str]]) -> None:
    """Delete the durable queues and exchanges named (``RabbitMQTransport.topology.durable``
    of the transports a test connected)."""
    import aio_pika

    connection = await aio_pika.connect(url)
    try:
        for kind, name in sorted(durable):
            channel = await connection.channel()
            with contextlib.suppress(Exception):
                if kind == "queue":
                    await channel.queue_delete(name)
                else:
                    await channel.exchange_delete(name)
            with contextlib.suppress(Exception):
                await channel.close()
    finally:
        await connection.close()
