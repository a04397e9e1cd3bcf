"""The window's figures from ``/api/history`` JSON (hand-written, as the endpoint sends it)."""

from __future__ import annotations

from typing import Any

import pytest

from dashboard import data, history

URL = "http://127.0.0.1:9464"
T = 1_000_000.0


def counter(*values: float) -> dict[str, Any]:
    return {"total": sum(values), "buckets": list(values)}


def body() -> dict[str, Any]:
    """20 s of history in 5 s buckets, generated at T + 20."""
    return {
        "generated_at": T + 20,
        "since": T,
        "step": 5,
        "buckets": [T, T + 5, T + 10, T + 15],
        "services": {
            "billing": {
                "capacity": 2,
                "load": {"avg": 1, "peak": 2, "avgs": [0, 2, 2, 0], "peaks": [0, 2, 2, 1]},
                "queue": {"avg": 1, "peak": 6, "avgs": [0, 0, 4, 0], "peaks": [0, 0, 6, 0]},
                "requests": counter(1, 2, 3, 4),
                "errors": counter(0, 0, 1, 0),
                "timeouts": counter(0, 1, 0, 0),
                "retries": counter(2, 0, 3, 0),
                "seconds": counter(0.1, 0.2, 0.3, 0.4),
            },
            "audit": {
                "capacity": 5,
                "load": {"avg": 0, "peak": 0, "avgs": [0, 0, 0, 0], "peaks": [0, 0, 0, 0]},
                "queue": {"avg": 0, "peak": 0, "avgs": [0, 0, 0, 0], "peaks": [0, 0, 0, 0]},
                **{k: counter(0, 0, 0, 0) for k in ("requests", "errors", "timeouts", "retries")},
                "seconds": counter(0, 0, 0, 0),
            },
        },
        "handlers": {
            "demo.services.Audit.on_event": {
                "events": counter(10, 10, 10, 10),
                "errors": counter(0, 0, 1, 0),
                "seconds": counter(0.01, 0.01, 0.01, 0.01),
            },
            "demo.services.Indexer.on_memory_stored": {
                "events": counter(5, 5, 5, 5),
                "errors": counter(0, 0, 0, 0),
                "seconds": counter(0, 0, 0, 0),
            },
        },
    }


def service(name: str, **kw: Any) -> dict[str, Any]:
    return {"name": name, "service_type": "vertical", "healthy": True, "current_load": 0,
            "max_concurrent": kw.get("cap", 5), "queue_depth": 0, "requests": 99}  # fmt: skip


def test_gauges_are_averaged_over_the_window_not_snapshotted() -> None:
    frame, _ = history.history_frames({URL: body()}, window_s=300)
    billing = frame.set_index("name").loc["billing"]
    # a snapshot now would read load 0 / queue 0; over the 20 s: 1.0 avg load, queue 1.0
    assert billing["load_avg"] == pytest.approx(1.0) and billing["load_peak"] == 2
    assert billing["queue_avg"] == pytest.approx(1.0) and billing["queue_peak"] == 6
    assert billing["requests"] == 10 and billing["retries"] == 5
    assert (billing["since"], billing["until"]) == (T, T + 20)
    last10, _ = history.history_frames({URL: body()}, window_s=10)
    recent = last10.set_index("name").loc["billing"]
    assert recent["requests"] == 7 and recent["queue_avg"] == pytest.approx(2.0)
    assert recent["since"] == T + 10


def test_subscriber_only_service_shows_the_events_it_handled() -> None:
    services = data.services_frame(
        {URL: {"services": [service("audit"), service("billing", cap=2)]}}
    )
    windowed, handlers = history.history_frames({URL: body()}, window_s=300)
    out = history.apply_history(services, windowed, handlers).set_index("name")
    audit = out.loc["audit"]
    assert audit["requests"] == 0 and audit["events"] == 40 and audit["errors"] == 1
    assert audit["avg_latency_ms"] == pytest.approx(1.0)
    assert audit["error_pct"] == pytest.approx(2.5)
    billing = out.loc["billing"]
    assert billing["load_pct"] == pytest.approx(50.0) and billing["queue_peak"] == 6
    assert billing["requests"] == 10 and billing["error_pct"] == pytest.approx(20.0)
    view = data.registry_view(out.reset_index(), with_endpoint=False).set_index("name")
    assert view.loc["billing", "slots"] == "1.0 (peak 2) / 2"


def test_handler_owner() -> None:
    names = ["flow_service", "audit", "notifications"]
    assert history.handler_owner("demo.services.Audit.on_event", names) == "audit"
    assert history.handler_owner("x.FlowService.handle", names) == "flow_service"
    assert history.handler_owner("x.Indexer.on_memory_stored", names) is None
    assert history.handler_owner("on_event", names) is None


def test_retries_come_from_the_endpoint_not_from_page_open() -> None:
    out = history.history_retries({URL: body()}, since=T, now=T + 20)
    assert list(out["count"]) == [2, 3] and set(out["kind"]) == {"retries"}
    assert history.history_retries({URL: body()}, since=T + 5, now=T + 20)["count"].sum() == 3


def test_hostile_history_is_ignored() -> None:
    hostile = {"a": "junk", "b": {"buckets": ["x"], "services": {}}, "c": {"buckets": [T],
               "generated_at": T + 1, "services": {"s": {"load": "x", "requests": 5}, 3: {}},
               "handlers": {"h": "x"}}}  # fmt: skip
    frame, handlers = history.history_frames(hostile, 60)
    assert list(frame["name"]) == ["s"] and frame.iloc[0]["requests"] == 0
    assert handlers.empty
    assert history.history_retries(hostile, 0, T + 10).empty
