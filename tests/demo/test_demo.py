"""The demo system: it starts, produces traffic of every pattern and outcome, stops cleanly."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from typing import Any

import pytest

from jeeves_control_tower.cli import build_parser, main
from jeeves_control_tower.demo import DemoConfig, DemoSystem, run_demo_in_background
from jeeves_control_tower.demo.workload import WEIGHTS, HealthFlapper, Workload

from .helpers import FAST, PATTERNS, get_json, wait_for_traffic, wait_until


def _records(system: DemoSystem) -> list[dict[str, Any]]:
    """Every record still in the ring buffer (paged like a dashboard would)."""
    out: list[dict[str, Any]] = []
    while True:
        page = system.flow.flow(out[-1]["seq"] if out else 0, 1000)["records"]
        if not page:
            return out
        out.extend(page)


def _dispatch_outcomes(system: DemoSystem) -> Counter[str]:
    return Counter(r["outcome"] for r in _records(system) if r["pattern"] == "dispatch")


async def _run_until(system: DemoSystem, done: Any, timeout: float) -> None:
    stop = asyncio.Event()
    runner = asyncio.ensure_future(system.run(stop))
    try:
        for _ in range(int(timeout * 10)):
            if done():
                break
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.wait_for(runner, 10)


async def test_demo_produces_every_pattern_and_outcome() -> None:
    system = DemoSystem(DemoConfig(rate=120.0, seed=3, flap_period=1.5, flap_down=0.6))
    wanted = {"ok", "error", "timeout", "unhealthy"}

    def done() -> bool:
        patterns = {r["pattern"] for r in _records(system)}
        return (
            patterns == PATTERNS
            and wanted <= set(_dispatch_outcomes(system))
            and system.flapper.transitions >= 2
        )

    try:
        await _run_until(system, done, timeout=45)
        records = _records(system)
        assert {r["pattern"] for r in records} == PATTERNS
        assert wanted <= set(_dispatch_outcomes(system))
        # events fan out to several subscribers
        stored = [r for r in records if r["message_type"] == "MemoryStored"]
        assert stored and all(len(r["targets"]) == 3 for r in stored)
        # queries between services, some of which time out
        queries = Counter(r["message_type"] for r in records if r["pattern"] == "query")
        assert {"GetSessionState", "SearchMemory", "GetQuota"} <= set(queries)
        # retries happened and are counted
        reg = system.registry
        retries = reg.get_sample_value(
            "commbus_dispatch_retries_total", {"service": "embedder", "method": "embed"}
        )
        assert retries and retries > 0
        # every flow record carries a trace id (the demo's SDK provider records spans)
        assert all(r["trace_id"] for r in records)
        # one request is one trace: a pipeline's nested dispatches share its trace id
        # (the newest one: an older one's first steps may have left the ring buffer)
        pipeline = next(
            r
            for r in reversed(records)
            if r["message_type"] == "execute_pipeline" and r["outcome"] == "ok"
        )
        nested = {r["message_type"] for r in records if r["trace_id"] == pipeline["trace_id"]}
        assert {"GetSessionState", "plan", "embed", "PipelineCompleted"} <= nested
        # the flapping service recovered when the demo stopped
        assert system.coordinator.get_service("billing").healthy  # type: ignore[union-attr]
        assert sum(system.workload.started.values()) > 50
        assert set(system.workload.started) == set(WEIGHTS)
        # load and capacity gauges are exported per service
        assert reg.get_sample_value("commbus_service_capacity", {"service": "billing"}) == 2
    finally:
        system.close()
    leftover = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert not leftover


async def test_stop_is_prompt_and_leaves_nothing_running() -> None:
    system = DemoSystem(DemoConfig(rate=50.0, seed=1))
    stop = asyncio.Event()
    runner = asyncio.ensure_future(system.run(stop))
    await asyncio.sleep(0.5)
    began = time.monotonic()
    stop.set()
    await asyncio.wait_for(runner, 5)
    system.close()
    assert time.monotonic() - began < 5.0
    assert not [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert all(s.current_load == 0 for s in system.coordinator.list_services(healthy_only=False))


def test_background_demo_serves_the_endpoint_and_stops() -> None:
    handle = run_demo_in_background(config=FAST)
    try:
        assert get_json(f"{handle.url}/healthz") == {"status": "ok"}
        services = get_json(f"{handle.url}/api/services")["services"]
        assert {s["service_type"] for s in services} == {"flow", "worker", "vertical"}
        assert len(services) == 9
        wait_for_traffic(handle.url)
        import urllib.request

        with urllib.request.urlopen(f"{handle.url}/metrics", timeout=5) as response:
            text = response.read().decode()
        assert "commbus_dispatch_total{" in text
    finally:
        handle.stop()
    assert not handle.running
    host, port = handle.url.removeprefix("http://").split(":")
    with pytest.raises(OSError), socket.create_connection((host, int(port)), timeout=1):
        pass


def test_background_demo_reports_a_failed_start() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match="failed to start"):
            run_demo_in_background(port=port)


def test_cli_runs_for_duration_and_exits_zero() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "jeeves_control_tower.cli", "demo", "--port", "0",
         "--duration", "2", "--rate", "30", "--seed", "1"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Jeeves demo running at http://127.0.0.1:" in result.stdout
    assert "Stopped after" in result.stdout


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_cli_stops_cleanly_on_signal(signum: int) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "jeeves_control_tower.cli", "demo", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": ""},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        url = first.split()[-1]
        assert url.startswith("http://127.0.0.1:"), first
        wait_until(lambda: get_json(f"{url}/api/stats")["flow"]["last_seq"] > 0, 15, "traffic")
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "Stopped after" in out
    assert "Traceback" not in err


def test_cli_port_in_use_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["demo", "--port", str(port), "--duration", "1"]) == 1
    assert "cannot start the demo" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv", [["demo", "--rate", "0"], ["demo", "--port", "70000"], ["demo", "--duration", "-1"], []]
)
def test_cli_rejects_bad_arguments(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(argv)
    assert info.value.code == 2


def test_workload_and_flapper_validate_arguments() -> None:
    system = DemoSystem(DemoConfig(seed=1))
    try:
        with pytest.raises(ValueError):
            Workload(system.services, system.workload.rng, rate=0)
        with pytest.raises(ValueError):
            HealthFlapper(system.services, period=1.0, down=2.0)
    finally:
        system.close()
