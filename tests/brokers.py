"""Broker helpers for tests: reach the shared brokers, or run a private one.

Tests against the shared brokers (Redis on 6379, NATS on 4222, RabbitMQ on 5672, or
``JT_REDIS_URL`` / ``JT_NATS_URL`` / ``JT_RABBITMQ_URL``) are skipped when the broker is
unreachable, unless the ``CI`` environment variable is set: in CI an unreachable broker
fails the test.

Fault tests never touch the shared brokers: :class:`RedisServer`, :class:`NatsServer` and
:class:`RabbitMQServer` start a private broker process on a free port and stop it by its
PID.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from typing import Any, Self

from tests.helpers import stop_process, unavailable

REDIS_URL = os.environ.get("JT_REDIS_URL", "redis://127.0.0.1:6379/0")
NATS_URL = os.environ.get("JT_NATS_URL", "nats://127.0.0.1:4222")
RABBITMQ_URL = os.environ.get("JT_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")


def _reachable(url: str) -> bool:
    hostport = url.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
    host, _, port = hostport.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1.0):
            return True
    except OSError:
        return False


def require(url: str, what: str) -> str:
    """``url`` if the broker answers; skip (outside CI) or fail (in CI) otherwise."""
    if _reachable(url):
        return url
    unavailable(f"{what} is not reachable at {url}")


def unique(tag: str) -> str:
    """A name unique to one test (keeps tests from seeing each other's traffic)."""
    return f"{tag}{uuid.uuid4().hex[:10]}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"broker exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"broker did not listen on {port} within {timeout}s")


class _Server:
    """A private broker process; ``restart`` keeps its port and data directory."""

    binary = ""

    def __init__(self) -> None:
        if shutil.which(self.binary) is None:
            unavailable(f"{self.binary} is not installed")
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix=f"jt-{self.binary}-")
        self.proc: subprocess.Popen[bytes] | None = None

    def args(self) -> list[str]:
        raise NotImplementedError

    @property
    def url(self) -> str:
        raise NotImplementedError

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.args(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _wait_port(self.port, self.proc)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            stop_process(proc, sig)

    def restart(self, sig: int = signal.SIGTERM) -> None:
        self.stop(sig)
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RedisServer(_Server):
    """``redis-server`` with an fsync-always AOF, so a restart loses nothing acknowledged."""

    binary = "redis-server"

    def __init__(self, password: str | None = None) -> None:
        super().__init__()
        self.password = password

    def args(self) -> list[str]:
        args = [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "yes", "--appendfsync", "always", "--dir", self.dir,
        ]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password]
        return args

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"


class NatsServer(_Server):
    """``nats-server`` with JetStream on a private store directory."""

    binary = "nats-server"

    def args(self) -> list[str]:
        return [self.binary, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", self.dir]

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"


class RabbitMQServer(_Server):
    """A private RabbitMQ node: its own node name, AMQP and distribution ports, config,
    mnesia and log directories under a temporary directory, no plugins. The
    ``rabbitmq-server`` script runs ``beam.smp`` as its child, so the node is started in a
    session of its own and stopped by signalling that process group (by the script's PID).
    An Erlang node takes a few seconds to start: keep the tests using it few."""

    binary = "rabbitmq-server"
    script = "/usr/lib/rabbitmq/bin/rabbitmq-server"

    def __init__(self, listeners: str | None = None) -> None:
        """``listeners``: the config lines that open the AMQP port (``self.port``), to
        replace the plain ``listeners.tcp.default`` one (a TLS listener, say)."""
        super().__init__()
        if not os.path.exists(self.script):
            unavailable(f"{self.script} is not installed")
        self.dist_port = free_port()
        self.node = f"jt{uuid.uuid4().hex[:8]}@localhost"
        with open(os.path.join(self.dir, "rabbitmq.conf"), "w") as f:
            f.write(listeners or f"listeners.tcp.default = 127.0.0.1:{self.port}\n")
            # a shared test machine: no resource alarm may block publishers
            f.write("disk_free_limit.absolute = 1MB\nvm_memory_high_watermark.relative = 0.95\n")
        with open(os.path.join(self.dir, "enabled_plugins"), "w") as f:
            f.write("[].\n")
        open(os.path.join(self.dir, "env.conf"), "w").close()

    def environment(self) -> dict[str, str]:
        d = self.dir
        return {
            **os.environ,
            "HOME": d,  # its own Erlang cookie
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONFIG_FILE": os.path.join(d, "rabbitmq"),
            "RABBITMQ_CONF_ENV_FILE": os.path.join(d, "env.conf"),
            "RABBITMQ_MNESIA_BASE": os.path.join(d, "mnesia"),
            "RABBITMQ_LOG_BASE": os.path.join(d, "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": os.path.join(d, "enabled_plugins"),
            "RABBITMQ_PLUGINS_EXPAND_DIR": os.path.join(d, "plugins"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.script],
            env=self.environment(),
            cwd=self.dir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        _wait_port(self.port, self.proc, timeout=60.0)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)  # the script and its beam.smp child
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        deadline = time.monotonic() + 15  # the node lets go of its port once it is gone
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    time.sleep(0.1)
            except OSError:
                return

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"
