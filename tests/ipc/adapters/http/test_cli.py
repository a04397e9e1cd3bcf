"""``jeeves-ipc serve-http`` as a user runs it: a subprocess serving an async factory."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx2

from tests.helpers import stop_process

ROOT = Path(__file__).parents[4]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_http_command() -> None:
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jeeves_control_tower.cli",
            "serve-http",
            "tests.ipc.adapters.http.served:build",
            "--messages",
            "tests.ipc.adapters.http.served:REGISTRY",
            "--port",
            str(port),
            "--token",
            "t",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        auth = {"Authorization": "Bearer t"}
        for _ in range(100):
            try:
                r = httpx2.get(f"{base}/openapi.json", headers=auth, timeout=1)
                break
            except httpx2.TransportError:
                time.sleep(0.1)
        assert r.status_code == 200 and "/v1/query/GetBalance" in r.json()["paths"]
        r = httpx2.post(f"{base}/v1/query/GetBalance", json={"account": "a"}, headers=auth)
        assert r.json() == {"type": "Balance", "result": {"account": "a", "cents": 1200}}
        r = httpx2.get(f"{base}/asyncapi.json", headers=auth)
        assert r.json()["servers"]["http"]["host"] == f"127.0.0.1:{port}"
    finally:
        stop_process(proc)
