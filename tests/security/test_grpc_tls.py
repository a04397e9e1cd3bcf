"""The gRPC hub over TLS with a bearer token: it works, plaintext and a wrong CA are
refused, and the token never reaches a log record or an error message."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from jeeves_control_tower.ipc import InMemoryCommBus, TransportError
from jeeves_control_tower.ipc.adapters.grpc import GrpcTransport, serve_grpc
from jeeves_control_tower.testing.messages import REGISTRY
from tests.helpers import ListLogger
from tests.security.tls import SECRET, exercise_patterns, make_certs, no_secret


async def test_the_hub_over_tls_with_a_token(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    certs = make_certs(tmp_path)
    (tmp_path / "other").mkdir()
    other = make_certs(tmp_path / "other")  # another CA, which did not sign the hub's
    logger = ListLogger()
    tls = (certs["key"].read_bytes(), certs["server"].read_bytes())
    hub = await serve_grpc(
        InMemoryCommBus(instrument=False), port=0, tls=tls, token=SECRET, metrics=False,
        registry=REGISTRY, logger=logger,
    )  # fmt: skip
    errors: list[BaseException] = []
    try:
        for options in (
            {},  # plaintext against TLS
            {"tls": other["ca"].read_bytes(), "token": SECRET},  # a CA that did not sign it
            {"tls": certs["ca"].read_bytes(), "token": "not-" + SECRET},  # a wrong token
        ):
            with pytest.raises(TransportError) as info:
                await GrpcTransport.connect(
                    InMemoryCommBus(instrument=False), hub.address, connect_timeout=1.0,
                    metrics=False, logger=logger, **options,
                )  # fmt: skip
            errors.append(info.value)
        bus = InMemoryCommBus(instrument=False, logger=logger)
        transport = await GrpcTransport.connect(
            bus, hub.address, tls=certs["ca"].read_bytes(), token=SECRET, registry=REGISTRY,
            metrics=False, logger=logger,
        )  # fmt: skip
        try:
            await exercise_patterns(bus, transport)
        finally:
            await transport.close()
    finally:
        await hub.close(grace=0)
    assert "UNAUTHENTICATED" in str(errors[2])
    no_secret(logger, caplog, *errors)
