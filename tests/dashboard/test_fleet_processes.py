"""Fleet discovery across real processes on a real broker (Redis and NATS).

Each worker (``tests/dashboard/fleet_worker.py``) is a separate OS process running a bus,
a coordinator, a broker transport, ``RemoteServices`` and an advertised observability
endpoint. The dashboard side (``dashboard.fleet`` and ``dashboard.source``) is given one
endpoint and must find the others over HTTP.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
from collections.abc import AsyncIterator, Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from dashboard.fleet import AllowList, Fleet
from dashboard.source import EndpointState, poll

from tests import brokers
from tests.conformance.conftest import nats_cleanup
from tests.ipc.adapters.cluster import KINDS, ROOT, Worker, new_prefix

TOKEN = "fleet-s3cret"
DEADLINE = 30.0


class Fleetwide:
    """Worker processes of one fleet on one broker."""

    def __init__(self, kind: str, url: str) -> None:
        self.kind, self.url, self.prefix = kind, url, new_prefix(kind)
        self.workers: list[Worker] = []

    async def spawn(self, **opts: Any) -> Worker:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.dashboard.fleet_worker",
            self.kind, self.url, self.prefix, json.dumps(opts),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'src'}"},
        )  # fmt: skip
        worker = Worker(proc)
        self.workers.append(worker)
        await worker.wait_ready(timeout=60)
        return worker

    async def close(self) -> None:
        for worker in self.workers:
            await worker.stop()
        if self.kind == "nats":
            await nats_cleanup(self.url, self.prefix)


@pytest.fixture(params=KINDS)
async def fleetwide(request: pytest.FixtureRequest) -> AsyncIterator[Fleetwide]:
    kind = request.param
    url = brokers.require(
        *((brokers.REDIS_URL, "Redis") if kind == "redis" else (brokers.NATS_URL, "NATS"))
    )
    cluster = Fleetwide(kind, url)
    try:
        yield cluster
    finally:
        await cluster.close()


def ready(worker: Worker, key: str) -> str:
    """What the worker said when it was ready (``url``, ``process``)."""
    value: str = next(line[key] for line in worker.lines if "ready" in line)
    return value


class Dashboard:
    """What the Streamlit app does each refresh, without Streamlit: discover, then poll."""

    def __init__(self, seed: str, allow: AllowList | None = None, token: str = "") -> None:
        self.fleet = Fleet([seed], allow or AllowList.for_endpoints([seed]), token=token)
        self.states: dict[str, EndpointState] = {}
        self.records: list[dict[str, Any]] = []
        self.token = token

    def refresh(self) -> None:
        self.fleet.discover(down={u for u, s in self.states.items() if s.up is False})
        for url in self.fleet.endpoints():
            state = self.states.setdefault(url, EndpointState(url))
            token = self.token if self.fleet.allow.trusts(url) else ""  # as the app does
            self.records = poll(state, self.records, 1000, token)

    def row(self, process: str) -> dict[str, Any]:
        rows = [r for r in self.fleet.rows(self.states) if r["process"] == process]
        assert len(rows) == 1, rows
        return rows[0]

    async def until(self, check: Callable[[], bool], what: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE
        while True:
            await asyncio.to_thread(self.refresh)
            if check():
                return
            if loop.time() > deadline:
                raise AssertionError(f"not within {DEADLINE}s: {what}; rows={self.rows()}")
            await asyncio.sleep(0.1)

    def rows(self) -> list[dict[str, Any]]:
        return self.fleet.rows(self.states)


def services_of(state: EndpointState) -> set[str]:
    return {s["name"] for s in state.services.get("services", [])}


async def test_one_endpoint_finds_the_fleet_and_a_dead_process_stays_with_its_last_data(
    fleetwide: Fleetwide,
) -> None:
    a = await fleetwide.spawn(services=["alpha"])
    b = await fleetwide.spawn(services=["beta"])
    c = await fleetwide.spawn(services=["gamma", "delta"])
    urls = {w: ready(w, "url") for w in (a, b, c)}
    pids = {w: ready(w, "process") for w in (a, b, c)}
    # The workers listen on other ports of the seed's host: allowed as $JEEVES_FLEET_ALLOW
    # would allow them (by default only the given endpoint's exact origin is followed).
    dash = Dashboard(urls[a], AllowList.for_endpoints([urls[a]], "http://127.0.0.1"))

    def everyone_up() -> bool:
        rows = {r["process"]: r for r in dash.rows()}
        return set(dash.fleet.endpoints()) == set(urls.values()) and all(
            rows.get(pids[w], {}).get("status") == "up" for w in (a, b, c)
        )

    await dash.until(everyone_up, "all three processes found and up")
    assert dash.row(pids[a])["endpoint"] == urls[a]
    assert dash.row(pids[b]) | {"last_seen": None} == {
        "process": pids[b], "endpoint": urls[b], "status": "up", "last_seen": None,
        "services": ["beta"], "note": "",
    }  # fmt: skip
    assert sorted(dash.row(pids[c])["services"]) == ["delta", "gamma"]
    # Each process's own endpoint is polled: its registry lists its local services.
    assert {"alpha"} <= services_of(dash.states[urls[a]])
    assert {"gamma", "delta"} <= services_of(dash.states[urls[c]])

    c.kill()
    await c.proc.wait()
    await dash.until(lambda: dash.row(pids[c])["status"] == "down", "the killed process down")
    dead = dash.row(pids[c])
    assert dead["endpoint"] == urls[c] and sorted(dead["services"]) == ["delta", "gamma"]
    assert dead["last_seen"] is not None
    assert {"gamma", "delta"} <= services_of(dash.states[urls[c]])  # last data kept
    assert dash.row(pids[b])["status"] == "up"

    # The heartbeats say so too: the seed's /api/peers marks it not alive after its ttl.
    await dash.until(
        lambda: dash.fleet.processes[pids[c]].alive is False,
        "the seed's heartbeat table marks it dead",
    )

    # The seed itself dies: discovery goes on through a process it found.
    a.kill()
    await a.proc.wait()
    await dash.until(lambda: dash.row(pids[a])["status"] == "down", "the seed down")
    assert dash.fleet.discover(down={urls[a], urls[c]}) is True
    assert dash.row(pids[b])["status"] == "up"


class Recorder:
    """An HTTP server that records the Authorization header of every request; with
    ``redirect`` it answers 302 to that base URL (same path)."""

    def __init__(self, host: str, redirect: str | None = None) -> None:
        self.seen: list[tuple[str, str | None]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                recorder.seen.append((self.path, self.headers.get("Authorization")))
                if redirect:
                    self.send_response(302)
                    self.send_header("Location", redirect + self.path)
                    self.send_header("Content-Length", "0")
                else:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", "2")
                self.end_headers()
                if not redirect:
                    self.wfile.write(b"{}")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


async def test_a_disallowed_advertised_url_is_never_fetched_and_the_token_stays_home(
    fleetwide: Fleetwide,
) -> None:
    elsewhere = Recorder("127.0.0.2")  # another host: not in the default allow-list
    bouncer = Recorder("127.0.0.1", redirect=elsewhere.url)  # allowed, redirects away
    try:
        seed = await fleetwide.spawn(services=["alpha"], token=TOKEN)
        rogue = await fleetwide.spawn(services=["beta"], token=TOKEN, advertise=elsewhere.url)
        bounce = await fleetwide.spawn(services=["gamma"], token=TOKEN, advertise=bouncer.url)
        seed_url = ready(seed, "url")
        rogue_id, bounce_id = ready(rogue, "process"), ready(bounce, "process")

        # By default only the given endpoint's exact origin: another port of its host is
        # whoever listens there, so it is neither followed nor sent the token.
        default = Dashboard(seed_url, token=TOKEN)
        await default.until(
            lambda: {rogue_id, bounce_id} <= set(default.fleet.processes),
            "both advertised URLs heard",
        )
        for _ in range(3):
            await asyncio.to_thread(default.refresh)
        assert default.fleet.endpoints() == [seed_url]
        assert default.row(bounce_id)["note"] == "not followed: URL not allowed"
        assert bouncer.seen == [] and elsewhere.seen == []

        # The configuration names the bouncer's origin: followed with the token, and its
        # redirect is not followed.
        named = AllowList.for_endpoints([seed_url], bouncer.url)
        dash = Dashboard(seed_url, named, token=TOKEN)
        await dash.until(
            lambda: {rogue_id, bounce_id} <= set(dash.fleet.processes) and bool(bouncer.seen),
            "both advertised URLs heard and the allowed one fetched",
        )
        assert ("/api/services", f"Bearer {TOKEN}") in bouncer.seen  # named: token sent
        assert dash.row(bounce_id)["status"] == "down"  # a 302 is not an answer
        assert elsewhere.url not in dash.fleet.endpoints()
        row = dash.row(rogue_id)
        assert row["endpoint"] == elsewhere.url and row["note"] == "not followed: URL not allowed"
        assert row["status"] == "up" and row["services"] == ["beta"]  # from the heartbeats
        for _ in range(5):  # several more refreshes: still nothing reaches the other host
            await asyncio.to_thread(dash.refresh)
        assert elsewhere.seen == []

        # The other host allowed by a broad rule (any port) is followed, without the token.
        broad = AllowList.for_endpoints([seed_url], "http://127.0.0.2")
        opened = Dashboard(seed_url, broad, token=TOKEN)
        await opened.until(lambda: bool(elsewhere.seen), "the allowed other host fetched")
        assert {auth for _, auth in elsewhere.seen} == {None}
    finally:
        elsewhere.close()
        bouncer.close()
