"""NATS over TLS (``tls://``) with a user and password: publish, send (JetStream) and
query work, and the password never reaches a log record or an error message.

A private ``nats-server`` (config file with a ``tls`` block, JetStream on a private store)
uses a throwaway CA and server certificate from the ``openssl`` CLI; the shared broker is
never touched."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jeeves_control_tower.ipc import InMemoryCommBus, TransportError
from jeeves_control_tower.ipc.adapters.nats import NatsTransport
from jeeves_control_tower.testing.messages import REGISTRY
from tests import brokers
from tests.helpers import ListLogger
from tests.security.tls import SECRET, exercise_patterns, make_certs, no_secret

pytestmark = pytest.mark.nats


class TlsNatsServer(brokers.NatsServer):
    """``nats-server`` that only speaks TLS, with a user/password and JetStream."""

    def __init__(self, certs: dict[str, Path], password: str) -> None:
        super().__init__()
        self.certs = certs
        self.password = password
        self.conf = Path(self.dir) / "server.conf"
        self.conf.write_text(
            f'listen: "127.0.0.1:{self.port}"\n'
            f'jetstream {{ store_dir: "{self.dir}/js" }}\n'
            f'authorization {{ user: "jt", password: "{password}" }}\n'
            f'tls {{ cert_file: "{certs["server"]}", key_file: "{certs["key"]}" }}\n'
        )

    def args(self) -> list[str]:
        return [self.binary, "-c", str(self.conf)]

    def tls_url(self, password: str | None = None) -> str:
        return f"tls://jt:{password or self.password}@127.0.0.1:{self.port}"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[TlsNatsServer]:
    srv = TlsNatsServer(make_certs(tmp_path), SECRET)
    srv.start()
    try:
        yield srv
    finally:
        srv.close()


async def test_publish_send_and_query_work_over_tls(
    server: TlsNatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    logger = ListLogger()
    bus = InMemoryCommBus(instrument=False, logger=logger)
    prefix = brokers.unique("jttls")
    context = ssl.create_default_context(cafile=str(server.certs["ca"]))
    t = await NatsTransport.connect(
        bus,
        server.tls_url(),
        prefix=prefix,
        registry=REGISTRY,
        metrics=False,
        logger=logger,
        connect_options={"tls": context},
    )
    try:
        assert SECRET not in t.url and "***" in t.url and t.url.startswith("tls://")
        await exercise_patterns(bus, t)
    finally:
        await t.close()  # the private server's store goes away with it
    assert "nats_connected" in logger.messages()
    no_secret(logger, caplog, t.url)


async def test_a_refused_login_over_tls_does_not_leak_the_password(
    server: TlsNatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    # Regression: with the transport's default options (reconnect forever) connect
    # retried a refused login forever; the first connect now fails at once.
    caplog.set_level(logging.DEBUG)
    logger = ListLogger()
    wrong = "wrong-" + SECRET[::-1]
    bus = InMemoryCommBus(instrument=False, logger=logger)
    context = ssl.create_default_context(cafile=str(server.certs["ca"]))
    started = time.monotonic()
    with pytest.raises(TransportError) as info:
        await asyncio.wait_for(
            NatsTransport.connect(
                bus,
                server.tls_url(password=wrong),
                registry=REGISTRY,
                metrics=False,
                logger=logger,
                connect_options={"tls": context},
            ),
            timeout=20.0,
        )
    assert time.monotonic() - started < 5
    assert bus.transport is None
    assert "***" in str(info.value) and "Authorization" in str(info.value)
    no_secret(logger, caplog, info.value, repr(info.value))
    assert all(wrong not in f"{m} {f!r}" for _, m, f in logger.records)
    assert wrong not in str(info.value)


async def test_an_unverifiable_certificate_fails_fast_without_leaking_the_password(
    server: TlsNatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    # Regressions: the failed connect's client.close() never returned after a failed TLS
    # handshake, so NatsTransport.connect hung instead of raising TransportError; and with
    # the default options (reconnect forever) the handshake was retried forever.
    caplog.set_level(logging.DEBUG)
    logger = ListLogger()
    bus = InMemoryCommBus(instrument=False, logger=logger)
    started = time.monotonic()
    with pytest.raises(TransportError) as info:
        await asyncio.wait_for(
            NatsTransport.connect(
                bus,
                server.tls_url(),
                registry=REGISTRY,
                metrics=False,
                logger=logger,
                connect_options={"tls": ssl.create_default_context()},
            ),
            timeout=20.0,
        )
    assert time.monotonic() - started < 5
    assert bus.transport is None
    assert "***" in str(info.value) and "CERTIFICATE_VERIFY_FAILED" in str(info.value)
    no_secret(logger, caplog, info.value, repr(info.value))
