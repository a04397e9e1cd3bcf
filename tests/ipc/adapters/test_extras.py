"""An adapter imported without its extra says which extra to install."""

from __future__ import annotations

import subprocess
import sys

import pytest

from jeeves_control_tower.ipc.adapters.extras import needs_extra

A = "jeeves_control_tower.ipc.adapters"
CASES = [
    (f"from {A}.rabbitmq import RabbitMQTransport", "yarl", "rabbitmq"),
    (f"from {A}.redis import RedisTransport", "redis", "redis"),
    (f"from {A}.nats import NatsTransport", "nats", "nats"),
    (f"from {A}.grpc import GrpcTransport", "google", "grpc"),  # protobuf's package
    (f"from {A}.http import HttpService", "httpx2", "http"),
    (f"from {A}.http import create_app", "starlette", "http"),
]


@pytest.mark.parametrize(("statement", "missing", "extra"), CASES)
def test_an_adapter_without_its_extra_names_the_extra(
    statement: str, missing: str, extra: str
) -> None:
    # The library is installed here: a fresh interpreter is told the module is missing.
    code = f"import sys; sys.modules[{missing!r}] = None\n{statement}"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ModuleNotFoundError") and f"[{extra}]" in last, done.stderr


def test_a_missing_module_of_the_package_itself_is_not_blamed_on_an_extra() -> None:
    with pytest.raises(ModuleNotFoundError) as info, needs_extra("redis"):
        raise ModuleNotFoundError("gone", name="jeeves_control_tower.ipc.nothing")
    assert "extra" not in str(info.value)


@pytest.mark.parametrize(
    ("argv", "missing", "extra"),
    [
        (["serve-http", "tests.ipc.adapters.http.served:build"], "uvicorn", "http"),
        (["demo", "--port", "0"], "prometheus_client", "observability"),
    ],
)
def test_a_command_without_its_extra_says_so_in_one_line(
    argv: list[str], missing: str, extra: str
) -> None:
    code = (
        f"import sys; sys.modules[{missing!r}] = None\n"
        f"from jeeves_control_tower.cli import main; sys.exit(main({argv!r}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"[{extra}]" in done.stderr and missing in done.stderr
