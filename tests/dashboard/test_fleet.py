"""Fleet discovery on the dashboard side: the allow-list, what is followed, and the bounds.

``/api/peers`` answers are handed in by a fake fetch (recording where it was asked and
with which token); one test reads a real oversized answer over HTTP. Real processes on
real brokers: ``test_fleet_processes.py``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from dashboard.fleet import MAX_BYTES, AllowList, Fleet, PeersError, fetch_peers

from .trickle import trickling_server

SEED = "http://10.0.0.1:9464"
#: The seed's host on any port, as ``$JEEVES_FLEET_ALLOW`` would add it.
SAME_HOST = AllowList.for_endpoints([SEED], "http://10.0.0.1")


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("http://10.0.0.1:9464", True),
        ("http://10.0.0.1:9464/", True),
        ("http://10.0.0.1:9999", False),  # same host, another port: whoever listens there
        ("http://10.0.0.1", False),
        ("https://10.0.0.1:9464", False),  # another scheme
        ("http://10.0.0.2:9464", False),  # another host
        ("http://10.0.0.1.evil.com:9464", False),
        ("http://evil.com@10.0.0.1:9464", False),  # user info: never followed
        ("ftp://10.0.0.1", False),
        ("not a url", False),
    ],
)
def test_by_default_only_the_exact_origins_of_the_given_endpoints_are_followed(
    url: str, allowed: bool
) -> None:
    allow = AllowList.for_endpoints([SEED])
    assert allow.allows(url) is allowed
    assert allow.trusts(url) is allowed  # the token goes to the given endpoints


def test_more_hosts_can_be_allowed_by_configuration() -> None:
    allow = AllowList.for_endpoints(
        [SEED], "https://obs.example.com, http://*.internal:9464 http://10.0.0.9:80"
    )
    assert allow.allows("https://obs.example.com:8443")
    assert not allow.allows("http://obs.example.com")
    assert allow.allows("http://a.b.internal:9464")
    assert not allow.allows("http://a.b.internal:9465")
    assert not allow.allows("http://internal:9464")  # the wildcard wants a subdomain
    assert not allow.allows("http://evilinternal:9464")
    assert allow.allows("http://10.0.0.9")  # port 80 is the default
    assert not allow.allows("http://10.0.0.9:81")
    # The token goes only to origins named exactly: a host and a port.
    assert allow.trusts(SEED) and allow.trusts("http://10.0.0.9:80")
    assert not allow.trusts("https://obs.example.com:8443")  # any port: followed, no token
    assert not allow.trusts("http://a.b.internal:9464")  # a wildcard host: no token
    assert not allow.trusts("http://*.internal:9464")


def test_malformed_rules_are_rejected_not_widened() -> None:
    rules, rejected = AllowList.parse("http://ok.example, ftp://x, http://h/path, *, http://u@h")
    assert rules == [("http", "ok.example", None)]
    assert rejected == ["ftp://x", "http://h/path", "*", "http://u@h"]


@dataclass
class FakeFetch:
    """``/api/peers`` answers by URL; records ``(url, token)`` of every call."""

    answers: dict[str, Any]
    calls: list[tuple[str, str]] = field(default_factory=list)

    def __call__(self, url: str, token: str, timeout: float) -> Any:
        self.calls.append((url, token))
        answer = self.answers.get(url)
        if answer is None:
            raise PeersError("cannot reach the endpoint")
        return answer


def peers(me: str, *entries: tuple[str, Any, list[str], bool]) -> dict[str, Any]:
    rows = [
        {"process": p, "endpoint": e, "services": s, "last_heartbeat": 1.0e9, "alive": a}
        for p, e, s, a in entries
    ]
    return {"process": me, "endpoint": None, "peers": rows}


def test_discovery_follows_allowed_peers_only_and_knows_the_rest() -> None:
    fetch = FakeFetch(
        {
            SEED: peers(
                "p1",
                ("p1", SEED, ["alpha"], True),
                ("p2", "http://10.0.0.1:9500", ["beta"], True),
                ("p3", "http://203.0.113.9:9464", ["gamma"], True),
                ("p4", None, ["delta"], True),
                ("p5", "javascript:alert(1)", [], False),
            )
        }
    )
    fleet = Fleet([SEED], SAME_HOST, token="tok", fetch=fetch)
    assert fleet.discover() is True
    assert fleet.endpoints() == [SEED, "http://10.0.0.1:9500"]
    assert fetch.calls == [(SEED, "tok")]
    by_default = Fleet([SEED], AllowList.for_endpoints([SEED]), fetch=fetch)
    by_default.discover()
    assert by_default.endpoints() == [SEED]  # another port is another origin
    assert by_default.processes["p2"].note == "not followed: URL not allowed"
    notes = {p.process: (p.endpoint, p.followed, p.note) for p in fleet.processes.values()}
    assert notes == {
        "p1": (SEED, False, ""),
        "p2": ("http://10.0.0.1:9500", True, ""),
        "p3": ("http://203.0.113.9:9464", False, "not followed: URL not allowed"),
        "p4": (None, False, "advertises no endpoint"),
        "p5": (None, False, "advertises no endpoint"),
    }


@dataclass
class State:
    up: bool | None = None
    last_ok: float | None = None
    services: dict[str, Any] = field(default_factory=dict)


def test_rows_come_from_polls_where_polled_and_from_heartbeats_elsewhere() -> None:
    fetch = FakeFetch(
        {
            SEED: peers(
                "p1",
                ("p1", SEED, ["alpha"], True),
                ("p2", "http://10.0.0.1:9500", ["beta"], True),
                ("p3", "http://203.0.113.9:9464", ["gamma"], False),
            )
        }
    )
    fleet = Fleet([SEED], SAME_HOST, fetch=fetch)
    fleet.discover()
    states = {SEED: State(True, 2.0e9), "http://10.0.0.1:9500": State(False, 1.5e9)}
    rows = {r["process"]: r for r in fleet.rows(states)}
    assert [(r["status"], r["last_seen"], r["services"]) for r in rows.values()] == [
        ("up", 2.0e9, ["alpha"]),
        ("down", 1.5e9, ["beta"]),  # its endpoint stopped answering: down, data kept
        ("down", 1.0e9, ["gamma"]),  # not polled: the heartbeats say it is gone
    ]


def test_a_seed_without_a_fleet_is_one_row_with_the_services_it_reports() -> None:
    fleet = Fleet([SEED], AllowList.for_endpoints([SEED]), fetch=FakeFetch({}))
    assert fleet.discover() is False and "cannot reach" in fleet.error
    state = State(True, 5.0, {"services": [{"name": "solo"}, {"name": 3}, "junk"]})
    assert fleet.rows({SEED: state}) == [
        {
            "process": "",
            "endpoint": SEED,
            "status": "up",
            "last_seen": 5.0,
            "services": ["solo"],
            "note": "",
        }
    ]


def test_discovery_falls_back_to_a_found_endpoint_when_the_seed_is_down() -> None:
    other = "http://10.0.0.1:9500"
    listing = peers("p1", ("p1", SEED, [], True), ("p2", other, [], True))
    fetch = FakeFetch({SEED: listing, other: listing})
    fleet = Fleet([SEED], SAME_HOST, token="tok", fetch=fetch)
    fleet.discover()
    del fetch.answers[SEED]
    fetch.calls.clear()
    assert fleet.discover() is True
    # the token goes to the given endpoint only: the other port is allowed, not trusted
    assert fetch.calls == [(SEED, "tok"), (other, "")]
    fetch.calls.clear()
    assert fleet.discover(down={SEED}) is True  # a known-down endpoint is not waited for
    assert fetch.calls == [(other, "")]
    trusted = AllowList.for_endpoints([SEED], f"http://10.0.0.1, {other}")
    fetch.answers[SEED] = listing
    named = Fleet([SEED], trusted, token="tok", fetch=fetch)
    named.discover()
    named.discover(down={SEED})
    assert fetch.calls[-1] == (other, "tok")  # named exactly by the configuration


def test_what_one_answer_can_make_the_dashboard_do_is_bounded() -> None:
    many = [(f"p{i}", f"http://10.0.0.1:{10000 + i}", ["s"], True) for i in range(1000)]
    fleet = Fleet(
        [SEED],
        SAME_HOST,
        max_follow=5,
        fetch=FakeFetch({SEED: peers("me", *many)}),
    )
    fleet.discover()
    assert len(fleet.endpoints()) == 1 + 5
    assert len(fleet.processes) <= 256
    capped = [p for p in fleet.processes.values() if not p.followed]
    assert capped and all(p.note == "not followed: 5 endpoints followed already" for p in capped)
    bad: Any
    for bad in ([], {"peers": "no"}, {"peers": [1, None, {"process": 5}]}, "x"):
        junk = Fleet([SEED], AllowList.for_endpoints([SEED]), fetch=FakeFetch({SEED: bad}))
        junk.discover()
        assert junk.processes == {} and junk.endpoints() == [SEED]


@pytest.fixture
def http_server() -> Iterator[tuple[str, list[str]]]:
    """Answers ``/api/peers`` with more than MAX_BYTES: this process and live peers first
    (as an endpoint lists them), then more peers than fit."""
    seen: list[str] = []
    rows = [
        {"process": f"p{i:05d}", "endpoint": None, "services": ["s" * 150], "alive": True}
        for i in range(MAX_BYTES // 150)
    ]
    doc = {"generated_at": 1.0, "process": "p00000", "endpoint": None, "peers": rows}
    body = json.dumps(doc).encode()
    assert len(body) > MAX_BYTES

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def test_an_oversized_answer_is_used_as_far_as_it_is_read(
    http_server: tuple[str, list[str]],
) -> None:
    """Six fake heartbeats made ``/api/peers`` larger than the read cap and discovery then
    failed for the whole fleet: now the complete entries before the cap are used."""
    url, seen = http_server
    doc = fetch_peers(url, "tok", timeout=5.0)
    assert seen == ["/api/peers"] and doc["truncated"] is True
    assert doc["process"] == "p00000"
    kept = doc["peers"]
    assert 100 < len(kept) < MAX_BYTES // 150
    assert [p["process"] for p in kept] == [f"p{i:05d}" for i in range(len(kept))]
    fleet = Fleet([url], AllowList.for_endpoints([url]))
    assert fleet.discover() is True and fleet.error == ""
    assert "p00000" in fleet.processes and "longer than 256 KiB" in fleet.notice
    assert len(fleet.processes) == min(len(kept), 256)


def test_an_answer_that_is_not_json_even_in_part_is_an_error() -> None:
    from dashboard.peers import read_prefix

    with pytest.raises(PeersError):
        read_prefix(b"<html>" * 100)
    with pytest.raises(PeersError):
        read_prefix(b'{"process": "x", "junk": ' + b"[" * 100)
    assert read_prefix(b'{"process": "me", "peers": [{"process": "a"}, {"process": "b"')[
        "peers"
    ] == [{"process": "a"}]


@pytest.mark.parametrize("headers_too", [False, True])
def test_a_trickling_peer_list_times_out_within_the_deadline(headers_too: bool) -> None:
    with trickling_server(headers_too) as url:
        started = time.monotonic()
        with pytest.raises(PeersError, match="timed out"):
            fetch_peers(url, "", timeout=1.0)
        assert time.monotonic() - started < 2.5  # urllib waited for ever: 1 byte a second


def test_discovery_holds_no_lock_while_it_waits_for_the_network() -> None:
    """A slow ``/api/peers`` must not block the sessions that read the fleet."""
    release = threading.Event()
    answer = peers("p1", ("p1", SEED, ["a"], True))

    def slow(url: str, token: str, timeout: float) -> Any:
        release.wait(10)
        return answer

    fleet = Fleet([SEED], AllowList.for_endpoints([SEED]), fetch=slow)
    asking = threading.Thread(target=fleet.discover)
    asking.start()
    try:
        started = time.monotonic()
        assert fleet.endpoints() == [SEED] and fleet.rows({})[0]["endpoint"] == SEED
        assert fleet.discover() is True  # someone is asking: no second request, no wait
        assert time.monotonic() - started < 1.0
    finally:
        release.set()
        asking.join(10)
    assert "p1" in fleet.processes


def test_discovery_gives_up_at_its_deadline() -> None:
    with trickling_server() as slow:
        listing = peers("p1", ("p1", SEED, [], True))
        seeds = [slow, slow + "/again", slow + "/third"]

        def fetch(url: str, token: str, timeout: float) -> Any:
            return fetch_peers(slow, token, timeout)

        fleet = Fleet(seeds, AllowList.for_endpoints(seeds), timeout=1.0, deadline=1.5, fetch=fetch)
        started = time.monotonic()
        assert fleet.discover() is False
        assert time.monotonic() - started < 3.0
        assert "timed out" in fleet.error and "ran out of time" in fleet.error
        del listing


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_dead_process_is_kept_for_a_while_then_forgotten() -> None:
    clock = Clock()
    fetch = FakeFetch({SEED: peers("p1", ("p1", SEED, [], True), ("p2", None, ["b"], True))})
    fleet = Fleet(
        [SEED], AllowList.for_endpoints([SEED]), forget_after=60.0, fetch=fetch, clock=clock
    )
    fleet.discover()
    fetch.answers[SEED] = peers("p1", ("p1", SEED, [], True), ("p2", None, ["b"], False))
    clock.now += 59.0
    fleet.discover()
    assert fleet.processes["p2"].alive is False and fleet.processes["p2"].services == ["b"]
    fetch.answers[SEED] = peers("p1", ("p1", SEED, [], True))  # the endpoint forgot it too
    clock.now += 2.0
    fleet.discover()
    assert list(fleet.processes) == ["p1"]


def test_a_full_table_makes_room_for_a_live_process_by_dropping_a_dead_one() -> None:
    clock = Clock()
    entries: list[tuple[str, Any, list[str], bool]]
    entries = [(f"p{i}", None, [], i != 7) for i in range(256)]
    fetch = FakeFetch({SEED: peers("me", *entries)})
    fleet = Fleet([SEED], AllowList.for_endpoints([SEED]), fetch=fetch, clock=clock)
    fleet.discover()
    assert len(fleet.processes) == 256
    fetch.answers[SEED] = peers("me", ("new-dead", None, [], False), ("new", None, [], True))
    fleet.discover()
    assert len(fleet.processes) == 256
    assert "new" in fleet.processes and "p7" not in fleet.processes
    assert "new-dead" not in fleet.processes
    fetch.answers[SEED] = peers("me", ("newer", None, [], True))  # no dead one left
    fleet.discover()
    assert "newer" not in fleet.processes


def test_the_seed_advertising_another_url_is_not_polled_twice() -> None:
    fetch = FakeFetch({SEED: peers("p1", ("p1", "http://10.0.0.1:9999", ["a"], True))})
    fleet = Fleet([SEED], AllowList.for_endpoints([SEED]), fetch=fetch)
    fleet.discover()
    assert fleet.endpoints() == [SEED]
    assert [(r["process"], r["endpoint"]) for r in fleet.rows({})] == [("p1", SEED)]


def test_an_answering_endpoint_whose_heartbeats_stopped_says_so() -> None:
    other = "http://10.0.0.1:9500"
    fetch = FakeFetch({SEED: peers("p1", ("p1", SEED, [], True), ("p2", other, [], False))})
    fleet = Fleet([SEED], SAME_HOST, fetch=fetch)
    fleet.discover()
    row = fleet.rows({other: State(True, 1.0)})[1]
    assert (row["process"], row["status"], row["note"]) == (
        "p2", "up", "endpoint answers, heartbeats stopped",
    )  # fmt: skip
