"""NoopWatch: telling OpenTelemetry's no-op tracer from an SDK by public API only."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from jeeves_control_tower.observability._noop import NoopWatch
from jeeves_control_tower.observability.otel_metrics import RECHECK_SECONDS


def test_injected_providers_are_judged_once() -> None:
    assert NoopWatch(trace.NoOpTracerProvider()).is_noop(0.0)
    assert not NoopWatch(TracerProvider(shutdown_on_exit=False)).is_noop(0.0)
    # settled: an SDK for good, so callers may stop asking
    assert NoopWatch(TracerProvider(shutdown_on_exit=False)).settled
    assert not NoopWatch(trace.NoOpTracerProvider()).settled


def test_the_global_placeholder_is_looked_at_again_once_per_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    looks: list[object] = []
    current: list[trace.TracerProvider] = [trace.ProxyTracerProvider()]

    def get_tracer_provider() -> trace.TracerProvider:
        looks.append(current[0])
        return current[0]

    monkeypatch.setattr(trace, "get_tracer_provider", get_tracer_provider)
    for watch in (NoopWatch(None), NoopWatch(trace.ProxyTracerProvider())):
        looks.clear()
        current[0] = trace.ProxyTracerProvider()
        assert watch.is_noop(10.0) and len(looks) == 1
        assert watch.is_noop(10.0 + RECHECK_SECONDS / 2) and len(looks) == 1
        current[0] = TracerProvider(shutdown_on_exit=False)  # set globally in between
        assert watch.is_noop(10.0 + RECHECK_SECONDS * 0.9)  # not looked at yet
        assert not watch.settled
        assert not watch.is_noop(10.0 + RECHECK_SECONDS) and len(looks) == 2
        assert watch.settled  # a real global provider is one for good
        assert not watch.is_noop(1e6) and len(looks) == 2  # a real provider stays


def test_a_global_noop_provider_stays_noop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trace, "get_tracer_provider", trace.NoOpTracerProvider)
    watch = NoopWatch(None)
    assert watch.is_noop(0.0) and watch.is_noop(1e9)
    assert not watch.settled
