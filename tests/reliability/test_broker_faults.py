"""Broker faults with real OS processes, each test on a private broker it may kill.

Every test here starts its own ``redis-server`` / ``nats-server`` on a free port
(:mod:`tests.brokers`), never the shared one, and talks to it from worker processes
(:mod:`tests.ipc.adapters.cluster`, :mod:`tests.ipc.adapters.mp_worker`) and buses of
the test's own process:

- the broker is SIGKILLed and restarted in the middle of a stream of commands, while a
  consumer process works through them: the producer's sends never raise (Redis buffers
  them while it is down, NATS retries them), every command is handled at least once,
  and the consumer process reconnects by itself;
- a consumer process is SIGKILLed while its handler is inside a command: the command is
  redelivered to another live consumer process and handled there;
- the broker is killed and restarted while everything is idle: publish, send and query
  work again afterwards, without restarting any process.

The slow-consumer tests (bounded memory) are in ``test_slow_consumer.py``.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from jeeves_control_tower.ipc import InMemoryCommBus, NoHandlerError, TransportError
from jeeves_control_tower.testing import eventually
from jeeves_control_tower.testing.messages import Ask, DoWork, Happened
from tests import brokers
from tests.ipc.adapters.cluster import KINDS, Cluster, Worker

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("kind", KINDS)]

#: How long a test waits for anything after a fault (a loaded machine is slow, never stuck).
PATIENCE = 60.0


def _server(kind: str) -> brokers.RedisServer | brokers.NatsServer:
    return brokers.RedisServer() if kind == "redis" else brokers.NatsServer()


class _Stream:
    """``lanes`` concurrent senders of ``DoWork(0)``, ``DoWork(1)``... while the test moves
    the broker through phases (``up``, ``down``, ``restarting``, ``restarted``).

    The test opens the stream up to a number (:meth:`open_to`); each lane takes the next
    number and sends it. For each command the stream records the phase when its ``send``
    started and when it returned, and every exception a ``send`` raised. :meth:`when_sent`
    runs a callback the moment a given number of sends have returned (between two sends
    of a lane, the other lanes in the middle of theirs).
    """

    def __init__(self, bus: InMemoryCommBus, lanes: int) -> None:
        self.bus = bus
        self.phase = "up"
        self.sent: dict[int, tuple[str, str]] = {}  # n: (phase at start, phase at return)
        self.waiting: dict[int, str] = {}  # n: phase at start, for sends not returned yet
        self.errors: list[tuple[int, str]] = []
        self._next = 0
        self._limit = 0
        self._last = False
        self._more = asyncio.Event()
        self._hooks: dict[int, Callable[[], None]] = {}
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._lane()) for _ in range(lanes)]

    def open_to(self, limit: int, *, last: bool = False) -> None:
        self._limit, self._last = limit, last
        self._more.set()

    def when_sent(self, count: int, callback: Callable[[], None]) -> None:
        self._hooks[count] = callback

    def burst(self, count: int) -> None:
        """Start ``count`` more sends at once, beside the lanes."""
        loop = asyncio.get_running_loop()
        for _ in range(count):
            n, self._next = self._next, self._next + 1
            self._tasks.append(loop.create_task(self._send(n)))

    def count(self, started: str, returned: str | None = None) -> int:
        """Sends that returned, by the phases they started and returned in."""
        return sum(1 for s, r in self.sent.values() if s == started and returned in (None, r))

    def count_waiting(self, started: str) -> int:
        return sum(1 for s in self.waiting.values() if s == started)

    async def _lane(self) -> None:
        while True:
            if self._next >= self._limit:
                if self._last:
                    return
                self._more.clear()
                await self._more.wait()
                continue
            n, self._next = self._next, self._next + 1
            await self._send(n)

    async def _send(self, n: int) -> None:
        self.waiting[n] = started = self.phase
        try:
            await self.bus.send(DoWork(n))
        except Exception as exc:
            self.errors.append((n, repr(exc)))
        del self.waiting[n]
        self.sent[n] = (started, self.phase)
        hook = self._hooks.pop(len(self.sent), None)
        if hook is not None:
            hook()

    async def finished(self, timeout: float) -> None:
        await asyncio.wait_for(asyncio.gather(*self._tasks), timeout)

    async def cancel(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def test_broker_killed_and_restarted_mid_stream_loses_no_command(kind: str) -> None:
    lanes, before, kill_at, during, total = 4, 100, 110, 200, 300
    with _server(kind) as server:
        cluster = Cluster(kind, server.url)
        stream: _Stream | None = None
        try:
            # a consumer slow enough (10 ms a command) that the broker holds a backlog
            consumer = await cluster.spawn("consumer", sleep=0.01, redelivery=5.0)
            producer = await cluster.bus()
            stream = _Stream(producer, lanes)
            stream.open_to(before)
            await eventually(lambda: len(consumer.values("handled")) >= 10, timeout=PATIENCE)
            at_kill: dict[str, int] = {}

            def kill() -> None:  # the moment send number kill_at returns, other sends in flight
                server.stop(signal.SIGKILL)  # the process is gone (reaped) when this returns
                assert stream is not None
                stream.phase = "down"
                at_kill["handled"] = len(set(consumer.values("handled")))
                at_kill["in_flight"] = len(stream.waiting)

            stream.when_sent(kill_at, kill)
            stream.open_to(during)
            await eventually(lambda: stream.phase == "down", timeout=PATIENCE)
            stream.burst(lanes)  # more sends starting while the broker is down
            if kind == "redis":
                # sends return while Redis is down: buffered in the producer process
                await eventually(lambda: stream.count("down", "down") >= 50, timeout=PATIENCE)
            else:
                # sends started while the broker is down retry until JetStream is back
                await eventually(lambda: stream.count_waiting("down") >= lanes, timeout=PATIENCE)
            stream.phase = "restarting"
            await asyncio.to_thread(server.start)  # same port, same AOF / JetStream store
            stream.phase = "restarted"
            stream.open_to(total, last=True)
            await stream.finished(timeout=PATIENCE)

            # the producer's view: no send raised, and the stream did span the outage
            assert stream.errors == []
            assert sorted(stream.sent) == list(range(total))
            assert at_kill["in_flight"] >= 1, "no send was in flight when the broker died"
            assert stream.count("up") >= kill_at
            if kind == "redis":
                assert stream.count("down", "down") >= 50  # buffered: returned at once
            else:
                assert stream.count("down", "down") == 0  # a send returns once stored ...
                assert stream.count("down") >= lanes  # ... retried until then
            assert stream.count("restarted") >= 1

            # every command handled at least once, by the one consumer process, which
            # survived the outage and reconnected by itself (it handled the commands sent
            # after the restart)
            def handled() -> set[int]:
                return set(consumer.values("handled"))

            await _wait(
                lambda: handled() >= set(range(total)),
                lambda: f"never handled: {sorted(set(range(total)) - handled())}",
                consumer,
            )
            assert handled() == set(range(total))
            assert at_kill["handled"] < kill_at, "the broker died with no backlog in it"
            assert consumer.alive
        finally:
            if stream is not None:
                await stream.cancel()
            await cluster.close()


async def test_a_consumer_process_killed_mid_command_is_redelivered_to_another(
    kind: str,
) -> None:
    with _server(kind) as server:
        cluster = Cluster(kind, server.url)
        try:
            # redelivery after 1 s without a sign of life (Redis min_idle, NATS ack_wait)
            doomed = await cluster.spawn("consumer", hang_on=5, redelivery=1.0)
            producer = await cluster.bus()
            for i in range(10):
                await producer.send(DoWork(i))
            await eventually(lambda: doomed.values("started") == [5], timeout=PATIENCE)
            survivor = await cluster.spawn("consumer", redelivery=1.0)
            doomed.kill()  # SIGKILL while its handler is inside command 5
            assert await asyncio.wait_for(doomed.proc.wait(), PATIENCE) == -signal.SIGKILL
            for i in range(10, 20):
                await producer.send(DoWork(i))

            def done() -> set[int]:
                return set(doomed.values("handled")) | set(survivor.values("handled"))

            await _wait(
                lambda: done() >= set(range(20)),
                lambda: f"never handled: {sorted(set(range(20)) - done())}",
                survivor,
            )
            assert done() == set(range(20))
            assert 5 in survivor.values("handled")  # redelivered to the live process
            assert 5 not in doomed.values("handled")
            assert set(range(10, 20)) <= set(survivor.values("handled"))
            assert survivor.alive
        finally:
            await cluster.close()


async def test_after_an_idle_broker_restart_publish_send_and_query_work_again(
    kind: str,
) -> None:
    with _server(kind) as server:
        cluster = Cluster(kind, server.url)
        try:
            worker = await cluster.spawn("subscriber,consumer,responder", redelivery=5.0)
            producer = await cluster.bus()
            await _every_pattern_works(producer, worker, 0)

            server.stop(signal.SIGKILL)  # everything idle: no command, query or event in flight
            await asyncio.to_thread(server.start)

            # A command is stored at once (buffered or retried until the broker is back).
            await producer.send(DoWork(1))
            await _wait(lambda: 1 in worker.values("handled"), lambda: "command 1", worker)
            # Until the processes have reconnected, a query fails fast (TransportError) or
            # finds no responder yet, and an event is not seen (at-most-once, no subscriber
            # yet): both are retried until they get through, within PATIENCE.
            assert await _until(lambda: producer.query(Ask(21), timeout=2.0)) == 42
            markers = iter(range(10_000, 1_000_000))
            seen = len(worker.values("event"))

            async def publish_one_seen() -> None:
                await producer.publish(Happened(next(markers)))
                await asyncio.sleep(0.1)
                if len(worker.values("event")) == seen:
                    raise TimeoutError("not seen yet")

            await _until(publish_one_seen)
            # Reconnected: from now on every pattern works the first time.
            await _every_pattern_works(producer, worker, 2)
            assert worker.alive
        finally:
            await cluster.close()


async def _every_pattern_works(bus: InMemoryCommBus, worker: Worker, n: int) -> None:
    """One command, one query and a few events, each through the broker the first time."""
    seen = len(worker.values("event"))
    await bus.send(DoWork(n))
    assert await bus.query(Ask(n), timeout=10.0) == 2 * n
    for i in range(5):
        await bus.publish(Happened(n * 100 + i))
    await _wait(lambda: n in worker.values("handled"), lambda: f"command {n}", worker)
    await _wait(
        lambda: len(worker.values("event")) >= seen + 5,
        lambda: f"events {worker.values('event')[seen:]}",
        worker,
    )
    assert worker.values("event")[seen:] == [n * 100 + i for i in range(5)]


async def _wait(check: Callable[[], bool], state: Callable[[], str], worker: Worker) -> None:
    """``eventually(check)`` within PATIENCE; on failure, say what is missing, and whether
    the worker process is alive and what it printed last."""
    try:
        await eventually(check, timeout=PATIENCE)
    except AssertionError:
        raise AssertionError(
            f"{state()} (after {PATIENCE}s; worker {worker.pid} alive={worker.alive},"
            f" last printed {str(worker.lines[-3:])[:600]})"
        ) from None


async def _until(attempt: Callable[[], Awaitable[Any]]) -> Any:
    """``await attempt()`` until it stops failing the way a reconnecting transport fails."""
    deadline = time.monotonic() + PATIENCE
    while True:
        try:
            return await attempt()
        except (TransportError, NoHandlerError, TimeoutError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)
