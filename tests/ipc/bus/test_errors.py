"""The bus's exceptions: where users import them from, and the names telemetry reports."""

from __future__ import annotations

import pytest

from jeeves_control_tower.ipc import NoHandlerError, QueryAbortedError, TransportError, commbus
from jeeves_control_tower.observability.semconv import qualified_error_type


@pytest.mark.parametrize(
    ("cls", "base"),
    [(NoHandlerError, ValueError), (QueryAbortedError, ValueError), (TransportError, RuntimeError)],
)
def test_public_home_and_error_type_name_are_stable(cls: type[Exception], base: type) -> None:
    assert issubclass(cls, base)
    assert getattr(commbus, cls.__name__) is cls
    # error.type on spans and logs: must not change when the class moves between modules
    assert qualified_error_type(cls("x")) == f"jeeves_control_tower.ipc.commbus.{cls.__name__}"
