from __future__ import annotations

import logging
from typing import Any

import pytest

from jeeves_control_tower.ipc import InMemoryCommBus
from jeeves_control_tower.logging import NullLogger, StdlibLoggerAdapter, ensure_logger
from jeeves_control_tower.types import LoggerProtocol


def test_stdlib_logger_is_wrapped_and_accepts_fields(caplog: pytest.LogCaptureFixture) -> None:
    log = ensure_logger(logging.getLogger("t.wrap"))
    assert isinstance(log, StdlibLoggerAdapter)
    with caplog.at_level(logging.INFO, logger="t.wrap"):
        log.bind(service="a").info("hello", n=1, text="two words")
    rec = caplog.records[-1]
    assert rec.getMessage() == "hello service=a n=1 text='two words'"
    assert rec.fields == {"service": "a", "n": 1, "text": "two words"}  # type: ignore[attr-defined]


def test_reserved_record_names_do_not_raise(caplog: pytest.LogCaptureFixture) -> None:
    log = ensure_logger(logging.getLogger("t.reserved"))
    with caplog.at_level(logging.DEBUG, logger="t.reserved"):
        log.warning("x", message="m", asctime="a", exc_info=None, args=(1,))
    assert "message=m" in caplog.records[-1].getMessage()


def test_hostile_str_does_not_raise(caplog: pytest.LogCaptureFixture) -> None:
    class Bad:
        def __str__(self) -> str:
            raise RuntimeError("no")

    with caplog.at_level(logging.ERROR, logger="t.bad"):
        ensure_logger(logging.getLogger("t.bad")).error("e", value=Bad())
    assert "<unprintable Bad>" in caplog.records[-1].getMessage()


def test_structlog_style_passes_through_and_junk_rejected() -> None:
    class Mine:  # message positional-only, as in LoggerProtocol (a field may be "message")
        def debug(self, message: str, /, **f: Any) -> None: ...
        def info(self, message: str, /, **f: Any) -> None: ...
        def warning(self, message: str, /, **f: Any) -> None: ...
        def error(self, message: str, /, **f: Any) -> None: ...
        def bind(self, **f: Any) -> Mine:
            return self

    m = Mine()
    assert ensure_logger(m) is m
    assert isinstance(NullLogger(), LoggerProtocol)
    with pytest.raises(TypeError, match="bind"):
        ensure_logger(object())


async def test_bus_with_plain_logging_logger(caplog: pytest.LogCaptureFixture) -> None:
    bus = InMemoryCommBus(logger=logging.getLogger("t.bus"), instrument=False)  # type: ignore[arg-type]

    class Boom:
        pass

    def fail(_: object) -> None:
        raise RuntimeError("kaput")

    bus.subscribe("Boom", fail)
    with caplog.at_level(logging.ERROR, logger="t.bus"):
        await bus.publish(Boom())
    assert "subscriber_failed" in caplog.text and "kaput" in caplog.text
