"""Polling a real endpoint: cursors, restarts, failures, bearer tokens."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from dashboard.source import EndpointState, FetchError, SharedPoller, fetch_json, poll
from prometheus_client import CollectorRegistry

from jeeves_control_tower.demo import DemoHandle
from jeeves_control_tower.ipc import CommBusCoordinator, InMemoryCommBus
from jeeves_control_tower.observability import FlowRecorder, serve
from jeeves_control_tower.types import ServiceDescriptor

from .trickle import trickling_server

DEAD = "http://127.0.0.1:9"  # nothing listens on the discard port


def test_poll_advances_the_cursor_without_duplicates(live_demo: DemoHandle) -> None:
    state = EndpointState(live_demo.url)
    records = poll(state, [], keep=50_000, now=100.0)
    assert state.up is True and state.last_ok == 100.0 and state.error == ""
    assert len(state.services["services"]) == 9
    assert records and state.cursor == max(r["seq"] for r in records)
    again = poll(state, records, keep=50_000)
    seqs = [r["seq"] for r in again]
    assert len(seqs) == len(set(seqs)) and len(again) >= len(records)
    assert state.cursor == max(seqs)


def test_poll_trims_to_keep(live_demo: DemoHandle) -> None:
    records = poll(EndpointState(live_demo.url), [], keep=25)
    assert len(records) == 25


def test_poll_marks_down_keeps_data_and_stamps_recovery(live_demo: DemoHandle) -> None:
    state = EndpointState(DEAD)
    kept = [{"endpoint": DEAD, "seq": 1, "time": 1.0}]
    assert poll(state, kept, keep=10, now=50.0) is kept
    assert state.up is False and state.down_since == 50.0 and "cannot reach" in state.error
    poll(state, kept, keep=10, now=60.0)
    assert state.down_since == 50.0  # still the start of the outage
    state.url = live_demo.url  # the endpoint is back
    poll(state, [], keep=10, now=70.0)
    assert state.up is True and state.recovered_at == 70.0 and state.down_since is None


def test_poll_restarts_the_cursor_when_the_endpoint_restarted(live_demo: DemoHandle) -> None:
    state = EndpointState(live_demo.url, cursor=10**12, stats={"uptime_seconds": 10**9})
    records = poll(state, [], keep=50_000)
    assert records and state.cursor is not None and state.cursor < 10**12


def test_fetch_json_errors(live_demo: DemoHandle) -> None:
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch_json(live_demo.url, "/nope")
    with pytest.raises(FetchError, match="did not return JSON"):
        fetch_json(live_demo.url, "/metrics")
    with pytest.raises(FetchError, match="HTTP 400"):
        fetch_json(live_demo.url, "/api/flow?limit=0")


@pytest.fixture
def guarded() -> Iterator[str]:
    """A real endpoint that wants a bearer token."""
    registry = CollectorRegistry()
    flow = FlowRecorder()
    bus = InMemoryCommBus(registry=registry, flow=flow)
    coordinator = CommBusCoordinator(None, bus, registry=registry, flow=flow)
    coordinator.register_service(ServiceDescriptor("svc", "worker"))
    server = serve(coordinator, token="s3cret")
    try:
        yield server.url
    finally:
        server.close()
        coordinator.telemetry.close()
        bus.telemetry.close()


def test_bearer_token(guarded: str) -> None:
    state = EndpointState(guarded)
    poll(state, [], keep=10)
    assert state.up is False and "HTTP 401" in state.error
    poll(state, [], keep=10, token="s3cret")
    assert state.up is True and state.services["services"][0]["name"] == "svc"


def test_shared_poller_polls_once_per_interval_and_bounds_its_entries(
    live_demo: DemoHandle,
) -> None:
    clock = [0.0]
    poller = SharedPoller(keep=100, clock=lambda: clock[0], max_entries=2)
    states, records = poller.refresh([live_demo.url], "", interval=2)
    assert records and states[live_demo.url].up and states[live_demo.url].history["services"]
    polled = states[live_demo.url].last_ok  # wall time of the poll
    clock[0] = 1.0  # within the interval: the same data, no new poll
    again, _ = poller.refresh([live_demo.url], "", interval=2)
    assert again[live_demo.url].last_ok == polled
    clock[0] = 2.0
    third, _ = poller.refresh([live_demo.url], "", interval=2)
    assert third[live_demo.url].last_ok != polled
    clock[0] = 2.5
    poller.refresh([DEAD], "", interval=2)
    clock[0] = 3.0
    poller.refresh(["http://127.0.0.1:10"], "", interval=2)  # evicts the least recently read
    # The live endpoint's entry was evicted: within its interval it is polled afresh
    # (a kept entry would answer with the data of the poll at 2.0).
    fourth, _ = poller.refresh([live_demo.url], "", interval=2)
    assert fourth[live_demo.url].last_ok not in (None, third[live_demo.url].last_ok)


def test_a_trickling_endpoint_does_not_freeze_the_others(live_demo: DemoHandle) -> None:
    """The review's case: an endpoint that sends its headers, then one byte a second.
    urllib's timeout is per read, and the endpoints were polled one after the other under
    a lock: refresh never returned and every session hung."""
    poller = SharedPoller(keep=100, timeout=1.0, deadline=2.0)
    with trickling_server() as slow:
        started = time.monotonic()
        states, records = poller.refresh([slow, live_demo.url], "", interval=2)
        took = time.monotonic() - started
        assert took < 2.0 + 1.5
        assert states[live_demo.url].up is True and records
        assert {r["endpoint"] for r in records} == {live_demo.url}
        assert states[slow].up is False and "timed out" in states[slow].error


def test_a_session_arriving_during_a_poll_waits_no_longer_than_the_deadline(
    live_demo: DemoHandle,
) -> None:
    poller = SharedPoller(keep=100, timeout=5.0, deadline=6.0)
    with trickling_server(headers_too=True) as slow:
        first = threading.Thread(target=poller.refresh, args=([slow], "", 2))
        first.start()
        try:
            time.sleep(0.2)  # the first session's poll is running
            poller.deadline = 1.0
            started = time.monotonic()
            states, _ = poller.refresh([slow, live_demo.url], "", 2)
            assert time.monotonic() - started < 1.0 + 1.0
            assert states[slow].up is False and "timed out" in states[slow].error
            assert states[live_demo.url].up is True
        finally:
            first.join(15)


def test_the_token_goes_only_where_it_is_trusted(guarded: str) -> None:
    poller = SharedPoller(keep=10)
    states, _ = poller.refresh([guarded], "s3cret", 2, send_token=lambda url: False)
    assert states[guarded].up is False and "HTTP 401" in states[guarded].error
    states, _ = poller.refresh([guarded], "s3cret", 2, send_token=lambda url: url == guarded)
    assert states[guarded].up is True
