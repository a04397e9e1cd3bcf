"""``GET /api/peers`` and ``advertise_endpoint``: the endpoint's side of the fleet view.

The peer table is fed here as ``RemoteServices`` feeds it; heartbeats over real brokers and
real processes are in ``tests/ipc/adapters/test_peers.py`` and
``tests/dashboard/test_fleet_processes.py``.
"""

from __future__ import annotations

import json

import pytest
from prometheus_client import CollectorRegistry

from jeeves_control_tower.ipc import CommBusCoordinator
from jeeves_control_tower.ipc.adapters.services import RemoteServices
from jeeves_control_tower.logging import NullLogger
from jeeves_control_tower.observability import FlowRecorder, serve
from jeeves_control_tower.observability.fleet import advertise_endpoint

from .support import http_get


def remote_services() -> RemoteServices:
    """Not started (no transport): only its peer table and advertised URL are used."""
    coordinator = CommBusCoordinator(NullLogger(), instrument=False)
    return RemoteServices(coordinator, None, interval=0.5)  # type: ignore[arg-type]


def test_an_endpoint_that_advertises_nothing_lists_an_empty_fleet() -> None:
    with serve(registry=CollectorRegistry(), flow=FlowRecorder()) as server:
        response = http_get(server.url + "/api/peers")
    body = json.loads(response.body)
    assert response.status == 200
    assert body | {"generated_at": 0} == {
        "generated_at": 0, "process": None, "endpoint": None, "ttl_seconds": None, "peers": [],
    }  # fmt: skip


def test_an_advertised_endpoint_lists_itself_and_the_peers_heard() -> None:
    remote = remote_services()
    with serve(registry=CollectorRegistry(), flow=FlowRecorder(), token="t0k") as server:
        assert advertise_endpoint(server, remote) == server.url
        assert remote.endpoint == server.url
        remote.peers.local("me-1", remote.endpoint, ["alpha"])  # what the next beat records
        remote.peers.heard("other-2", {"endpoint": "http://10.0.0.2:9464", "services": []})
        denied = http_get(server.url + "/api/peers")
        response = http_get(server.url + "/api/peers", {"Authorization": "Bearer t0k"})
    assert denied.status == 401
    body = json.loads(response.body)
    assert (body["process"], body["endpoint"], body["ttl_seconds"]) == ("me-1", server.url, 1.5)
    assert [(p["process"], p["endpoint"], p["self"], p["alive"]) for p in body["peers"]] == [
        ("me-1", server.url, True, True),
        ("other-2", "http://10.0.0.2:9464", False, True),
    ]


def test_the_public_url_can_differ_from_the_bound_one_but_must_be_http() -> None:
    remote = remote_services()
    with serve(registry=CollectorRegistry(), flow=FlowRecorder()) as server:
        assert advertise_endpoint(server, remote, "https://obs.example.com/") == (
            "https://obs.example.com"
        )
        with pytest.raises(ValueError):
            advertise_endpoint(server, remote, "obs.example.com:9464")
