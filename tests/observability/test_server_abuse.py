"""The standalone endpoint under hostile clients, through real sockets: tricklers
(slowloris), bodies and pipelining, malformed and oversized requests. Every error is JSON
with ``Cache-Control: no-store`` and no version banner."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterable, Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from jeeves_control_tower.observability import FlowRecorder, ObservabilityServer

from .rawhttp import NonReaders, RawResponse, Trickler, exchange, read_response, wait_for
from .support import http_get

GET_HEALTH = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
CHUNKED = b"GET /healthz HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nXXXXX\r\n0\r\n\r\n"


@pytest.fixture
def tricklers() -> Iterator[list[Trickler]]:
    made: list[Trickler] = []
    yield made
    for t in made:
        t.stop()


def start(request_timeout: float = 5.0, max_connections: int = 32) -> ObservabilityServer:
    return ObservabilityServer(
        CollectorRegistry(),
        FlowRecorder(),
        request_timeout=request_timeout,
        max_connections=max_connections,
    )


def assert_json_error(response: RawResponse, status: int) -> None:
    assert response.status == status
    assert response.headers["content-type"] == "application/json"
    assert isinstance(response.json()["error"], str)
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["server"] == "jeeves-observability"


def test_a_trickler_is_closed_at_the_request_deadline(tricklers: list[Trickler]) -> None:
    with start(request_timeout=1.0, max_connections=4) as srv:
        trickler = Trickler(srv.port, interval=0.3)
        tricklers.append(trickler)
        wait_for(lambda: trickler.closed_at is not None, timeout=10)
        assert trickler.lasted is not None and 0.9 <= trickler.lasted < 3.0
        assert trickler.sent >= 3  # it kept sending until the deadline
        head, _, body = trickler.answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 ")
        assert b"Cache-Control: no-store" in head and b'"error"' in body


def test_tricklers_at_the_connection_cap_do_not_lock_out_the_scraper(
    tricklers: list[Trickler],
) -> None:
    # A request deadline far beyond the test's length: no trickler may leave by timing out
    # (that would free a slot without shedding, as it did on a loaded machine), so every
    # slot the scraper gets is one the cap shed.
    with start(request_timeout=60.0, max_connections=4) as srv:

        def live() -> int:
            return sum(t.closed_at is None for t in tricklers)

        for _ in range(3):
            wait_for(lambda: srv.open_connections == live())  # only tricklers connected
            while live() < srv.max_connections:
                tricklers.append(Trickler(srv.port, interval=0.3))
            wait_for(lambda: srv.open_connections == srv.max_connections)
            for path in ("/healthz", "/metrics"):
                began = time.monotonic()
                assert http_get(f"{srv.url}{path}").status == 200
                assert time.monotonic() - began < 5.0  # not held until a deadline (60 s)
        assert srv.shed_connections >= 3  # at least one per round
        shed = [t for t in tricklers if t.closed_at is not None]
        assert shed and all(t.answer == b"" for t in shed)  # shed silently
        # the oldest waiting connection goes first
        assert tricklers[0].closed_at is not None


def test_an_idle_keep_alive_connection_times_out_and_is_shed_first() -> None:
    with start(request_timeout=1.0, max_connections=1) as srv:
        # idle past the deadline: closed
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as idle:
            idle.sendall(GET_HEALTH)
            assert idle.recv(12) == b"HTTP/1.1 200"
            began = time.monotonic()
            while idle.recv(4096):
                pass
            assert 0.5 < time.monotonic() - began < 3.0
        # at the cap, a new connection sheds the idle one instead of being refused
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as held:
            wait_for(lambda: srv.open_connections == 1)
            responses, _ = exchange(srv.port, b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n")
            assert [r.status for r in responses] == [200]
            assert held.recv(4096) == b""  # ...and the idle one was closed, without a word
            assert srv.shed_connections == 1


def test_close_lets_go_of_open_connections_at_once(tricklers: list[Trickler]) -> None:
    srv = start(request_timeout=30.0)
    tricklers.extend(Trickler(srv.port) for _ in range(3))
    wait_for(lambda: srv.open_connections == 3)
    began = time.monotonic()
    srv.close()
    assert time.monotonic() - began < 2.0  # not at the 30 s request deadline
    wait_for(lambda: all(t.closed_at is not None for t in tricklers), timeout=5)


class _Blocking(Collector):
    """A collector that holds ``/metrics`` until released: a connection busy answering."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def collect(self) -> Iterable[GaugeMetricFamily]:
        self.entered.set()
        self.release.wait(10)
        yield GaugeMetricFamily("blocking", "held", value=1)


def test_a_busy_connection_is_never_shed() -> None:
    registry = CollectorRegistry()
    blocking = _Blocking()
    with ObservabilityServer(registry, FlowRecorder(), max_connections=1) as srv:
        registry.register(blocking)
        results: list[int] = []
        scrape = threading.Thread(
            target=lambda: results.append(http_get(f"{srv.url}/metrics").status)
        )
        scrape.start()
        assert blocking.entered.wait(10)
        responses, closed = exchange(srv.port, GET_HEALTH)
        assert (responses, closed) == ([], True)  # refused: the only slot is busy
        blocking.release.set()
        scrape.join(10)
        assert results == [200]


def test_a_declared_body_is_read_and_discarded_not_parsed_as_a_request() -> None:
    with start() as srv:
        data = (
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nXXXXX"
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        responses, closed = exchange(srv.port, data)
        assert [(r.status, r.json()) for r in responses] == [(200, {"status": "ok"})] * 2
        assert closed


def test_many_pipelined_requests_each_get_their_answer() -> None:
    with start() as srv:
        data = b"GET /healthz HTTP/1.1\r\nContent-Length: 2\r\n\r\nab" * 300
        data += b"GET /nope HTTP/1.1\r\nConnection: close\r\n\r\n"
        responses, closed = exchange(srv.port, data)
        assert [r.status for r in responses] == [200] * 300 + [404]
        assert closed


def test_errors_after_a_framed_request_keep_the_connection() -> None:
    with start() as srv:
        data = (
            b"GET /nope HTTP/1.1\r\n\r\n"
            b"POST /healthz HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
            b"GET /api/flow?limit=0 HTTP/1.1\r\n\r\n"
            b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n"
        )
        responses, closed = exchange(srv.port, data)
        assert [r.status for r in responses] == [404, 405, 400, 200]
        for response in responses[:3]:
            assert_json_error(response, response.status)
        assert responses[1].headers["allow"] == "GET, HEAD"
        assert closed


@pytest.mark.parametrize(
    ("request_head", "status"),
    [
        (b"GET /healthz HTTP/1.1\r\nContent-Length: 1000000\r\n\r\n", 413),
        (CHUNKED, 400),
        (b"GET /healthz HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"GET /healthz HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nXXXXX", 400),
        (b"GET /healthz HTTP/1.1\r\nContent-Length: abc\r\n\r\n", 400),
        (b"GET /healthz HTTP/1.1\r\nContent-Length: -5\r\n\r\n", 400),
    ],
)
def test_bodies_that_cannot_be_framed_are_refused_and_the_connection_closed(
    request_head: bytes, status: int
) -> None:
    with start() as srv:
        responses, closed = exchange(srv.port, request_head + GET_HEALTH)
        assert len(responses) == 1 and closed  # never a second answer from the body
        assert_json_error(responses[0], status)


def test_a_body_cut_short_is_refused() -> None:
    with start(request_timeout=2.0) as srv, socket.create_connection(("127.0.0.1", srv.port)) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc")
        s.shutdown(socket.SHUT_WR)
        s.settimeout(5)
        with s.makefile("rb") as stream:
            response = read_response(stream)
            assert response is not None
            assert_json_error(response, 400)


@pytest.mark.parametrize(
    ("request_head", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /healthz\r\n\r\n", 400),  # HTTP/0.9 is not spoken
        (b"GET / x /healthz HTTP/1.1\r\n\r\n", 400),
        (b"GET /healthz FTP/1.1\r\n\r\n", 400),
        (b"GET /healthz HTTP/2.0\r\n\r\n", 505),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", 414),
        (b"GET /healthz HTTP/1.1\r\n" + b"X-A: b\r\n" * 101 + b"\r\n", 431),
        (b"GET /healthz HTTP/1.1\r\nX-A: " + b"b" * 70_000 + b"\r\n\r\n", 431),
        (b"BREW /healthz HTTP/1.1\r\nConnection: close\r\n\r\n", 405),
        (b"XXXXXGET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n", 405),
    ],
)
def test_malformed_requests_get_json_errors(request_head: bytes, status: int) -> None:
    with start() as srv:
        responses, closed = exchange(srv.port, request_head)
        assert len(responses) == 1 and closed
        assert_json_error(responses[0], status)
        assert "python" not in responses[0].headers["server"].lower()


def _probe(port: int, path: str) -> bool:
    request = f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    try:
        responses, _ = exchange(port, request, timeout=3.0)
    except OSError:
        return False
    return [r.status for r in responses] == [200]


def test_clients_that_never_read_do_not_lock_out_the_scraper() -> None:
    registry = CollectorRegistry()
    counter = Counter("demo_total", "demo", ["service", "message_type"], registry=registry)
    for i in range(400):
        counter.labels(f"svc{i % 20}", f"Msg{i}").inc()
    with ObservabilityServer(registry, FlowRecorder()) as srv:  # default max_connections
        attack = NonReaders(srv.port, srv.max_connections, b"GET /metrics HTTP/1.1\r\n\r\n")
        try:
            wait_for(lambda: srv.open_connections == srv.max_connections)
            time.sleep(1.0)  # their answers fill the socket buffers; their sends block
            probes = [_probe(srv.port, path) for path in ("/healthz", "/metrics") * 20]
        finally:
            attack.stop()
        assert attack.connects >= srv.max_connections
        assert sum(probes) >= 0.95 * len(probes), probes
        assert srv.shed_connections > 0  # the attack did fill every slot


@pytest.mark.parametrize(
    "header",
    [
        b"Content-Length : 5\r\n",  # a space before the colon ends the header block
        b"Transfer-Encoding : chunked\r\n",
        b"bogus\r\nContent-Length: 5\r\n",  # a line without a colon hides what follows
    ],
)
def test_a_malformed_header_line_is_refused_and_the_body_never_parsed(header: bytes) -> None:
    with start() as srv:
        data = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + header + b"\r\nXXXXX" + GET_HEALTH
        responses, closed = exchange(srv.port, data)
        assert len(responses) == 1 and closed  # never an answer to "XXXXXGET ..."
        assert_json_error(responses[0], 400)
