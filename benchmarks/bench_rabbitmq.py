"""RabbitMQ in the adapter benchmark: the transport next to raw aio-pika and FastStream.

``bench_adapters.py --only rabbitmq`` runs it. Three clients on the same workloads, in
one process, alternating round by round (as the Redis and NATS comparisons):

- **raw aio-pika**: publish to a topic exchange (no confirms) into a consumer's queue
  (no ack); durable send = persistent publish with confirms (windows of 100) to a quorum
  queue, consumed with ``prefetch=100`` and a manual ack each; query = direct reply-to
  (published without ``mandatory``, answered by a consumer of the request queue);
- **the transport** (``RabbitMQTransport``): ``bus.publish`` / ``bus.send`` /
  ``bus.query``;
- **FastStream** ``RabbitBroker`` with its defaults: ``broker.publish`` to a topic
  exchange into a subscriber, and ``broker.request`` to a replying subscriber (no durable
  send: FastStream has no acknowledged work queue of its own to compare with).

Targets (issue 16): publish throughput >= 0.7x raw aio-pika and >= 2x FastStream; query
p50 <= 1.3x raw direct reply-to.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import uuid
from typing import Any

from adapter_sides import (
    RAW,
    REGISTRY,
    Ask,
    Counter,
    Side,
    Tick,
    Work,
    measure_latency,
    measure_throughput,
    stats,
)

from jeeves_control_tower.ipc import InMemoryCommBus
from jeeves_control_tower.logging import NullLogger

URL = os.environ.get("JT_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")


async def _nothing(i: int) -> None:
    return None


async def adapter_side() -> Side:
    from jeeves_control_tower.ipc.adapters.rabbitmq import RabbitMQTransport

    prefix = f"bench{uuid.uuid4().hex[:8]}"
    producer, consumer = InMemoryCommBus(instrument=False), InMemoryCommBus(instrument=False)
    events, commands = Counter(), Counter()
    consumer.subscribe("Tick", events.hit)
    consumer.register_handler("Work", commands.hit)
    consumer.register_handler("Ask", lambda q: q.n)
    opts: dict[str, Any] = {"prefix": prefix, "registry": REGISTRY, "metrics": False}
    opts.update(logger=NullLogger(), prefetch=100)
    tp = await RabbitMQTransport.connect(producer, URL, **opts)
    tc = await RabbitMQTransport.connect(consumer, URL, **opts)
    await tc.sync()

    async def close() -> None:
        durable = tp.topology.durable | tc.topology.durable
        await tp.close()
        await tc.close()
        await _delete(durable)

    return Side(
        publish=lambda i: producer.publish(Tick(i)),
        events=events,
        publish_window=1,
        send=lambda i: producer.send(Work(i)),
        commands=commands,
        send_window=100,
        query=lambda i: producer.query(Ask(i)),
        close=close,
    )


async def _delete(durable: set[tuple[str, str]]) -> None:
    import aio_pika

    connection = await aio_pika.connect(URL)
    for kind, name in durable:
        channel = await connection.channel()
        with contextlib.suppress(Exception):
            if kind == "queue":
                await channel.queue_delete(name)
            else:
                await channel.exchange_delete(name)
    await connection.close()


async def raw_side() -> Side:
    import aio_pika

    prefix = f"benchraw{uuid.uuid4().hex[:8]}"
    pub_conn, sub_conn = await aio_pika.connect(URL), await aio_pika.connect(URL)
    pub, confirm = await pub_conn.channel(), await pub_conn.channel(publisher_confirms=True)
    sub = await sub_conn.channel()
    await sub.set_qos(prefetch_count=100)
    events, commands = Counter(), Counter()
    exchange = await pub.declare_exchange(f"{prefix}.events", aio_pika.ExchangeType.TOPIC)
    evq = await sub.declare_queue(exclusive=True, auto_delete=True)
    await evq.bind(f"{prefix}.events", "Tick")

    async def on_event(message: Any) -> None:
        events.hit()

    await evq.consume(on_event, no_ack=True)
    cmd = f"{prefix}.cmd"
    cmdq = await sub.declare_queue(cmd, durable=True, arguments={"x-queue-type": "quorum"})

    async def on_command(message: Any) -> None:
        await message.ack()
        commands.hit()

    await cmdq.consume(on_command)
    reqq = await sub.declare_queue(f"{prefix}.req", auto_delete=True)

    async def on_request(message: Any) -> None:
        await sub.default_exchange.publish(
            aio_pika.Message(message.body, correlation_id=message.correlation_id),
            message.reply_to,
            mandatory=False,
        )
        await message.ack()

    await reqq.consume(on_request)
    waiting: dict[str, asyncio.Future[bytes]] = {}

    async def on_reply(message: Any) -> None:
        future = waiting.pop(message.correlation_id, None)
        if future is not None:
            future.set_result(message.body)

    replies = await pub.get_queue("amq.rabbitmq.reply-to", ensure=False)
    await replies.consume(on_reply, no_ack=True)

    async def query(i: int) -> None:
        future = asyncio.get_running_loop().create_future()
        waiting[str(i)] = future
        message = aio_pika.Message(RAW, reply_to="amq.rabbitmq.reply-to", correlation_id=str(i))
        await pub.default_exchange.publish(message, f"{prefix}.req", mandatory=False)
        await asyncio.wait_for(future, 5)

    async def close() -> None:
        with contextlib.suppress(Exception):
            await sub.queue_delete(cmd)
            await sub.exchange_delete(f"{prefix}.events")
        await pub_conn.close()
        await sub_conn.close()

    return Side(
        publish=lambda i: exchange.publish(aio_pika.Message(RAW), "Tick"),
        events=events,
        publish_window=1,
        send=lambda i: confirm.default_exchange.publish(
            aio_pika.Message(RAW, delivery_mode=aio_pika.DeliveryMode.PERSISTENT), cmd
        ),
        commands=commands,
        send_window=100,
        query=query,
        close=close,
    )


async def faststream_side() -> Side:
    from faststream.rabbit import ExchangeType, RabbitBroker, RabbitExchange, RabbitQueue

    prefix = f"benchfs{uuid.uuid4().hex[:8]}"
    broker = RabbitBroker(URL, logger=None)
    events = Counter()
    exchange = RabbitExchange(f"{prefix}.events", type=ExchangeType.TOPIC, auto_delete=True)

    @broker.subscriber(RabbitQueue(f"{prefix}.evt", auto_delete=True, routing_key="Tick"), exchange)
    async def on_event(body: Any) -> None:
        events.hit()

    @broker.subscriber(RabbitQueue(f"{prefix}.req", auto_delete=True))
    async def on_request(body: Any) -> Any:
        return body

    await broker.start()

    async def close() -> None:
        await broker.stop()

    return Side(
        publish=lambda i: broker.publish(RAW, exchange=exchange, routing_key="Tick"),
        events=events,
        publish_window=1,
        send=_nothing,
        commands=Counter(),
        send_window=0,
        query=lambda i: broker.request(RAW, routing_key=f"{prefix}.req", timeout=5),
        close=close,
    )


async def compare(n: dict[str, int], rounds: int) -> dict[str, Any]:
    sides = {"raw": await raw_side(), "adapter": await adapter_side()}
    sides["faststream"] = await faststream_side()
    sends = {"raw", "adapter"}
    tput: dict[str, dict[str, list[float]]] = {w: {"publish": [], "send": []} for w in sides}
    lats: dict[str, dict[str, list[float]]] = {
        w: {"publish": [], "send": [], "query": []} for w in sides
    }
    try:
        for side in sides.values():  # warm-up
            await measure_throughput(side, "publish", 1000)
            await measure_latency(side, "query", 100)
        for _ in range(rounds):
            for who, side in sides.items():
                tput[who]["publish"].append(await measure_throughput(side, "publish", n["pub"]))
                if who in sends:
                    tput[who]["send"].append(await measure_throughput(side, "send", n["send"]))
            for pattern in ("publish", "send", "query"):
                for who, side in sides.items():
                    if pattern == "send" and who not in sends:
                        continue
                    count = (n["query"] if pattern == "query" else n["lat"]) // rounds
                    lats[who][pattern] += await measure_latency(side, pattern, count)
    finally:
        for side in sides.values():
            await side.close()
    out: dict[str, Any] = {}
    for who in sides:
        out[who] = {}
        for pattern in ("publish", "send", "query"):
            if not lats[who][pattern]:
                continue
            s = stats(lats[who][pattern])
            t = statistics.median(tput[who][pattern]) if pattern != "query" else 1e6 / s["mean_us"]
            out[who][pattern] = {"throughput": round(t), **s}
    return out


async def run(quick: bool) -> dict[str, Any]:
    n = {"pub": 5_000, "send": 2_000, "query": 2_000, "lat": 600}
    if quick:
        n = {"pub": 1_000, "send": 400, "query": 300, "lat": 200}
    rounds = 2 if quick else 5
    r = await compare(n, rounds)
    a, raw, fs = r["adapter"], r["raw"], r["faststream"]
    vs_raw = {
        p: {
            "throughput": round(a[p]["throughput"] / raw[p]["throughput"], 2),
            "p50": round(a[p]["p50_us"] / raw[p]["p50_us"], 2),
        }
        for p in ("publish", "send", "query")
    }
    vs_fs = {
        p: {
            "throughput": round(a[p]["throughput"] / fs[p]["throughput"], 2),
            "p50": round(a[p]["p50_us"] / fs[p]["p50_us"], 2),
        }
        for p in ("publish", "query")
    }
    return {
        "messages": n,
        "rounds": rounds,
        **r,
        "ratio_raw": vs_raw,
        "ratio_faststream": vs_fs,
        "targets": {
            "publish_vs_raw": vs_raw["publish"]["throughput"],
            "publish_vs_raw_ok": vs_raw["publish"]["throughput"] >= 0.7,
            "publish_vs_faststream": vs_fs["publish"]["throughput"],
            "publish_vs_faststream_ok": vs_fs["publish"]["throughput"] >= 2.0,
            "query_p50_vs_raw": vs_raw["query"]["p50"],
            "query_ok": vs_raw["query"]["p50"] <= 1.3,
        },
    }


def table(r: dict[str, Any]) -> str:
    head = f"{'pattern':8} {'client':10} {'msg/s':>9} {'p50 µs':>9} {'p99 µs':>9}"
    lines = [head, "-" * len(head)]
    for p in ("publish", "send", "query"):
        for who in ("raw", "adapter", "faststream"):
            x = r[who].get(p)
            if x is not None:
                lines.append(
                    f"{p:8} {who:10} {x['throughput']:>9} {x['p50_us']:>9} {x['p99_us']:>9}"
                )
    t = r["targets"]

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    lines.append(
        f"publish {t['publish_vs_raw']}x raw (>= 0.7: {verdict(t['publish_vs_raw_ok'])}),"
        f" {t['publish_vs_faststream']}x FastStream (>= 2:"
        f" {verdict(t['publish_vs_faststream_ok'])}); query p50 {t['query_p50_vs_raw']}x raw"
        f" (<= 1.3: {verdict(t['query_ok'])})"
    )
    return "\n".join(lines)
