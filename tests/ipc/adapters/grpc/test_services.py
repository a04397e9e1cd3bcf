"""Services registered with the hub by other processes, dispatched by the hub's coordinator."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

from jeeves_control_tower.ipc.adapters.grpc import GrpcServices
from jeeves_control_tower.testing import eventually
from jeeves_control_tower.testing.messages import REGISTRY, DoWork
from jeeves_control_tower.types import (
    DispatchTarget,
    Envelope,
    RequestContext,
    SchedulingPriority,
    ServiceDescriptor,
)

from .hubs import hub_and_clients

ROOT = Path(__file__).resolve().parents[4]


def envelope(tag: str = "") -> Envelope:
    return Envelope(RequestContext(request_id=f"r-{tag}", capability="test"), metadata={"tag": tag})


def target(name: str, priority: str = "normal", timeout: float = 10.0) -> DispatchTarget:
    return DispatchTarget(
        service_name=name,
        method="run",
        priority=SchedulingPriority(priority),
        timeout_seconds=timeout,
    )


async def test_max_concurrent_and_priority_are_the_hubs() -> None:
    async with hub_and_clients(2) as (hub, [(_, server), (_, caller)]):
        served = await GrpcServices(server).start()
        calling = await GrpcServices(caller).start()
        running, peak, order = 0, 0, []
        gate = asyncio.Event()

        async def handler(envelope: Envelope) -> Envelope:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            order.append(envelope.metadata.get("tag"))
            await gate.wait()
            running -= 1
            envelope.outputs["done"] = True
            return envelope

        served.register(ServiceDescriptor(name="work", service_type="t", max_concurrent=2), handler)
        await eventually(lambda: hub.coordinator.get_service("work") is not None)

        first = [
            asyncio.create_task(calling.dispatch(target("work"), envelope(f"n{i}")))
            for i in range(2)
        ]
        await eventually(lambda: running == 2)
        low = asyncio.create_task(calling.dispatch(target("work", "low"), envelope("low")))
        await eventually(lambda: hub.coordinator.queue_depth("work") == 1)
        high = asyncio.create_task(
            hub.coordinator.dispatch(target("work", "realtime"), envelope("realtime"))
        )
        await eventually(lambda: hub.coordinator.queue_depth("work") == 2)
        gate.set()
        results = await asyncio.gather(*first, low, high)
        assert all(r.outputs.get("done") and not r.terminated for r in results)
        assert peak == 2
        assert order[2:] == ["realtime", "low"]
        await served.close()
        await calling.close()


async def test_a_killed_process_marks_its_services_down_and_its_command_moves_on() -> None:
    async with hub_and_clients(
        1, {"registry": REGISTRY, "heartbeat_interval": 0.2}, registry=REGISTRY
    ) as (hub, [(bus, transport)]):
        env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.ipc.adapters.grpc.worker", hub.address,
            stdout=asyncio.subprocess.PIPE, env=env, cwd=ROOT,
        )  # fmt: skip
        assert proc.stdout is not None
        try:
            lines: list[dict[str, object]] = []

            async def next_line() -> dict[str, object]:
                assert proc.stdout is not None
                raw = await asyncio.wait_for(proc.stdout.readline(), 30.0)
                lines.append(json.loads(raw))
                return lines[-1]

            assert (await next_line())["event"] == "ready"
            await eventually(lambda: hub.coordinator.get_service("stuck") is not None)
            await bus.send(DoWork(7))
            assert (await next_line()) == {"event": "command", "n": 7}
            dispatch = asyncio.create_task(
                hub.coordinator.dispatch(target("stuck", timeout=30.0), envelope())
            )
            assert (await next_line())["event"] == "dispatch"

            handled: list[int] = []
            bus.register_handler("DoWork", lambda cmd: handled.append(cmd.n))
            await transport.sync()
            proc.send_signal(signal.SIGKILL)

            result = await asyncio.wait_for(dispatch, 20.0)
            assert result.terminated
            assert "went away" in (result.termination_reason or "")
            await eventually(lambda: handled == [7], timeout=20.0)  # redelivered here
            service = hub.coordinator.get_service("stuck")
            assert service is not None and not service.healthy
            later = await hub.coordinator.dispatch(target("stuck"), envelope())
            assert later.terminated and "unhealthy" in (later.termination_reason or "")
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()


async def test_the_hub_lists_its_processes_for_the_observability_endpoint() -> None:
    async with hub_and_clients(2, {"heartbeat_interval": 0.05}) as (hub, [(_, ta), (_, tb)]):
        served = await GrpcServices(ta).start()

        async def handler(envelope: Envelope) -> Envelope:
            return envelope

        served.register(ServiceDescriptor(name="listed", service_type="t"), handler)

        def listed() -> dict[str, tuple[bool, list[str]]]:
            snapshot = hub.peers.snapshot()
            return {p["process"]: (p["alive"], p["services"]) for p in snapshot["peers"]}

        await eventually(lambda: listed().get(ta.process_id) == (True, ["listed"]))
        assert listed()[tb.process_id] == (True, [])
        assert hub.peers.snapshot()["process"] == hub.local.process_id
        await served.close()
        await tb.close()
        await eventually(lambda: listed().get(tb.process_id, (True,))[0] is False)


async def test_a_dispatch_its_caller_gives_up_is_cancelled_in_the_serving_process() -> None:
    async with hub_and_clients(2) as (hub, [(_, server), (_, caller)]):
        served = await GrpcServices(server).start()
        calling = await GrpcServices(caller).start()
        started, cancelled = asyncio.Event(), asyncio.Event()

        async def handler(envelope: Envelope) -> Envelope:
            started.set()
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                cancelled.set()
                raise
            return envelope

        served.register(ServiceDescriptor(name="slow", service_type="t"), handler)
        await eventually(lambda: hub.coordinator.get_service("slow") is not None)
        asking = asyncio.create_task(calling.dispatch(target("slow", timeout=60), envelope()))
        await asyncio.wait_for(started.wait(), 10)
        asking.cancel()  # the caller gives up long before the dispatch's 60 s
        await asyncio.wait_for(cancelled.wait(), 10)
        await eventually(lambda: hub.router.in_flight == 0)
        await served.close()
        await calling.close()
