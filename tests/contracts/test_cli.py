"""``jeeves-ipc asyncapi`` and ``jeeves-ipc serve-http`` as a user runs them."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import pytest

from jeeves_control_tower.cli import main
from tests.helpers import stop_process

ROOT = Path(__file__).parents[2]


def test_asyncapi_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "asyncapi.json"
    code = main(
        [
            "asyncapi",
            "--messages",
            "tests.contracts.served:REGISTRY",
            "--transport",
            "nats://localhost:4222",
            "--prefix",
            "shop",
            "-o",
            str(out),
        ]
    )
    assert code == 0
    doc = json.loads(out.read_text())
    assert doc["asyncapi"] == "3.0.0"
    assert doc["channels"]["nats.publish.OrderPlaced"]["address"] == "shop.evt.OrderPlaced"
    assert doc["channels"]["nats.send.ChargeCard"]["address"] == "shop.cmd.ChargeCard"
    args = ["asyncapi", "--messages", "tests.contracts.served:REGISTRY"]
    assert main([*args, "--transport", "redis://localhost:6379/0"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["channels"]["redis.publish.OrderPlaced"]["address"] == "jeeves:evt:OrderPlaced"
    assert main(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["channels"]["publish.OrderPlaced"]["address"] == "OrderPlaced"
    with pytest.raises(SystemExit):
        main(["asyncapi", "--transport", "kafka://x"])


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
            "tests.contracts.served:build",
            "--messages",
            "tests.contracts.served:REGISTRY",
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
