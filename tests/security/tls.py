"""What the TLS tests share: a throwaway CA, the secret they guard, one round of every
pattern over a connected transport, and the check that the secret leaked nowhere."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from jeeves_control_tower.ipc import InMemoryCommBus
from jeeves_control_tower.testing import eventually
from jeeves_control_tower.testing.messages import Ask, DoWork, Happened
from tests.helpers import ListLogger, unavailable

SECRET = "tls-s3cr3t-pw"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certs(directory: Path) -> dict[str, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 / localhost, signed by it."""
    if shutil.which("openssl") is None:
        unavailable("the openssl CLI is not installed")
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
        "-days", "1", "-subj", "/CN=jt-test-ca", cwd=directory,
    )  # fmt: skip
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=127.0.0.1", cwd=directory,
    )  # fmt: skip
    (directory / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "1", "-extfile", "ext.cnf",
        cwd=directory,
    )  # fmt: skip
    return {name: directory / f"{name}.crt" for name in ("ca", "server")} | {
        "key": directory / "server.key"
    }


def no_secret(logger: ListLogger, caplog: pytest.LogCaptureFixture, *texts: Any) -> None:
    assert logger.records, "nothing was logged: the check would prove nothing"
    for level, message, fields in logger.records:
        assert SECRET not in f"{level} {message} {fields!r}"
    for record in caplog.records:
        assert SECRET not in record.getMessage()
        assert SECRET not in repr(record.args) and SECRET not in repr(record.__dict__)
    for text in texts:
        assert SECRET not in str(text)


async def exercise_patterns(bus: InMemoryCommBus, transport: Any) -> None:
    """Publish, send and query five times each over ``transport``; all must arrive."""
    events: list[int] = []
    commands: list[int] = []
    bus.subscribe("Happened", lambda e: events.append(e.n))
    bus.register_handler("DoWork", lambda c: commands.append(c.n))
    bus.register_handler("Ask", lambda q: q.n * 2)
    await transport.sync()
    for n in range(5):
        await bus.publish(Happened(n))
        await bus.send(DoWork(n))
        assert await bus.query(Ask(n)) == n * 2
    await eventually(lambda: events == list(range(5)) and sorted(commands) == list(range(5)))
