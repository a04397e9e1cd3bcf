"""The demo over a broker (``jeeves-ipc demo --transport URL``): its messages really travel
over the transport (the wire counters on its own /metrics say so, per pattern and
direction), the URL's credentials are never printed, and a broker that cannot be reached
or an unknown scheme is a clear error."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from jeeves_control_tower.demo import DemoConfig, run_demo
from jeeves_control_tower.demo.broker import DEMO_REGISTRY
from jeeves_control_tower.ipc import InMemoryCommBus
from tests import brokers
from tests.conformance.conftest import nats_cleanup, rabbitmq_cleanup, redis_cleanup

ROOT = Path(__file__).parents[2]
QUICK = DemoConfig(rate=40.0, seed=3, flap_period=3.0, flap_down=1.0)
COMMANDS = ("RecordUsage", "InvalidateCache", "SendNotification")
PATTERNS = ("publish", "send", "query")


def rabbitmq_names(prefix: str) -> set[tuple[str, str]]:
    """The durable queues and exchanges a demo run leaves on RabbitMQ."""
    names = {("queue", f"{prefix}.cmd.{t}") for t in COMMANDS}
    return names | {
        ("exchange", f"{prefix}.events"),
        ("exchange", f"{prefix}.dead"),
        ("queue", f"{prefix}.dead"),
    }


def wire(
    samples: list[tuple[dict[str, str], float]], transport: str
) -> dict[tuple[str, str], float]:
    """``commbus_wire_messages_total`` of ``transport`` by (direction, pattern)."""
    out: dict[tuple[str, str], float] = {}
    for labels, value in samples:
        if labels.get("transport") == transport:
            key = (labels["direction"], labels["pattern"])
            out[key] = out.get(key, 0.0) + value
    return out


def scraped(url: str) -> list[tuple[dict[str, str], float]]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        text = response.read().decode()
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        if family.name == "commbus_wire_messages"
        for sample in family.samples
        if sample.name == "commbus_wire_messages_total"
    ]


def registry_samples(registry: CollectorRegistry) -> list[tuple[dict[str, str], float]]:
    return [
        (sample.labels, sample.value)
        for family in registry.collect()
        if family.name == "commbus_wire_messages"
        for sample in family.samples
        if sample.name == "commbus_wire_messages_total"
    ]


def flowed(counts: dict[tuple[str, str], float]) -> bool:
    """Every pattern went out over the broker and came back in."""
    return all(
        counts.get((direction, pattern), 0) > 0
        for direction in ("sent", "received")
        for pattern in PATTERNS
    )


@pytest.mark.rabbitmq
def test_cli_demo_over_rabbitmq_shows_the_wire_in_its_metrics() -> None:
    url = brokers.require(brokers.RABBITMQ_URL, "RabbitMQ")
    prefix = brokers.unique("jtdemo")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    argv = [sys.executable, "-m", "jeeves_control_tower.cli", "demo", "--transport", url]
    argv += ["--prefix", prefix, "--duration", "6", "--port", "0", "--rate", "40"]
    argv += ["--flap-period", "3", "--seed", "3"]
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT
    )
    try:
        assert process.stdout is not None
        first = ""  # the banner, read line by line (communicate() skips what readline buffered)
        while "Press Ctrl-C" not in first and process.poll() is None:
            first += process.stdout.readline()
        match = re.search(r"running at (http://\S+)", first)
        assert match, first
        endpoint = match.group(1)
        counts: dict[tuple[str, str], float] = {}
        deadline = time.monotonic() + 20
        while not flowed(counts) and time.monotonic() < deadline:
            counts = wire(scraped(endpoint), "rabbitmq")
            time.sleep(0.3)
        assert flowed(counts), counts
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        asyncio.run(rabbitmq_cleanup(url, rabbitmq_names(prefix)))
    assert process.returncode == 0, err
    printed = first + out + err
    assert "over     rabbitmq amqp://***@" in printed
    assert "guest:guest" not in printed and "guest@" not in printed


async def _demo_over(url: str, prefix: str | None) -> tuple[str, dict[tuple[str, str], float]]:
    """Run the demo over ``url`` for a moment: (transport system, its wire counts)."""
    system = await run_demo(QUICK, port=0, duration=2.5, transport=url, prefix=prefix)
    assert system.link is not None
    transport = system.link.transport
    assert transport.closed and system.bus.transport is None  # detached and closed at the end
    assert sum(system.workload.started.values()) > 0
    return transport.system, wire(registry_samples(system.registry), transport.system)


@pytest.fixture
async def hub() -> AsyncIterator[str]:
    pytest.importorskip("grpc")
    from jeeves_control_tower.ipc.adapters.grpc import serve_grpc

    served = await serve_grpc(
        InMemoryCommBus(instrument=False), port=0, metrics=False, registry=DEMO_REGISTRY
    )
    try:
        yield f"grpc://127.0.0.1:{served.port}"
    finally:
        await served.close()


def _redis() -> tuple[str, str, Callable[[], Any]]:
    url = brokers.require(brokers.REDIS_URL, "Redis")
    prefix = brokers.unique("jtdemo") + ":"
    return url, prefix, lambda: redis_cleanup(url, prefix)


def _nats() -> tuple[str, str, Callable[[], Any]]:
    url = brokers.require(brokers.NATS_URL, "NATS")
    prefix = brokers.unique("jtdemo")
    return url, prefix, lambda: nats_cleanup(url, prefix)


@pytest.mark.parametrize(
    ("broker", "system"),
    [
        pytest.param(_redis, "redis", marks=pytest.mark.redis, id="redis"),
        pytest.param(_nats, "nats", marks=pytest.mark.nats, id="nats"),
    ],
)
async def test_demo_runs_over_redis_and_nats(
    broker: Callable[[], tuple[str, str, Callable[[], Any]]], system: str
) -> None:
    url, prefix, cleanup = broker()
    try:
        over, counts = await _demo_over(url, prefix)
    finally:
        await cleanup()
    assert over == system
    assert flowed(counts), counts


async def test_demo_runs_over_a_grpc_hub(hub: str) -> None:
    over, counts = await _demo_over(hub, None)
    assert over == "grpc"
    assert flowed(counts), counts


def test_cli_demo_rejects_an_unknown_scheme_and_an_unreachable_broker() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    base = [sys.executable, "-m", "jeeves_control_tower.cli", "demo", "--port", "0"]
    bad = subprocess.run(
        [*base, "--transport", "kafka://x:1"], capture_output=True, text=True, env=env, timeout=30
    )
    assert bad.returncode == 2 and "--transport takes" in bad.stderr
    down = subprocess.run(
        [*base, "--transport", "amqp://app:sekrit@127.0.0.1:1/", "--duration", "5"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert down.returncode == 1, down.stderr
    assert "cannot start the demo" in down.stderr and "***@127.0.0.1:1" in down.stderr
    assert "sekrit" not in down.stdout + down.stderr
