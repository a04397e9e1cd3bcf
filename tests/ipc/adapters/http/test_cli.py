"""``jeeves-ipc serve-http`` as a user runs it: a subprocess serving an async factory."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2

from tests.helpers import stop_process

ROOT = Path(__file__).parents[4]
AUTH = {"Authorization": "Bearer t"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve(*options: str) -> Iterator[int]:
    """``serve-http`` of the test target with ``options``, answering; yields its port."""
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
            *options,
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(150):
            try:
                httpx2.get(f"http://127.0.0.1:{port}/openapi.json", headers=AUTH, timeout=1)
                break
            except httpx2.TransportError:
                time.sleep(0.1)
        yield port
    finally:
        stop_process(proc)


def test_serve_http_command() -> None:
    with serve() as port:
        base = f"http://127.0.0.1:{port}"
        r = httpx2.get(f"{base}/openapi.json", headers=AUTH, timeout=5)
        assert r.status_code == 200 and "/v1/query/GetBalance" in r.json()["paths"]
        r = httpx2.post(f"{base}/v1/query/GetBalance", json={"account": "a"}, headers=AUTH)
        assert r.json() == {"type": "Balance", "result": {"account": "a", "cents": 1200}}
        r = httpx2.get(f"{base}/asyncapi.json", headers=AUTH)
        assert r.json()["servers"]["http"]["host"] == f"127.0.0.1:{port}"


HEAD = (
    b"POST /v1/query/GetBalance HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\n"
    b"Content-Type: application/json\r\n"
)


def _read_all(sock: socket.socket) -> bytes:
    out = b""
    while chunk := sock.recv(4096):  # until the server closes (the socket's timeout: fail)
        out += chunk
    return out


def test_serve_http_bounds_slow_and_large_requests() -> None:
    options = ("--read-timeout", "0.5", "--limit-concurrency", "3", "--max-header-bytes", "2048")
    with serve(*options) as port:
        # A body that stops coming: 408 problem, connection closed.
        with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
            s.sendall(HEAD + b"Content-Length: 100\r\n\r\n{")
            answer = _read_all(s)
        assert answer.startswith(b"HTTP/1.1 408") and b"request-timeout" in answer
        # Headers over the bound: 400 and closed.
        with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
            s.sendall(HEAD + b"X-Pad: " + b"a" * 4096 + b"\r\n\r\n")
            assert _read_all(s).startswith(b"HTTP/1.1 400")
        # Tricklers holding every slot: others are shed with 503, not queued for ever.
        tricklers = [socket.create_connection(("127.0.0.1", port), timeout=20) for _ in range(3)]
        try:
            for t in tricklers:
                t.sendall(HEAD)  # headers never finished
            time.sleep(0.3)
            r = httpx2.post(
                f"http://127.0.0.1:{port}/v1/query/GetBalance",
                json={"account": "a"},
                headers=AUTH,
                timeout=10,
            )
            assert r.status_code == 503
        finally:
            for t in tricklers:
                t.close()
        time.sleep(0.3)
        r = httpx2.post(
            f"http://127.0.0.1:{port}/v1/query/GetBalance",
            json={"account": "a"},
            headers=AUTH,
            timeout=10,
        )
        assert r.status_code == 200


def test_serve_http_refuses_a_target_that_is_no_bus() -> None:
    # Not served quietly on the global bus: the process ends and says why.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    for target, said in (
        ("tests.ipc.adapters.http.served:forgot_return", "TARGET gave NoneType"),
        ("tests.ipc.adapters.http.messages:enum", "TARGET gave module"),
        ("tests.ipc.adapters.http.nosuch:build", "cannot load 'tests.ipc.adapters.http.nosuch"),
    ):
        argv = ["serve-http", target, "--port", str(_free_port())]
        done = subprocess.run(
            [sys.executable, "-m", "jeeves_control_tower.cli", *argv],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode != 0 and said in done.stderr, done.stderr[-2000:]
