"""The Processes table of the Streamlit app (AppTest), against real endpoints in this process.

Each endpoint is a real ``serve(...)`` whose peer table is filled as heartbeats would fill
it; discovery across real processes and brokers is in ``test_fleet_processes.py``.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from dashboard.fleet import ALLOW_ENV
from prometheus_client import CollectorRegistry

from jeeves_control_tower.ipc.adapters.peers import PeerTable
from jeeves_control_tower.observability import FlowRecorder, ObservabilityServer, serve

from .test_app import make_app, rerun_until


def endpoint(process: str, services: list[str]) -> ObservabilityServer:
    server = serve(registry=CollectorRegistry(), flow=FlowRecorder())
    server.peers = PeerTable(ttl=60.0, forget_after=600.0)
    server.peers.local(process, server.url, services)
    return server


def dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def fleet() -> Iterator[tuple[ObservabilityServer, ObservabilityServer, str]]:
    """p-1 (the seed) heard p-2 (alive, same host), p-3 (same host, nothing listening) and
    p-4 (another host: never fetched)."""
    seed, other = endpoint("p-1", ["alpha"]), endpoint("p-2", ["beta"])
    dead = dead_url()
    assert seed.peers is not None
    for process, url, name in (
        ("p-2", other.url, "beta"),
        ("p-3", dead, "gamma"),
        ("p-4", "http://192.0.2.1:9464", "delta"),
    ):
        seed.peers.heard(process, {"endpoint": url, "services": [{"name": name}]})
    try:
        yield seed, other, dead
    finally:
        seed.close()
        other.close()


def processes(at: Any) -> dict[str, dict[str, Any]]:
    found = [df.value for df in at.dataframe if "note" in df.value.columns]
    assert len(found) == 1, f"{len(found)} processes tables"
    return {row["process"]: row for row in found[0].to_dict("records")}


def test_the_processes_table_shows_each_process_where_it_lives_and_whether_it_is_up(
    monkeypatch: pytest.MonkeyPatch, fleet: tuple[ObservabilityServer, ObservabilityServer, str]
) -> None:
    seed, other, dead = fleet
    # p-2 and p-3 listen on other ports of the seed's host: followed once allowed.
    monkeypatch.setenv(ALLOW_ENV, "http://127.0.0.1")
    at = make_app(monkeypatch, seed.url).run()
    assert not at.exception, at.exception
    assert "Processes" in [s.value for s in at.subheader]
    rows = processes(at)
    shown = {p: (r["endpoint"], r["status"], list(r["services"])) for p, r in rows.items()}
    assert shown == {
        "p-1": (seed.url, "up", ["alpha"]),
        "p-2": (other.url, "up", ["beta"]),
        "p-3": (dead, "down", ["gamma"]),
        "p-4": ("http://192.0.2.1:9464", "up", ["delta"]),
    }
    assert rows["p-4"]["note"] == "not followed: URL not allowed"
    assert all(len(r["last_seen"]) == 8 and r["last_seen"][2] == ":" for r in rows.values())
    assert {m.label: m.value for m in at.metric}["Endpoints up"] == "2 / 3"

    other.close()  # p-2 dies: marked down, what it served stays listed
    rerun_until(at, lambda at: processes(at)["p-2"]["status"] == "down")  # polls are shared
    rows = processes(at)
    assert (rows["p-2"]["status"], list(rows["p-2"]["services"])) == ("down", ["beta"])
    assert rows["p-1"]["status"] == "up"
    assert {m.label: m.value for m in at.metric}["Endpoints up"] == "1 / 3"
