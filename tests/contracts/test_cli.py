"""``jeeves-ipc asyncapi`` as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jeeves_control_tower.cli import main


def test_asyncapi_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "asyncapi.json"
    code = main(
        [
            "asyncapi",
            "--messages",
            "tests.ipc.adapters.http.served:REGISTRY",
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
    args = ["asyncapi", "--messages", "tests.ipc.adapters.http.served:REGISTRY"]
    assert main([*args, "--transport", "redis://localhost:6379/0"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["channels"]["redis.publish.OrderPlaced"]["address"] == "jeeves:evt:OrderPlaced"
    assert main(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["channels"]["publish.OrderPlaced"]["address"] == "OrderPlaced"
    with pytest.raises(SystemExit, match="no transport") as refused:
        main(["asyncapi", "--transport", "kafka://user:hunter2@x:9092"])
    assert "hunter2" not in str(refused.value.code)  # credentials never shown


def test_asyncapi_names_the_missing_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "jeeves_control_tower.ipc.adapters.rabbitmq", None)
    with pytest.raises(SystemExit, match=r"pip install 'jeeves-control-tower\[rabbitmq\]'"):
        main(["asyncapi", "--transport", "amqp://guest:secret@127.0.0.1:1/"])


def test_asyncapi_over_rabbitmq_and_a_grpc_hub(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["asyncapi", "--messages", "tests.ipc.adapters.http.served:REGISTRY"]
    hosts = ["--transport", "amqp://guest:secret@127.0.0.1:1/", "--transport", "grpc://hub:1"]
    assert main([*args, *hosts]) == 0  # nothing listens there: described, not connected
    out = capsys.readouterr().out
    assert "secret" not in out
    doc = json.loads(out)
    assert doc["servers"]["amqp"]["host"] == "127.0.0.1:1"
    assert doc["servers"]["grpc"]["host"] == "hub:1"
    assert doc["channels"]["amqp.send.ChargeCard"]["address"] == "jeeves.cmd.ChargeCard"
    assert doc["channels"]["grpc.send.ChargeCard"]["address"] == "send:ChargeCard"


def test_a_messages_spec_that_does_not_load_is_one_line_not_a_traceback() -> None:
    from jeeves_control_tower.contracts.cli import load_registry

    for spec, said in (
        ("nosuch_module_here", "ModuleNotFoundError"),
        ("jeeves_control_tower.testing.messages:nothere", "AttributeError"),
        ("jeeves_control_tower.testing.messages:Point", "is not a MessageRegistry"),
    ):
        with pytest.raises(SystemExit) as info:
            load_registry([spec])
        assert said in str(info.value)
