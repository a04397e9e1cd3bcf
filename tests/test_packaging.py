"""The wheel, the way a user gets it: ``pip install "<wheel>[dashboard]"`` into a fresh
virtualenv outside the repository, then ``jeeves-ipc`` run from a directory with no checkout.

pip resolves the dependencies from the configured index (network, or a local mirror/cache).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import tomllib
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.dashboard.browser import chromium, chromium_available, free_port
from tests.helpers import stop_process, unavailable

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
NOT_BUILT = shutil.ignore_patterns(
    ".*", "build", "dist", "*.egg-info", "__pycache__", "tests", "benchmarks", "deploy"
)


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path
    cwd: Path  # outside the repository, no checkout in sight

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)

    @property
    def env(self) -> dict[str, str]:
        hide = {"PYTHONPATH", "JEEVES_ENDPOINTS", "JEEVES_TOKEN", "VIRTUAL_ENV"}
        return {k: v for k, v in os.environ.items() if k not in hide}

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv, cwd=self.cwd, env=self.env, capture_output=True, text=True, timeout=120
        )


def _check(argv: list[str], cwd: Path) -> None:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{argv[:4]} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    work = tmp_path_factory.mktemp("wheel")
    assert ROOT not in work.parents
    # Build from a copy: setuptools builds in-tree, and a stale build/ would leak into the wheel.
    source = work / "source"
    shutil.copytree(ROOT, source, ignore=NOT_BUILT)
    started = time.monotonic()
    _check([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", "dist", "."], source)
    (wheel,) = (source / "dist").glob("*.whl")
    built = time.monotonic()
    venv = work / "venv"
    _check([sys.executable, "-m", "venv", str(venv)], work)
    _check(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", f"{wheel}[dashboard]"], work
    )
    print(f"wheel built in {built - started:.1f}s, installed in {time.monotonic() - built:.1f}s")
    cwd = work / "elsewhere"
    cwd.mkdir()
    yield Installed(wheel, venv, cwd)


def test_the_wheel_carries_the_dashboard_and_grafana_inside_the_package(
    installed: Installed,
) -> None:
    names = zipfile.ZipFile(installed.wheel).namelist()
    top_level = {name.split("/")[0] for name in names if not name.split("/")[0].endswith("-info")}
    assert top_level == {"jeeves_control_tower"}  # never a top-level ``dashboard``/``grafana``
    sources = {
        f"jeeves_control_tower/{p.relative_to(ROOT / 'src' / 'jeeves_control_tower').as_posix()}"
        for p in (ROOT / "src" / "jeeves_control_tower").rglob("*.py")
    }
    assert sources <= set(names), sources - set(names)
    for module in ("app", "data", "graph", "series", "source"):
        assert f"jeeves_control_tower/dashboard/{module}.py" in names
    assert "jeeves_control_tower/grafana/dashboards/jeeves-commbus.json" in names
    assert "jeeves_control_tower/grafana/provisioning/datasources/prometheus.yml" in names
    for contract in ("commbus.proto", "commbus_pb2.py", "commbus_pb2.pyi"):  # the gRPC contract
        assert f"jeeves_control_tower/ipc/adapters/grpc/{contract}" in names
    done = installed.run(installed.bin("python"), "-c", "import dashboard")
    assert "No module named 'dashboard'" in done.stderr


def test_version(installed: Installed) -> None:
    done = installed.run(installed.bin("jeeves-ipc"), "--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"jeeves-ipc {PROJECT['version']}"


def test_grafana_export_writes_the_shipped_files(installed: Installed, tmp_path: Path) -> None:
    done = installed.run(installed.bin("jeeves-ipc"), "grafana", "export", str(tmp_path / "g"))
    assert done.returncode == 0, done.stderr
    tracked = subprocess.run(
        ["git", "ls-files", "grafana"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    expected = {Path(p).relative_to("grafana") for p in tracked if not p.endswith(".py")}
    written = {p.relative_to(tmp_path / "g") for p in (tmp_path / "g").rglob("*") if p.is_file()}
    assert expected and written == expected
    for relative in written:
        assert (tmp_path / "g" / relative).read_bytes() == (
            ROOT / "grafana" / relative
        ).read_bytes()


@pytest.mark.browser
def test_dashboard_serves_the_demo_page(installed: Installed) -> None:
    if not chromium_available():
        unavailable("chromium/chromedriver are not installed")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    port = free_port()
    proc = subprocess.Popen(
        [installed.bin("jeeves-ipc"), "dashboard", "--port", str(port)],
        cwd=installed.cwd, env=installed.env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while not _healthy(url):
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the Streamlit server did not answer"
            time.sleep(0.3)
        with chromium() as driver:
            driver.get(url)
            # The page ran the installed app: title, the in-process demo, and its registry.
            WebDriverWait(driver, 120).until(
                lambda d: (
                    "Jeeves Control Tower" in d.find_element(By.TAG_NAME, "body").text
                    and "showing a demo running in this process" in d.page_source
                    and d.find_elements(By.CSS_SELECTOR, '[data-testid="stDataFrame"]')
                )
            )
            assert not driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')
    finally:
        stop_process(proc, timeout=15)
        if proc.stderr:
            proc.stderr.close()


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False
