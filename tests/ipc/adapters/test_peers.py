"""The peer table behind ``/api/peers``: what a heartbeat may advertise, and how it is kept."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from jeeves_control_tower.ipc import CommBusCoordinator, DynamicEvent, InMemoryCommBus
from jeeves_control_tower.ipc.adapters.peers import (
    LISTED_SERVICES,
    MAX_DOCUMENT,
    MAX_ENDPOINT,
    MAX_NAME,
    MAX_SERVICES,
    PeerTable,
    valid_endpoint,
)
from jeeves_control_tower.ipc.adapters.services import HEARTBEAT, RemoteServices
from jeeves_control_tower.logging import NullLogger
from jeeves_control_tower.testing import eventually
from jeeves_control_tower.testing.messages import REGISTRY
from tests import brokers


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("http://10.0.0.5:9464", "http://10.0.0.5:9464"),
        ("https://obs.example.com/", "https://obs.example.com"),
        ("http://[::1]:9464", "http://[::1]:9464"),
        ("http://host:9464/prefix", "http://host:9464/prefix"),
        ("ftp://host", None),
        ("javascript:alert(1)", None),
        ("http://", None),
        ("//host:1", None),
        ("http://user:pw@host:1", None),
        ("http://host:1/?q=1", None),
        ("http://host:1/#x", None),
        ("http://host:99999", None),
        ("http://ho st:1", None),
        ("http://host:1/\n", None),
        ("http://h/" + "a" * MAX_ENDPOINT, None),
        ("", None),
        (None, None),
        (42, None),
        (["http://host"], None),
    ],
)
def test_only_a_bounded_absolute_http_url_is_an_endpoint(raw: Any, expected: str | None) -> None:
    assert valid_endpoint(raw) == expected


def test_a_heartbeat_without_endpoint_or_with_a_bad_one_is_a_peer_without_endpoint() -> None:
    table = PeerTable(ttl=5.0, forget_after=60.0)
    table.heard("old", {"process": "old", "services": [{"name": "a"}]})
    table.heard("bad", {"endpoint": "file:///etc/passwd", "services": [{"name": "b"}]})
    table.heard("new", {"endpoint": "http://10.0.0.7:9464/", "services": [{"name": "c"}]})
    peers = {p["process"]: p for p in table.snapshot()["peers"]}
    assert {k: (p["endpoint"], p["services"], p["alive"]) for k, p in peers.items()} == {
        "old": (None, ["a"], True),
        "bad": (None, ["b"], True),
        "new": ("http://10.0.0.7:9464", ["c"], True),
    }


def test_what_a_peer_lists_is_bounded() -> None:
    table = PeerTable(ttl=5.0, forget_after=60.0, max_peers=3)
    services: list[Any] = [{"name": "x" * 1000}, {"name": 7}, "junk", None]
    services += [{"name": f"s{i}"} for i in range(2 * MAX_SERVICES)]
    table.heard("p" * 1000, {"services": services})
    (peer,) = table.snapshot()["peers"]
    assert len(peer["process"]) == MAX_NAME
    assert len(peer["services"]) <= MAX_SERVICES
    assert peer["services"][0] == "x" * MAX_NAME and "s0" in peer["services"]
    for i in range(10):  # the table keeps the ones heard most recently
        table.heard(f"q{i}", {"services": []})
    table.heard("q0", {"services": []})
    assert [p["process"] for p in table.snapshot()["peers"]] == ["q0", "q9", "q8"]


def test_the_peer_list_is_bounded_in_bytes_and_lists_what_matters_first() -> None:
    """Six fake heartbeats with 256 names of 200 characters made a 1.9 MB ``/api/peers``
    (a dashboard reads 256 KiB), sorted by id so the fakes hid the real processes."""
    table = PeerTable(ttl=5.0, forget_after=60.0)
    table.local("me", "http://10.0.0.1:9464", ["billing"])
    table.heard("real-1", {"endpoint": "http://10.0.0.2:9464", "services": [{"name": "orders"}]})
    table.heard("gone", {"endpoint": "http://10.0.0.3:9464", "services": [], "bye": True})
    for i in range(6):
        fat = [{"name": f"{j:03d}" + "x" * 197} for j in range(MAX_SERVICES)]
        table.heard(f"a-fake-{i}", {"endpoint": "http://10.6.6.6:1", "services": fat})
    snapshot = table.snapshot()
    assert len(json.dumps(snapshot, separators=(",", ":"))) <= MAX_DOCUMENT + 1024
    order = [p["process"] for p in snapshot["peers"]]
    assert order[0] == "me" and "real-1" in order
    assert order[-1] == "gone"  # the live ones first, heard most recently first
    assert order[1:7] == [f"a-fake-{i}" for i in reversed(range(6))]
    fake = snapshot["peers"][1]
    assert len(fake["services"]) == LISTED_SERVICES
    assert fake["services_omitted"] == MAX_SERVICES - LISTED_SERVICES
    # A flood of fakes: the document stays within budget, this process stays first,
    # and what was left out is counted.
    for i in range(990):
        fat = [{"name": f"{j:03d}" + "x" * 197} for j in range(MAX_SERVICES)]
        table.heard(f"flood-{i}", {"services": fat})
    flooded = table.snapshot()
    assert len(json.dumps(flooded, separators=(",", ":"))) <= MAX_DOCUMENT + 1024
    assert flooded["peers"][0]["process"] == "me" and flooded["omitted"] > 0
    assert len(flooded["peers"]) + flooded["omitted"] == len(table.snapshot(10**9)["peers"])


def test_a_goodbye_is_not_alive_a_silent_peer_dies_then_is_forgotten() -> None:
    table = PeerTable(ttl=0.05, forget_after=0.3)
    table.local("me", "http://127.0.0.1:1", ["mine"])
    table.heard("leaving", {"bye": True, "services": []})
    table.heard("silent", {"services": [{"name": "s"}]})
    snap = table.snapshot()
    assert snap["process"] == "me" and snap["endpoint"] == "http://127.0.0.1:1"
    alive = {p["process"]: p["alive"] for p in snap["peers"]}
    assert alive == {"me": True, "leaving": False, "silent": True}
    assert snap["peers"][0]["self"] is True and snap["peers"][0]["services"] == ["mine"]
    time.sleep(0.1)
    alive = {p["process"]: p["alive"] for p in table.snapshot()["peers"]}
    assert alive == {"me": True, "leaving": False, "silent": False}
    time.sleep(0.3)
    assert [p["process"] for p in table.snapshot()["peers"]] == ["me"]


def test_advertise_rejects_what_a_receiver_would_drop() -> None:
    remote = RemoteServices(CommBusCoordinator(NullLogger(), instrument=False), None)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        remote.advertise("http://user:secret@host:1")
    remote.advertise("http://10.1.2.3:9464/")
    assert remote.endpoint == "http://10.1.2.3:9464"
    remote.advertise(None)
    assert remote.endpoint is None


@pytest.fixture(
    params=[
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("nats", marks=pytest.mark.nats),
    ]
)
async def transports(request: pytest.FixtureRequest) -> AsyncIterator[list[Any]]:
    """Two transports on one broker namespace, each with its own bus."""
    if request.param == "redis":
        from jeeves_control_tower.ipc.adapters.redis import RedisTransport as Transport

        url = brokers.require(brokers.REDIS_URL, "Redis")
        prefix = brokers.unique("jt:test:") + ":"
    else:
        from jeeves_control_tower.ipc.adapters.nats import NatsTransport as Transport  # type: ignore[assignment]

        url = brokers.require(brokers.NATS_URL, "NATS")
        prefix = brokers.unique("jttest")
    made = [
        await Transport.connect(
            InMemoryCommBus(instrument=False), url, prefix=prefix, registry=REGISTRY, metrics=False
        )
        for _ in range(2)
    ]
    yield made
    for transport in made:
        await transport.close()
    if request.param == "nats":
        from tests.conformance.conftest import nats_cleanup

        await nats_cleanup(url, prefix)


async def test_heartbeats_carry_the_endpoint_and_old_or_bad_ones_still_count(
    transports: list[Any],
) -> None:
    mine, theirs = transports
    coordinator = CommBusCoordinator(NullLogger(), mine.bus, instrument=False)
    remote = await RemoteServices(coordinator, mine, interval=0.1).start()
    listener = await RemoteServices(
        CommBusCoordinator(NullLogger(), theirs.bus, instrument=False), theirs, interval=0.1
    ).start()
    try:
        remote.advertise("http://10.9.8.7:9464")

        def peer(process: str) -> dict[str, Any] | None:
            found = [p for p in listener.peers.snapshot()["peers"] if p["process"] == process]
            return found[0] if found else None

        await eventually(lambda: (peer(mine.process_id) or {}).get("endpoint") is not None, 5.0)
        heard = peer(mine.process_id)
        assert heard is not None
        assert (heard["endpoint"], heard["alive"], heard["self"]) == (
            "http://10.9.8.7:9464", True, False,
        )  # fmt: skip
        # A peer of an older version (no field) and one advertising garbage: both heard,
        # without an endpoint, and their services still mirrored.
        for process, extra in (("old-peer", {}), ("bad-peer", {"endpoint": "http://" + "x" * 600})):
            payload = {"process": process, "interval": 0.1, "bye": False, **extra}
            payload["services"] = [{"name": f"svc-{process}", "healthy": True}]
            await mine.publish_internal(DynamicEvent(HEARTBEAT, payload))
        await eventually(lambda: peer("old-peer") is not None and peer("bad-peer") is not None)
        assert peer("old-peer")["endpoint"] is None  # type: ignore[index]
        assert peer("bad-peer")["endpoint"] is None  # type: ignore[index]
        listed = {s.name for s in listener.coordinator.list_services(healthy_only=False)}
        assert {"svc-old-peer", "svc-bad-peer"} <= listed
    finally:
        await listener.close()
        await remote.close()
