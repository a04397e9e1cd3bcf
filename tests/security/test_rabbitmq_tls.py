"""RabbitMQ over TLS (``amqps://``) with a user and password: publish, send and query
work, an untrusted server or a wrong password fails fast, and the password never reaches
a log record or an error message.

A private RabbitMQ node (:class:`tests.brokers.RabbitMQServer` with a TLS listener only,
its default user set in its config) uses a throwaway CA and server certificate from the
``openssl`` CLI; the shared broker is never touched. One node for the whole test: an
Erlang node takes seconds to start."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from pathlib import Path

import pytest

from jeeves_control_tower.ipc import InMemoryCommBus, TransportError
from jeeves_control_tower.ipc.adapters.rabbitmq import RabbitMQTransport
from jeeves_control_tower.testing.messages import REGISTRY
from tests import brokers
from tests.helpers import ListLogger
from tests.security.tls import SECRET, exercise_patterns, make_certs, no_secret

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]


class TlsRabbitMQServer(brokers.RabbitMQServer):
    """A private node that only speaks TLS, default user ``jt`` with ``password``."""

    def __init__(self, certs: dict[str, Path], password: str) -> None:
        port = brokers.free_port()
        super().__init__(
            "listeners.tcp = none\n"
            f"listeners.ssl.default = 127.0.0.1:{port}\n"
            f"ssl_options.cacertfile = {certs['ca']}\n"
            f"ssl_options.certfile = {certs['server']}\n"
            f"ssl_options.keyfile = {certs['key']}\n"
            "ssl_options.verify = verify_none\n"
            "ssl_options.fail_if_no_peer_cert = false\n"
            f"default_user = jt\ndefault_pass = {password}\nloopback_users = none\n"
        )
        self.port = port

    def tls_url(self, password: str) -> str:
        return f"amqps://jt:{password}@127.0.0.1:{self.port}/"


async def test_amqps_with_a_password_works_and_never_shows_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    certs = make_certs(tmp_path)
    trusted = ssl.create_default_context(cafile=str(certs["ca"]))
    with TlsRabbitMQServer(certs, SECRET) as server:
        logger = ListLogger()
        bus = InMemoryCommBus(instrument=False)
        transport = await RabbitMQTransport.connect(
            bus,
            server.tls_url(SECRET),
            ssl_context=trusted,
            registry=REGISTRY,
            metrics=False,
            logger=logger,
        )
        try:
            assert SECRET not in transport.url
            await exercise_patterns(bus, transport)
        finally:
            await transport.close()
        errors = []
        for url, context in (
            (server.tls_url("wrong-" + SECRET), trusted),  # login refused
            (server.tls_url(SECRET), ssl.create_default_context()),  # server not trusted
        ):
            started = time.monotonic()
            with pytest.raises(TransportError) as info:
                await asyncio.wait_for(
                    RabbitMQTransport.connect(
                        InMemoryCommBus(instrument=False),
                        url,
                        ssl_context=context,
                        metrics=False,
                        logger=logger,
                    ),
                    30,
                )
            assert time.monotonic() - started < 5
            errors.append(str(info.value))
        assert "ACCESS_REFUSED" in errors[0] or "Authentication" in errors[0], errors[0]
        assert "CERTIFICATE_VERIFY_FAILED" in errors[1] or "certificate" in errors[1], errors[1]
        no_secret(logger, caplog, *errors)
