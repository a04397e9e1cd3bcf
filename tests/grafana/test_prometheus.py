"""Every panel query answered by a real Prometheus scraping two deployments: the demo
(in-memory bus) and a transport workload (two buses over Redis); the shipped alert rules
loaded and evaluated by the same Prometheus."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jeeves_control_tower.demo import run_demo_in_background
from tests import brokers
from tests.helpers import stop_process

from ..demo.helpers import FAST, get_json, wait_for_traffic, wait_until
from .helpers import (
    RULES,
    expressions,
    load_dashboard,
    metric_names,
    require_tool,
    substitute,
)
from .transport_workload import MESSAGE_TYPES, transport_workload

pytestmark = [pytest.mark.prometheus, pytest.mark.redis, pytest.mark.slow]

DEMO_JOB, TRANSPORT_JOB = "jeeves-demo", "jeeves-transport"
#: Families neither deployment produces, and why. Their panel queries must run and come back
#: empty; one that starts returning data must be taken off this list.
NOT_PRODUCED = {
    "commbus_transport_reconnects_total": "needs the broker connection to drop and return",
    "commbus_transport_redeliveries_total": (
        "needs a consumer to die holding an unacknowledged command for min_idle (30 s)"
    ),
    "commbus_transport_buffered_messages": (
        "a series exists only once a message was buffered while the broker was unreachable"
    ),
    "commbus_transport_dropped_events_total": (
        "an event lost in the loop iteration its connection closed: a race no steady load hits"
    ),
    "commbus_telemetry_errors_total": "counts failing telemetry hooks; a healthy process has none",
}
ALERTS = re.findall(r"^\s*- alert: (\w+)$", RULES.read_text(), re.MULTILINE)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Scraped:
    """The running Prometheus and what it scrapes."""

    def __init__(self, url: str, demo: str, transport: str) -> None:
        self.url, self.demo, self.transport = url, demo, transport


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scraped]:
    """A Prometheus of our own on a free port, scraping a demo and a transport workload of
    our own every second, with the shipped alert rules evaluated every second."""
    binary = require_tool("prometheus")
    redis = brokers.require(brokers.REDIS_URL, "Redis")
    tmp = tmp_path_factory.mktemp("prometheus")
    with (
        run_demo_in_background(config=FAST) as demo,
        transport_workload(redis, brokers.unique("jt:grafana:") + ":") as workload,
    ):
        target = demo.url.removeprefix("http://")
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {"job_name": DEMO_JOB, "static_configs": [{"targets": [target]}]},
                {"job_name": TRANSPORT_JOB, "static_configs": [{"targets": [workload]}]},
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
            wait_until(lambda: _up(url, DEMO_JOB), 60, "the first scrape of the demo")
            wait_until(lambda: _up(url, TRANSPORT_JOB), 60, "the first scrape of the workload")
            wait_for_traffic(demo.url)
            yield Scraped(url, target, workload)
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


def _up(url: str, job: str) -> bool:
    result = _query(url, f'up{{job="{job}"}}')
    return bool(result) and result[0]["value"][1] == "1"


def _produced(expr: str) -> bool:
    return not metric_names(expr) & set(NOT_PRODUCED)


def _answered(url: str, queries: dict[str, str], timeout: float = 90) -> None:
    """Until every query returns data; fails naming those that never did."""
    pending = dict(queries)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for title, expr in list(pending.items()):
            if _query(url, expr):
                del pending[title]
        if pending:
            time.sleep(1)
    assert not pending, f"panel queries without data after {timeout}s: {sorted(pending)}"


def test_every_panel_query_returns_data(prometheus: Scraped) -> None:
    queries = dict(expressions(load_dashboard()))
    produced = {title: expr for title, expr in queries.items() if _produced(expr)}
    excepted = set().union(*(metric_names(e) for e in queries.values() if not _produced(e)))
    assert excepted == set(NOT_PRODUCED)  # no stale exception
    _answered(prometheus.url, produced)
    for title, expr in queries.items():
        result = _query(prometheus.url, expr)  # every query runs, the exceptions too
        if metric_names(expr) & set(NOT_PRODUCED):
            assert not result, f"{title} has data: take its family off NOT_PRODUCED"


def test_wire_panels_answered_by_the_transport_deployment(prometheus: Scraped) -> None:
    wire = {
        title: expr
        for title, expr in expressions(load_dashboard())
        if metric_names(expr) <= {"commbus_wire_messages_total", "commbus_wire_rejected_total"}
    }
    assert len(wire) == 2
    _answered(prometheus.url, wire)
    rejected = _query(prometheus.url, wire["Rejected frames/A"])
    assert {r["metric"]["reason"] for r in rejected} == {"malformed"}
    frames = _query(prometheus.url, wire["Wire frames/A"])
    assert {(r["metric"]["direction"], r["metric"]["pattern"]) for r in frames} == {
        (d, p) for d in ("sent", "received") for p in ("publish", "send", "query", "reply")
    }


def test_job_and_instance_keep_deployments_apart(prometheus: Scraped) -> None:
    """One Prometheus, two deployments: each query sees only the one selected."""
    raw = load_dashboard()
    url = prometheus.url

    def select(job: str, instance: str) -> dict[str, str]:
        values = {"$job": job, "$instance": instance}
        return dict(expressions(raw, values))

    def message_types(job: str, instance: str) -> set[str]:
        result = _query(url, select(job, instance)["Message rate by type/A"])
        return {r["metric"]["message_type"] for r in result}

    demo, transport = prometheus.demo, prometheus.transport
    _answered(url, {"transport": select(TRANSPORT_JOB, transport)["Wire frames/A"]})
    wait_until(lambda: bool(message_types(TRANSPORT_JOB, transport)), 30, "transport messages")
    assert message_types(TRANSPORT_JOB, transport) == MESSAGE_TYPES
    assert message_types(".*", transport) == MESSAGE_TYPES
    demo_types = message_types(DEMO_JOB, demo)
    assert demo_types and not demo_types & MESSAGE_TYPES
    assert message_types(".*", ".*") == demo_types | MESSAGE_TYPES
    assert not _query(url, select(DEMO_JOB, demo)["Wire frames/A"])  # in-memory: no wire
    assert not _query(url, select(DEMO_JOB, transport)["Message rate/A"])  # no such pair
    for title, expr in select("no-such-job", ".*").items():
        assert not _query(url, expr), f"{title} ignores the job variable"
    for title, expr in select(".*", "no-such-instance").items():
        assert not _query(url, expr), f"{title} ignores the instance variable"


def test_template_variables_have_values(prometheus: Scraped) -> None:
    def values(query: str) -> set[str]:
        metric, label = substitute(query).removeprefix("label_values(")[:-1].rsplit(", ", 1)
        params = urllib.parse.urlencode({"match[]": metric})
        return set(get_json(f"{prometheus.url}/api/v1/label/{label}/values?{params}")["data"])

    variables = {v["name"]: v for v in load_dashboard()["templating"]["list"]}
    assert values(variables["job"]["query"]["query"]) == {DEMO_JOB, TRANSPORT_JOB}
    instances = variables["instance"]["query"]["query"]
    assert values(instances) == {prometheus.demo, prometheus.transport}
    assert values(instances.replace("$job", TRANSPORT_JOB)) == {prometheus.transport}
    assert {"flow_service", "billing", "summarizer"} <= values(
        variables["service"]["query"]["query"]
    )
    assert values(variables["message_type"]["query"]["query"]) > MESSAGE_TYPES


def test_alert_rules_load_and_evaluate(prometheus: Scraped) -> None:
    """The shipped rules, evaluated against real series: every rule healthy, and the
    workload's junk frames raise CommBusWireRejected for that deployment only."""

    def rules() -> list[dict[str, Any]]:
        groups = get_json(f"{prometheus.url}/api/v1/rules")["data"]["groups"]
        return [rule for group in groups for rule in group["rules"]]

    def evaluated() -> bool:
        # never evaluated: the zero time, 0001-01-01T00:00:00Z
        return all(not r["lastEvaluation"].startswith("0001") for r in rules())

    wait_until(evaluated, 30, "every rule evaluated")
    assert [r["name"] for r in rules()] == ALERTS
    for rule in rules():
        assert rule["health"] == "ok" and not rule.get("lastError"), rule

    def rejected_alerts() -> list[dict[str, str]]:
        alerts = get_json(f"{prometheus.url}/api/v1/alerts")["data"]["alerts"]
        return [a["labels"] for a in alerts if a["labels"]["alertname"] == "CommBusWireRejected"]

    wait_until(lambda: bool(rejected_alerts()), 30, "CommBusWireRejected to fire")
    (labels,) = rejected_alerts()
    assert labels["job"] == TRANSPORT_JOB and labels["instance"] == prometheus.transport
    assert labels["reason"] == "malformed" and labels["transport"] == "redis"


def test_latency_exemplars_carry_trace_ids(prometheus: Scraped) -> None:
    def exemplar_trace_ids() -> set[str]:
        now = time.time()
        params = urllib.parse.urlencode(
            {"query": "commbus_dispatch_duration_seconds_bucket", "start": now - 300, "end": now}
        )
        series = get_json(f"{prometheus.url}/api/v1/query_exemplars?{params}")["data"]
        return {e["labels"].get("trace_id", "") for s in series for e in s["exemplars"]}

    wait_until(lambda: bool(exemplar_trace_ids()), 30, "exemplars on the dispatch histogram")
    assert all(len(t) == 32 for t in exemplar_trace_ids())


def test_deploy_config_scrapes_the_demo_port() -> None:
    text = (Path(__file__).resolve().parents[2] / "deploy" / "prometheus.yml").read_text()
    assert 'targets: ["demo:9464"]' in text and "metrics_path: /metrics" in text
