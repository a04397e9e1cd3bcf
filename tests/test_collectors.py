"""The per-registry container of collectors shared by the bus and adapter metrics."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge

from jeeves_control_tower._collectors import declare
from jeeves_control_tower.ipc.adapters.metrics import AdapterMetrics
from jeeves_control_tower.observability.metrics import CommBusMetrics


def test_declared_once_per_registry() -> None:
    one, two = CollectorRegistry(), CollectorRegistry()
    a = declare(Counter, "x_events", "doc", ("k",), one)
    assert declare(Counter, "x_events", "doc", ("k",), one) is a
    assert declare(Counter, "x_events", "doc", ("k",), two) is not a


def test_another_type_or_labels_is_an_error() -> None:
    registry = CollectorRegistry()
    declare(Counter, "x_events", "doc", ("k",), registry)
    with pytest.raises(ValueError, match="already declared"):
        declare(Counter, "x_events", "doc", ("k", "j"), registry)
    with pytest.raises(ValueError, match="already declared"):
        declare(Gauge, "x_events", "doc", ("k",), registry)


def test_a_name_registered_by_someone_else_is_the_registrys_error() -> None:
    registry = CollectorRegistry()
    Counter("commbus_messages", "not ours", ("a",), registry=registry)
    with pytest.raises(ValueError, match="Duplicated"):
        CommBusMetrics(registry)


def test_two_containers_and_transports_share_the_collectors() -> None:
    registry = CollectorRegistry()
    first, again = CommBusMetrics(registry), CommBusMetrics(registry)
    assert first.aggregate is not None and first.aggregate is again.aggregate
    AdapterMetrics("redis", registry).reconnected()
    AdapterMetrics("redis", registry).reconnected()
    value = registry.get_sample_value("commbus_transport_reconnects_total", {"transport": "redis"})
    assert value == 2
