"""Every panel query answered by a real Prometheus scraping the running demo."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jeeves_control_tower.demo import run_demo_in_background
from tests.helpers import stop_process

from ..demo.helpers import FAST, get_json, wait_for_traffic, wait_until
from .helpers import expressions, load_dashboard, require_tool, variable_queries

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Prometheus of our own on a free port, scraping a demo of our own every second."""
    binary = require_tool("prometheus")
    tmp = tmp_path_factory.mktemp("prometheus")
    with run_demo_in_background(config=FAST) as demo:
        target = demo.url.removeprefix("http://")
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {"job_name": "jeeves-demo", "static_configs": [{"targets": [target]}]}
            ],
        }
        (tmp / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
        port = _free_port()
        log = (tmp / "prometheus.log").open("wb")
        proc = subprocess.Popen(
            [binary, f"--config.file={tmp / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
             "--enable-feature=exemplar-storage", "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until(lambda: _ready(url), 30, "prometheus to be ready")
            wait_until(lambda: _up(url), 60, "the first scrape of the demo")
            wait_for_traffic(demo.url)
            yield url
        finally:
            stop_process(proc, timeout=15)
            log.close()


def _ready(url: str) -> bool:
    with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
        return bool(response.status == 200)


def _query(url: str, expr: str) -> list[dict[str, Any]]:
    body = get_json(f"{url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}")
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def _up(url: str) -> bool:
    result = _query(url, 'up{job="jeeves-demo"}')
    return bool(result) and result[0]["value"][1] == "1"


def test_every_panel_query_returns_data(prometheus: str) -> None:
    pending = dict(expressions(load_dashboard()))
    deadline = time.monotonic() + 90
    while pending and time.monotonic() < deadline:
        for title, expr in list(pending.items()):
            if _query(prometheus, expr):
                del pending[title]
        if pending:
            time.sleep(1)
    assert not pending, f"panel queries without data after 90s: {sorted(pending)}"


def test_template_variables_have_values(prometheus: str) -> None:
    for query in variable_queries(load_dashboard()):
        metric, label = query.removeprefix("label_values(").removesuffix(")").split(", ")
        params = urllib.parse.urlencode({"match[]": metric})
        values = get_json(f"{prometheus}/api/v1/label/{label}/values?{params}")["data"]
        assert values, query
        if label == "service":
            assert {"flow_service", "billing", "summarizer"} <= set(values)


def test_latency_exemplars_carry_trace_ids(prometheus: str) -> None:
    def exemplar_trace_ids() -> set[str]:
        now = time.time()
        params = urllib.parse.urlencode(
            {"query": "commbus_dispatch_duration_seconds_bucket", "start": now - 300, "end": now}
        )
        series = get_json(f"{prometheus}/api/v1/query_exemplars?{params}")["data"]
        return {e["labels"].get("trace_id", "") for s in series for e in s["exemplars"]}

    wait_until(lambda: bool(exemplar_trace_ids()), 30, "exemplars on the dispatch histogram")
    assert all(len(t) == 32 for t in exemplar_trace_ids())


def test_deploy_config_scrapes_the_demo_port() -> None:
    text = (Path(__file__).resolve().parents[2] / "deploy" / "prometheus.yml").read_text()
    assert 'targets: ["demo:9464"]' in text and "metrics_path: /metrics" in text
