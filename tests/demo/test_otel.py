"""The demo and the CLI take their tracing setup from the standard ``OTEL_*`` environment,
read by the SDK and the exporters themselves; ``--otlp-endpoint`` wins over it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter

from jeeves_control_tower.cli import use_otlp_endpoint
from jeeves_control_tower.demo.otel import exporter_names, span_exporters, tracer_provider
from jeeves_control_tower.demo.runner import DemoSystem
from tests.observability.test_otlp_e2e import Receiver

ROOT = Path(__file__).resolve().parents[2]
OTEL_VARS = (
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in OTEL_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def _base(receiver: Receiver) -> str:
    return receiver.endpoint.removesuffix("/v1/traces")


def _export_one_span(provider: TracerProvider) -> None:
    with provider.get_tracer("t").start_as_current_span("hello"):
        pass
    provider.shutdown()


def test_resource_from_otel_service_name_and_attributes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "billing-api")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test,team=ipc")
    provider = tracer_provider()
    attributes = provider.resource.attributes
    assert attributes["service.name"] == "billing-api"
    assert attributes["deployment.environment"] == "test"
    assert attributes["team"] == "ipc"
    assert attributes["telemetry.sdk.name"] == "opentelemetry"
    provider.shutdown()


def test_service_name_from_resource_attributes_then_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    provider = tracer_provider()
    assert provider.resource.attributes["service.name"] == "jeeves-demo"
    provider.shutdown()
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attributes")
    provider = tracer_provider()
    assert provider.resource.attributes["service.name"] == "from-attributes"
    provider.shutdown()


def test_traces_endpoint_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, receiver: Receiver
) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "env-traces")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", receiver.endpoint)
    _export_one_span(tracer_provider())
    assert [(svc, s.name) for svc, _, s in receiver.spans()] == [("env-traces", "hello")]


def test_base_endpoint_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, receiver: Receiver
) -> None:
    """The exporter appends ``/v1/traces`` itself (the receiver accepts no other path)."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", _base(receiver))
    _export_one_span(tracer_provider())
    assert [s.name for _, _, s in receiver.spans()] == ["hello"]


def test_none_means_no_exporter(monkeypatch: pytest.MonkeyPatch, receiver: Receiver) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", receiver.endpoint)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert exporter_names() == []
    assert span_exporters() == []
    _export_one_span(tracer_provider())
    assert receiver.requests == []


def test_nothing_configured_exports_nothing() -> None:
    assert exporter_names() == []


def test_exporter_names_follow_the_specification() -> None:
    assert exporter_names({"OTEL_TRACES_EXPORTER": "otlp"}) == ["otlp_proto_http"]
    assert exporter_names({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}) == ["otlp_proto_http"]
    grpc = {"OTEL_TRACES_EXPORTER": "otlp,console", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    assert exporter_names(grpc) == ["otlp_proto_grpc", "console"]
    traces_wins = {**grpc, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"}
    assert exporter_names(traces_wins) == ["otlp_proto_http", "console"]
    with pytest.raises(ValueError, match="protocol"):
        exporter_names({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "carrier"})


def test_exporters_come_from_the_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console,otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    exporters = span_exporters()
    assert [type(e) for e in exporters] == [ConsoleSpanExporter, OTLPSpanExporter]
    for exporter in exporters:
        exporter.shutdown()
    with pytest.raises(ValueError, match="no-such-exporter"):
        span_exporters({"OTEL_TRACES_EXPORTER": "no-such-exporter"})


def test_explicit_traces_url_wins_over_the_environment(
    monkeypatch: pytest.MonkeyPatch, receiver: Receiver
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:9/v1/traces")
    system = DemoSystem(otlp_endpoint=receiver.endpoint)
    with system.tracer_provider.get_tracer("t").start_as_current_span("explicit"):
        pass
    system.close()
    assert [s.name for _, _, s in receiver.spans()] == ["explicit"]


def test_the_flag_wins_over_the_environment() -> None:
    env = {
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://elsewhere:4318",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://elsewhere:4318/v1/traces",
    }
    use_otlp_endpoint("http://collector:4318", env)
    assert env == {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
    }
    env = {"OTEL_TRACES_EXPORTER": "console"}
    use_otlp_endpoint("http://collector:4318", env)
    assert env["OTEL_TRACES_EXPORTER"] == "console,otlp"
    env = {"OTEL_TRACES_EXPORTER": "none"}
    use_otlp_endpoint(None, env)
    assert env == {"OTEL_TRACES_EXPORTER": "none"}


def _run_cli(env: dict[str, str], *flags: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "jeeves_control_tower.cli", "demo", "--port", "0",
         "--duration", "1.5", "--rate", "30", "--seed", "1", *flags],
        capture_output=True, text=True, timeout=60, check=False, cwd=ROOT,
        env={
            **{k: v for k, v in os.environ.items() if k not in OTEL_VARS},
            "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
            **env,
        },
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_cli_demo_exports_where_the_environment_says(receiver: Receiver) -> None:
    _run_cli(
        {
            "OTEL_SERVICE_NAME": "cli-demo",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.endpoint,
        }
    )
    spans = receiver.spans()
    assert spans
    assert {svc for svc, _, _ in spans} == {"cli-demo"}


def test_cli_flag_wins_over_the_environment(receiver: Receiver) -> None:
    _run_cli(
        {
            "OTEL_RESOURCE_ATTRIBUTES": "service.name=flagged",
            "OTEL_TRACES_EXPORTER": "none",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:9/v1/traces",
        },
        "--otlp-endpoint",
        _base(receiver),
    )
    spans = receiver.spans()
    assert spans
    assert {svc for svc, _, _ in spans} == {"flagged"}
