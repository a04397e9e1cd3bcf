"""Pre-fork servers: real worker processes write prometheus_client's multiprocess files
(``PROMETHEUS_MULTIPROC_DIR``); one scrape of one worker's endpoint reports every worker.

The workers are ``tests/observability/prefork_worker.py`` run in subprocesses, started one
after the other (so "most recent" has a known answer); worker 0 serves the endpoint.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from jeeves_control_tower.observability.asgi import create_app
from jeeves_control_tower.observability.multiprocess import exposition_registry, mark_process_dead

from . import prefork_worker as w
from .support import http_get

ROOT = Path(__file__).resolve().parents[2]
WORKERS = 3
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass
class Worker:
    index: int
    proc: subprocess.Popen[bytes]
    port: int

    def stop(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


def _start(index: int, directory: Path, env: dict[str, str]) -> Worker:
    ready = directory.parent / f"ready-{index}"
    args = [sys.executable, "-m", "tests.observability.prefork_worker", str(index), str(ready)]
    if index == 0:
        args.append("--serve")
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdin=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not ready.exists():
        if proc.poll() is not None:
            raise AssertionError(f"worker {index} exited with {proc.returncode}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"worker {index} not ready within 60 s")
        time.sleep(0.05)
    return Worker(index, proc, int(ready.read_text()))


@pytest.fixture
def multiproc_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "prometheus"
    directory.mkdir()
    return directory


@pytest.fixture
def workers(multiproc_dir: Path) -> Iterator[list[Worker]]:
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(multiproc_dir),
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
    }
    started: list[Worker] = []
    try:
        for index in range(WORKERS):
            started.append(_start(index, multiproc_dir, env))
        yield started
    finally:
        for worker in started:
            if worker.proc.poll() is None:
                worker.stop()


def _parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[s.name, frozenset(s.labels.items())] = s.value
    return samples


def _scrape(worker: Worker, accept: str | None = None) -> Samples:
    headers = {"Accept": accept} if accept else None
    r = http_get(f"http://127.0.0.1:{worker.port}/metrics", headers)
    assert r.status == 200, r.body[:200]
    return _parse(r.body.decode())


def _get(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def _series(samples: Samples, name: str) -> list[frozenset[tuple[str, str]]]:
    return [labels for (n, labels) in samples if n == name]


def _sum(f: Any, indexes: range | list[int]) -> int:
    return sum(f(i) for i in indexes)


def test_one_scrape_reports_every_worker(workers: list[Worker]) -> None:
    s = _scrape(workers[0])
    every = range(WORKERS)
    publish = {"pattern": "publish", "message_type": "Stored"}
    assert _get(s, "commbus_messages_total", **publish, outcome="ok") == _sum(w.publishes, every)
    assert _get(s, "commbus_message_duration_seconds_count", **publish) == _sum(w.publishes, every)
    send = {"pattern": "send", "message_type": "DoThing", "outcome": "ok"}
    assert _get(s, "commbus_messages_total", **send) == _sum(w.sends, every)
    charge = {"service": "billing", "method": "charge"}
    per_worker = len(w.DURATIONS) + 1
    assert _get(s, "commbus_dispatch_duration_seconds_count", **charge) == WORKERS * per_worker
    assert _get(s, "commbus_dispatch_duration_seconds_sum", **charge) == WORKERS * (
        sum(w.DURATIONS) + 1.0
    )
    bucket = "commbus_dispatch_duration_seconds_bucket"
    assert _get(s, bucket, **charge, le="0.25") == WORKERS * 2  # 0.125 and 0.25
    assert _get(s, bucket, **charge, le="1.0") == WORKERS * 4  # + 0.5 and 1.0
    assert _get(s, bucket, **charge, le="+Inf") == WORKERS * per_worker
    wire = {"transport": "redis", "direction": "sent", "pattern": "publish"}
    assert _get(s, "commbus_wire_messages_total", **wire) == _sum(w.publishes, every)
    # A real coordinator per worker: its dispatches, retries, and the one each holds.
    post = {"service": "ledger", "method": "post"}
    assert _get(s, "commbus_dispatch_total", **post, outcome="ok") == _sum(w.ledger_posts, every)
    assert _get(s, "commbus_dispatch_retries_total", **post) == _sum(w.ledger_posts, every)
    assert _get(s, "commbus_inflight_messages", pattern="dispatch") == WORKERS
    assert _get(s, "commbus_service_load", service="ledger") == WORKERS  # livesum
    assert _get(s, "commbus_service_capacity", service="ledger") == 4 * WORKERS
    # Gauges, each by its mode, with no per-pid series.
    assert _get(s, "commbus_inflight_messages", pattern="query") == _sum(w.held_inflight, every)
    assert _get(s, "commbus_service_capacity", service="billing") == 4 * WORKERS  # livesum
    assert _get(s, "commbus_service_healthy", service="billing") == 0  # livemin: worker 1
    buffered = _get(s, "commbus_transport_buffered_messages", transport="redis")
    assert buffered == _sum(w.buffered, every)  # livesum
    depth = _get(s, "commbus_dead_letter_messages", transport="redis", queue="jeeves:dlq")
    assert depth == w.dead_letter_depth(WORKERS - 1)  # mostrecent: the last worker's
    assert not any("pid" in dict(labels) for (_, labels) in s)


def test_openmetrics_scrape_without_exemplars(workers: list[Worker]) -> None:
    """Exemplars were given to ``observe``; multiprocess values do not keep them, and the
    OpenMetrics exposition still parses and sums."""
    r = http_get(
        f"http://127.0.0.1:{workers[0].port}/metrics",
        {"Accept": "application/openmetrics-text; version=1.0.0"},
    )
    assert r.status == 200
    assert r.headers["Content-Type"].startswith("application/openmetrics-text")
    text = r.body.decode()
    assert text.rstrip().endswith("# EOF")
    assert "trace_id" not in text
    assert (
        'commbus_dispatch_duration_seconds_count{method="charge",service="billing"} '
        f"{float(WORKERS * (len(w.DURATIONS) + 1))}" in text
    )


def test_a_dead_workers_live_gauges_disappear(workers: list[Worker], multiproc_dir: Path) -> None:
    dead = workers[2]
    dead.stop()
    mark_process_dead(dead.proc.pid, str(multiproc_dir))
    s = _scrape(workers[0])
    live = [0, 1]
    # Counters and histograms keep what the dead worker counted.
    publish = {"pattern": "publish", "message_type": "Stored", "outcome": "ok"}
    assert _get(s, "commbus_messages_total", **publish) == _sum(w.publishes, range(WORKERS))
    # livesum gauges now count the live workers only.
    assert _get(s, "commbus_inflight_messages", pattern="query") == _sum(w.held_inflight, live)
    assert _get(s, "commbus_service_capacity", service="billing") == 4 * len(live)
    buffered = _get(s, "commbus_transport_buffered_messages", transport="redis")
    assert buffered == _sum(w.buffered, live)
    # Once worker 1 (the one that saw the service unhealthy) is gone too, it is healthy.
    workers[1].stop()
    mark_process_dead(workers[1].proc.pid, str(multiproc_dir))
    s = _scrape(workers[0])
    assert _get(s, "commbus_service_healthy", service="billing") == 1
    assert _get(s, "commbus_inflight_messages", pattern="query") == w.held_inflight(0)


async def _asgi_get(app: Any, path: str) -> tuple[int, bytes]:
    sent: list[dict[str, Any]] = []
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": [], "client": ("127.0.0.1", 1), "server": ("t", 80),
    }  # fmt: skip

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, body


async def test_the_asgi_app_serves_the_aggregate(
    workers: list[Worker], multiproc_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ASGI carrier, in a process of the same pre-fork server (this one, pointed at the
    same directory), renders the same sums, from a fresh aggregate at each scrape."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(multiproc_dir))
    app = create_app(registry=CollectorRegistry())
    status, body = await _asgi_get(app, "/metrics")
    assert status == 200
    s = _parse(body.decode())
    publish = {"pattern": "publish", "message_type": "Stored", "outcome": "ok"}
    assert _get(s, "commbus_messages_total", **publish) == _sum(w.publishes, range(WORKERS))
    workers[2].stop()
    mark_process_dead(workers[2].proc.pid, str(multiproc_dir))
    status, body = await _asgi_get(app, "/metrics")
    s = _parse(body.decode())
    assert _get(s, "commbus_inflight_messages", pattern="query") == _sum(w.held_inflight, [0, 1])


def test_single_process_scrape_is_the_registry_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    registry = CollectorRegistry()
    assert exposition_registry(registry) is registry


def test_mark_process_dead_needs_a_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    with pytest.raises(ValueError, match="PROMETHEUS_MULTIPROC_DIR"):
        mark_process_dead(os.getpid())


def test_a_missing_multiprocess_directory_is_a_logged_503_on_both_carriers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A broken setup is told, not hidden: ``/metrics`` answers 503 (JSON, no-store) and
    the path is logged; the other routes keep working."""
    from starlette.testclient import TestClient

    from jeeves_control_tower.observability import FlowRecorder, serve
    from tests.helpers import ListLogger

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "missing"))
    logger = ListLogger()
    server = serve(registry=CollectorRegistry(), flow=FlowRecorder(), logger=logger)
    try:
        metrics = http_get(server.url + "/metrics")
        assert metrics.status == 503 and "multiprocess" in metrics.json()["error"]
        assert metrics.headers["Cache-Control"] == "no-store"
        assert http_get(server.url + "/healthz").status == 200
    finally:
        server.close()
    assert any(
        m == "observability_metrics_unavailable" and "missing" in f["error"]
        for _, m, f in logger.records
    )
    app = create_app(registry=CollectorRegistry(), flow=FlowRecorder(), logger=ListLogger())
    with TestClient(app) as client:
        answer = client.get("/metrics")
    assert answer.status_code == 503 and answer.headers["cache-control"] == "no-store"
