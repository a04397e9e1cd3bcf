"""``jeeves-ipc``: version, help, ``grafana export`` and ``dashboard`` from a checkout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest

from jeeves_control_tower.cli import main
from tests.dashboard.browser import free_port
from tests.helpers import stop_process

ROOT = Path(__file__).resolve().parents[1]


def test_version_is_the_distribution_version(capsys: pytest.CaptureFixture[str]) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"jeeves-ipc {version}"


def test_rate_help_shows_its_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "operations per second (default 20)" in help_text


def test_grafana_export_writes_every_deployable_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["grafana", "export", str(tmp_path / "out")]) == 0
    written = {p.relative_to(tmp_path / "out") for p in (tmp_path / "out").rglob("*")}
    files = {p for p in written if (tmp_path / "out" / p).is_file()}
    assert Path("dashboards/jeeves-commbus.json") in files
    assert Path("provisioning/datasources/prometheus.yml") in files
    assert Path("provisioning/dashboards/dashboards.yml") in files
    assert not [p for p in written if p.suffix in {".py", ".pyc"} or "__pycache__" in p.parts]
    for relative in files:
        assert (tmp_path / "out" / relative).read_bytes() == (
            ROOT / "grafana" / relative
        ).read_bytes()
    assert f"Wrote {len(files)} files" in capsys.readouterr().err


def test_grafana_export_keeps_existing_files_unless_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mine = tmp_path / "dashboards" / "jeeves-commbus.json"
    mine.parent.mkdir()
    mine.write_text("mine")
    assert main(["grafana", "export", str(tmp_path)]) == 1
    assert mine.read_text() == "mine"
    assert "--force" in capsys.readouterr().err
    assert not (tmp_path / "provisioning").exists()  # nothing written when refusing
    assert main(["grafana", "export", "--force", str(tmp_path)]) == 0
    assert (
        mine.read_bytes() == (ROOT / "grafana" / "dashboards" / "jeeves-commbus.json").read_bytes()
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["dashboard", "--endpoint", "ftp://host:9464"],
        ["dashboard", "--endpoint", "127.0.0.1:9464"],
        ["dashboard", "--port", "70000"],
        ["grafana"],
        ["grafana", "export"],
    ],
)
def test_bad_arguments_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2


def test_dashboard_without_the_extra_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "streamlit", None)  # import streamlit -> ImportError
    assert main(["dashboard"]) == 1
    assert "pip install 'jeeves-control-tower[dashboard]'" in capsys.readouterr().err


@pytest.mark.slow
def test_dashboard_serves_the_checkouts_app(tmp_path: Path) -> None:
    """From a checkout (``PYTHONPATH=src``-style), ``jeeves-ipc dashboard`` serves
    ``dashboard/app.py`` of that checkout; the installed wheel is tests/test_packaging.py."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "jeeves_control_tower.cli", "dashboard",
         "--endpoint", "http://127.0.0.1:9/", "--port", str(port)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health") as r:
                    assert r.status == 200
                    break
            except OSError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                assert time.monotonic() < deadline, "the Streamlit server did not answer"
                time.sleep(0.3)
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
        assert str(ROOT / "dashboard" / "app.py").encode() in cmdline  # exec'd: same PID
    finally:
        stop_process(proc, timeout=15)
        if proc.stdout:
            proc.stdout.close()


async def test_hub_serves_processes_until_sigterm(tmp_path: Path) -> None:
    """``jeeves-ipc hub --port 0 --endpoint-port 0``: two buses joined to it see each other,
    its endpoint lists them at /api/peers; SIGTERM stops it."""
    import asyncio
    import signal

    from jeeves_control_tower.ipc import DynamicQuery, InMemoryCommBus
    from jeeves_control_tower.ipc.adapters.grpc import GrpcTransport

    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "jeeves_control_tower.cli", "hub", "--port", "0",
        "--endpoint-port", "0", cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        assert line.startswith("Jeeves hub listening on 127.0.0.1:")
        address = line.rsplit(" ", 1)[1].strip()
        a, b = InMemoryCommBus(instrument=False), InMemoryCommBus(instrument=False)
        ta = await GrpcTransport.connect(a, address, metrics=False)
        tb = await GrpcTransport.connect(b, address, metrics=False)
        b.register_handler("cli.ping", lambda q: "pong")
        await tb.sync()
        assert await a.query(DynamicQuery("cli.ping", {})) == "pong"
        endpoint = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().split()[1]

        def fleet() -> set[str]:
            with urllib.request.urlopen(f"{endpoint}/api/peers", timeout=5) as response:
                return {p["process"] for p in json.load(response)["peers"] if p["alive"]}

        deadline = time.monotonic() + 20
        while {ta.process_id, tb.process_id} - await asyncio.to_thread(fleet):
            assert time.monotonic() < deadline, "the endpoint does not list the processes"
            await asyncio.sleep(0.2)
        await ta.close()
        await tb.close()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
