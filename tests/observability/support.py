"""Messages, envelopes and an HTTP helper shared by the telemetry tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from jeeves_control_tower.ipc import CommBusCoordinator
from jeeves_control_tower.observability.history import History
from jeeves_control_tower.types import DispatchTarget, Envelope, RequestContext, ServiceDescriptor


@dataclass
class Stored:
    item_id: str = "1"
    secret: str = "s3cr3t"
    category: str = "event"


@dataclass
class DoThing:
    n: int = 1
    category: str = "command"


@dataclass
class GetState:
    key: str = "k"
    category: str = "query"


def envelope(rid: str = "r1", **kw: Any) -> Envelope:
    return Envelope(request_context=RequestContext(request_id=rid, capability="run", **kw))


def target(service: str = "svc", **kw: Any) -> DispatchTarget:
    return DispatchTarget(service_name=service, method=kw.pop("method", "run"), **kw)


def register(
    c: CommBusCoordinator, name: str = "svc", handler: Any = None, **kw: Any
) -> ServiceDescriptor:
    d = ServiceDescriptor(name=name, service_type=kw.pop("service_type", "worker"), **kw)
    assert c.register_service(d)
    if handler is not None:
        c.register_handler(name, handler)
    return d


async def echo(e: Envelope) -> Envelope:
    return e


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http_get(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> Response:
    """A blocking request (deliberately: the server must answer without the event loop)."""
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return Response(r.status, dict(r.headers.items()), r.read())
    except urllib.error.HTTPError as e:
        with e:
            return Response(e.code, dict(e.headers.items()), e.read())


class CountingHistory(History):
    """Counts its snapshots and the most computed at once; each takes ``pause`` seconds
    longer (the cost of a full history, without filling one)."""

    def __init__(self, pause: float) -> None:
        super().__init__()
        self.pause = pause
        self.calls = self.running = self.most = 0
        self._counting = threading.Lock()

    def snapshot(self, window: float, step: int) -> dict[str, Any]:
        with self._counting:
            self.calls += 1
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            time.sleep(self.pause)
            return super().snapshot(window, step)
        finally:
            with self._counting:
                self.running -= 1


def run_fresh_process(script: str, *args: str, unset: tuple[str, ...] = ()) -> Any:
    """Run ``script`` (dedented) in a new interpreter with this one's ``sys.path`` and the
    environment variables ``unset`` removed (what sets a global OpenTelemetry provider can
    only do it once per process); the JSON it prints."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    for name in unset:
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)
