"""The dashboard's pure shaping functions, on hand-written endpoint JSON."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import pytest
from dashboard.graph import edge_colour, failed_label, flow_edges, to_dot

from dashboard import data, series

NOW = 1_000_000.0
URL = "http://127.0.0.1:9464"


def service(name: str, **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": name,
        "service_type": "worker",
        "version": "1.0.0",
        "capabilities": ["embed"],
        "healthy": True,
        "current_load": 3,
        "max_concurrent": 6,
        "queue_depth": 1,
        "requests": 100,
        "errors": 4,
        "timeouts": 1,
        "retries": 7,
        "avg_latency_ms": 12.5,
        "metadata": {},
    }
    return base | overrides


def record(seq: int, t: float, pattern: str = "publish", **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "seq": seq,
        "time": t,
        "pattern": pattern,
        "message_type": "MemoryStored",
        "targets": ["demo.services.Indexer.on_memory_stored", "demo.services.Audit.on_event"],
        "duration_ms": 2.0,
        "outcome": "ok",
        "error_type": None,
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
    }
    return base | overrides


# ------------------------------------------------------------------ endpoints


def test_parse_endpoints_normalises_dedupes_and_rejects() -> None:
    valid, rejected = data.parse_endpoints(
        "127.0.0.1:9464, http://a:1/ ,https://b:2", "http://a:1\nftp://x javascript:alert(1)"
    )
    assert valid == ["http://127.0.0.1:9464", "http://a:1", "https://b:2"]
    assert rejected == ["ftp://x", "javascript:alert(1)"]


def test_parse_endpoints_empty() -> None:
    assert data.parse_endpoints(None, "", " , ") == ([], [])


@pytest.mark.parametrize(
    ("after", "last_seq", "fetched", "expected"),
    [
        (None, 5000, None, 4000),  # first call starts near the newest
        (None, 10, None, 0),
        (120, 400, 150, 150),  # carry on after the newest fetched
        (120, 400, None, 120),  # nothing new
        (900, 30, None, 0),  # the endpoint restarted
        (None, "junk", None, 0),
    ],
)
def test_next_cursor(after: int | None, last_seq: Any, fetched: int | None, expected: int) -> None:
    assert data.next_cursor(after, last_seq, fetched, 1000) == expected


# ------------------------------------------------------------------ services


def test_services_frame_shapes_every_column() -> None:
    frame = data.services_frame(
        {
            URL: {
                "services": [
                    service("embedder"),
                    service("billing", healthy=False, max_concurrent=0),
                ]
            }
        }
    )
    assert list(frame.columns) == data.SERVICE_COLUMNS
    row = frame.iloc[0]
    assert row["endpoint"] == URL and row["type"] == "worker" and row["health"] == "healthy"
    assert row["load_pct"] == pytest.approx(50.0)
    assert row["error_pct"] == pytest.approx(5.0)
    assert row["capabilities"] == ["embed"]
    assert frame.iloc[1]["health"] == "unhealthy" and frame.iloc[1]["load_pct"] == 0.0


def test_services_frame_survives_hostile_json() -> None:
    hostile = [
        {"name": "x", "current_load": "lots", "healthy": "yes", "capabilities": "x"},
        {"no": "name"},
        "junk",
        {"name": "y" * 500, "avg_latency_ms": math.inf},
    ]
    payloads = {"a": {"services": hostile}, "b": {"services": "nope"}, "c": ["not", "a", "dict"]}
    frame = data.services_frame(payloads)
    assert list(frame["name"].str.len()) == [1, data.MAX_TEXT]
    assert frame.iloc[0]["load"] == 0 and frame.iloc[0]["health"] == "unhealthy"
    assert frame.iloc[0]["capabilities"] == [] and frame.iloc[1]["avg_latency_ms"] == 0.0


def test_services_frame_empty_has_columns() -> None:
    assert list(data.services_frame({}).columns) == data.SERVICE_COLUMNS


def test_filter_services_by_type_and_health() -> None:
    frame = data.services_frame(
        {URL: {"services": [
            service("a", service_type="flow"),
            service("b", service_type="worker", healthy=False),
            service("c", service_type="vertical"),
        ]}}
    )  # fmt: skip
    assert list(data.filter_services(frame, [], "all")["name"]) == ["a", "b", "c"]
    assert list(data.filter_services(frame, ["flow", "worker"], "all")["name"]) == ["a", "b"]
    assert list(data.filter_services(frame, [], "unhealthy")["name"]) == ["b"]
    assert data.filter_services(frame, ["vertical"], "unhealthy").empty


# ------------------------------------------------------------------ flow


def test_normalize_record_rejects_and_cleans() -> None:
    assert data.normalize_record("x", URL) is None
    assert data.normalize_record(record(True, NOW), URL) is None
    assert data.normalize_record(record(1, NOW, pattern="teleport"), URL) is None
    clean = data.normalize_record(
        record(
            1, NOW, message_type="<b>x</b>\n", targets=["ok", 3], trace_id="short", duration_ms=-1
        ),
        URL,
    )
    assert clean is not None
    assert clean["message_type"] == "<b>x</b> " and clean["targets"] == ("ok",)
    assert clean["trace_id"] is None and clean["duration_ms"] == 0.0


def test_merge_records_dedupes_trims_and_reports_highest() -> None:
    merged, highest = data.merge_records([], URL, [record(1, NOW), record(2, NOW + 1)], keep=10)
    assert highest == 2 and [r["seq"] for r in merged] == [1, 2]
    merged, highest = data.merge_records(
        merged, URL, [record(2, NOW + 1), record(3, NOW + 2)], keep=2
    )
    assert highest == 3 and [r["seq"] for r in merged] == [2, 3]
    other, _ = data.merge_records(merged, "http://other", [record(3, NOW + 3)], keep=10)
    assert len(other) == 3  # same seq from another endpoint is another record
    assert data.merge_records(other, URL, ["junk"], keep=10) == (other, None)


def frame_of(*records: dict[str, Any], window: float = 60.0) -> pd.DataFrame:
    merged, _ = data.merge_records([], URL, list(records), keep=1000)
    return data.flow_frame(merged, NOW, window)


def test_flow_frame_windows_and_orders() -> None:
    frame = frame_of(record(2, NOW - 5), record(1, NOW - 10), record(0, NOW - 100))
    assert list(frame["seq"]) == [1, 2]
    assert str(frame["at"].dt.tz) == "UTC"
    assert data.flow_frame([], NOW, 60).empty


def test_latest_messages_newest_first_with_short_targets() -> None:
    frame = frame_of(
        record(1, NOW - 3),
        record(2, NOW - 2, pattern="dispatch", message_type="embed", targets=["embedder"],
               outcome="timeout", error_type="TimeoutError", trace_id=None),
        record(3, NOW - 1, pattern="send", targets=[], outcome="no_handler"),
    )  # fmt: skip
    table = data.latest_messages(frame, limit=2)
    assert list(table.columns) == [
        "time", "pattern", "type", "target", "duration_ms", "outcome", "error", "trace_id",
    ]  # fmt: skip
    assert list(table["pattern"]) == ["send", "dispatch"]
    assert list(table["target"]) == ["—", "embedder"]
    assert table.iloc[1]["error"] == "TimeoutError" and table.iloc[1]["trace_id"] == ""


def test_short_target() -> None:
    assert data.short_target("jeeves_control_tower.demo.services.Indexer.on_memory_stored") == (
        "Indexer.on_memory_stored"
    )
    assert data.short_target("billing") == "billing"


def test_throughput_and_latency_series_skip_the_filling_bucket() -> None:
    records = [record(i, NOW - 10 + i * 0.5, duration_ms=float(i)) for i in range(20)]
    frame = frame_of(*records)
    rates = series.throughput_series(frame, bucket_s=5, now=NOW)
    # buckets [NOW-10, NOW-5) and [NOW-5, NOW) are complete; 10 records each
    assert list(rates["rate"]) == [2.0, 2.0]
    assert set(rates["pattern"]) == {"publish"}
    # a bucket that starts before the data does is left out
    assert list(series.throughput_series(frame, 5, NOW, since=NOW - 9)["rate"]) == [2.0]
    latency = series.latency_series(frame, bucket_s=5, now=NOW)
    first = latency[latency["bucket"] == latency["bucket"].min()]
    by_q = dict(zip(first["quantile"], first["latency_ms"], strict=True))
    assert by_q["p50"] == pytest.approx(4.5) and by_q["p95"] == pytest.approx(8.55)
    assert series.latency_series(frame_of(), 5, NOW).empty


def test_problem_series_counts_errors_timeouts_and_retries() -> None:
    frame = frame_of(
        record(1, NOW - 9, outcome="error"),
        record(2, NOW - 8, outcome="timeout"),
        record(3, NOW - 8, outcome="unhealthy"),
        record(4, NOW - 7),
    )
    retries = pd.DataFrame(
        {"bucket": pd.to_datetime([NOW - 10], unit="s", utc=True), "kind": "retries", "count": [4]}
    )
    out = series.problem_series(frame, retries, 5, NOW)
    assert dict(zip(out["kind"], out["count"], strict=True)) == {
        "errors": 2, "timeouts": 1, "retries": 4,
    }  # fmt: skip
    empty = series.problem_series(frame_of(), retries.iloc[:0], 5, NOW)
    assert empty.empty and list(empty.columns) == ["bucket", "kind", "count"]


def test_kpis() -> None:
    frame = frame_of(
        *[record(i, NOW - 10 + i, outcome="ok" if i % 4 else "error") for i in range(8)]
    )
    services = data.services_frame({URL: {"services": [service("a"), service("b", healthy=False)]}})
    cover = data.coverage(frame.to_dict("records"), NOW, 60)
    # records before seq 0 were evicted: the data covers 10 s of the 60 s window
    assert (cover.since, cover.span(URL)) == (NOW - 10, 10)
    k = series.kpis(frame, services, cover)
    assert k["rate"] == pytest.approx(8 / 10) and k["error_pct"] == pytest.approx(25.0)
    assert k["services"] == 2 and k["healthy"] == 1 and k["queued"] == 2
    assert series.kpis(frame_of(), data.services_frame({}), 60)["rate"] == 0.0


# ------------------------------------------------------------------ graph


def test_flow_edges_rates_and_error_share() -> None:
    frame = frame_of(
        record(1, NOW - 3),
        record(2, NOW - 2, outcome="error"),
        record(
            3, NOW - 1, pattern="query", message_type="GetQuota", targets=[], outcome="no_handler"
        ),
    )
    edges = flow_edges(frame, span_s=10)
    indexer = edges[edges["target"] == "Indexer.on_memory_stored"].iloc[0]
    assert indexer["count"] == 2 and indexer["rate"] == pytest.approx(0.2)
    assert indexer["error_share"] == pytest.approx(0.5)
    assert "(no handler)" in set(edges["target"])
    assert flow_edges(frame_of(), 10).empty


def test_rates_are_over_the_span_the_buffer_covers() -> None:
    """The issue's case: the buffer holds 120 s of a 300 s window (older records were
    evicted: the first kept is seq 1001), 366 dispatches of execute_pipeline: 3.05/s on
    the edge and on the headline tile (the old code said 1.22/s on the edge, dividing by
    the nominal window)."""
    records = [
        record(1001 + i, NOW - 120 + i * 120 / 366, pattern="dispatch",
               message_type="execute_pipeline", targets=["flow_service"])
        for i in range(366)
    ]  # fmt: skip
    frame = frame_of(*records, window=300)
    cover = data.coverage(frame.to_dict("records"), NOW, 300)
    assert cover.since == pytest.approx(NOW - 120) and cover.span(URL) == pytest.approx(120)
    edges = flow_edges(frame, cover)
    assert list(edges["rate"]) == [pytest.approx(3.05)]
    assert series.kpis(frame, data.services_frame({}), cover)["rate"] == pytest.approx(3.05)
    assert 'label="3.05/s"' in to_dot(edges)
    # Data reaching back past the window: the window is the span.
    old = [{"endpoint": URL, "time": t, "seq": s} for s, t in ((5, NOW - 500), (6, NOW - 10))]
    cover = data.coverage(old, NOW, 300)
    assert (cover.since, cover.span(URL)) == (NOW - 300, 300)
    assert data.coverage([], NOW, 300).since == NOW


def test_sparse_traffic_is_not_read_as_a_high_rate() -> None:
    """Review case: 2 messages in 5 minutes, the last 1.5 s ago, nothing evicted (the
    first record ever, seq 1, is still there). The span began at the oldest record: 3 s,
    0.667/s; the truth over the window is 2 / 300 s."""
    flow = frame_of(record(1, NOW - 3), record(2, NOW - 1.5), window=300)
    cover = data.coverage(flow.to_dict("records"), NOW, 300)
    assert cover.span(URL) == 300
    assert series.kpis(flow, data.services_frame({}), cover)["rate"] == pytest.approx(2 / 300)
    edges = flow_edges(flow, cover)
    assert list(edges["rate"]) == [pytest.approx(2 / 300)] * 2  # one per handler
    # An endpoint that started 60 s ago (from /api/stats uptime): the span is its lifetime.
    young = data.coverage(flow.to_dict("records"), NOW, 300, started={URL: NOW - 60})
    assert young.span(URL) == 60 and young.since == NOW - 60
    # ... but never shorter than the data itself (clocks disagree): from the oldest record.
    assert data.coverage(flow.to_dict("records"), NOW, 300, {URL: NOW - 1}).span(URL) == 3


def test_a_quiet_endpoint_does_not_shrink_the_span_of_a_busy_one() -> None:
    """Review case: endpoint A, 1 msg/s for 5 min (300 records, nothing evicted), and
    endpoint B with one record 2 s ago. The span was the latest of their oldest records
    (2 s): 3 of 301 rows kept, 1.5/s. Each endpoint's rate over its own span: 1.003/s."""
    other = "http://127.0.0.1:9465"
    a = [record(i + 1, NOW - 300 + i, pattern="dispatch", message_type="m", targets=["x"])
         for i in range(300)]  # fmt: skip
    b, _ = data.merge_records([], other, [record(1, NOW - 2, pattern="dispatch",
                                            message_type="m", targets=["x"])], keep=10)  # fmt: skip
    merged, _ = data.merge_records(b, URL, a, keep=1000)
    cover = data.coverage(merged, NOW, 300)
    flow = data.flow_frame(merged, NOW, NOW - cover.since)
    assert len(flow) == 301
    assert (cover.span(URL), cover.span(other)) == (300, 300)
    k = series.kpis(flow, data.services_frame({}), cover)
    assert k["rate"] == pytest.approx(301 / 300)
    # The graph agrees with the tile: one edge, the same rate.
    assert list(flow_edges(flow, cover)["rate"]) == [pytest.approx(301 / 300)]
    # B's buffer evicted records (its first kept is seq 50): its span is its own 2 s; A's
    # stays 300 s, and the rates add up per endpoint.
    b_evicted, _ = data.merge_records([], other, [record(50, NOW - 2)], keep=10)
    merged, _ = data.merge_records(b_evicted, URL, a, keep=1000)
    cover = data.coverage(merged, NOW, 300)
    assert (cover.span(URL), cover.span(other)) == (300, 2)
    flow = data.flow_frame(merged, NOW, NOW - cover.since)
    assert series.kpis(flow, data.services_frame({}), cover)["rate"] == pytest.approx(1 + 0.5)


def test_edge_colour_matches_the_legend() -> None:
    # green: none failed; orange: some (even 0.4 %); red: 25 % or more
    assert [edge_colour(s) for s in (0, 0.004, 0.1, 0.25, 0.9)] == [
        "#2e7d32", "#ef6c00", "#ef6c00", "#c62828", "#c62828",
    ]  # fmt: skip
    assert [failed_label(s) for s in (0.0004, 0.004, 0.25)] == [
        "<0.1% failed", "0.4% failed", "25% failed",
    ]  # fmt: skip
    frame = frame_of(*[record(i, NOW - 5, outcome="error" if i == 0 else "ok") for i in range(300)])
    dot = to_dot(flow_edges(frame, 10))
    assert "0% failed" not in dot.replace("0.3% failed", "")
    assert "0.3% failed" in dot and '"#ef6c00"' in dot


def test_trace_link() -> None:
    tid = "4bf92f3577b34da6a3ce929d0e0e4736"
    assert data.trace_link("http://jaeger:16686/trace/{trace_id}", tid) == (
        f"http://jaeger:16686/trace/{tid}"
    )
    assert data.trace_link("http://jaeger:16686/trace/{trace_id}", "") == ""
    assert data.trace_link("javascript:alert('{trace_id}')", tid) == ""
    assert data.trace_link("http://no-placeholder", tid) == ""


def test_to_dot_escapes_hostile_labels() -> None:
    evil = 'x"]; injected [label="pwned'
    frame = frame_of(record(1, NOW - 1, message_type=evil, targets=["a\\", "b\nc"]))
    dot = to_dot(flow_edges(frame, 10))
    assert dot.startswith("digraph flow {") and dot.endswith("}")
    assert 'x\\"]; injected [label=\\"pwned' in dot
    assert '"a\\\\"' in dot
    assert "\nc" not in dot.replace("\n  ", "").replace("\n}", "")
    # Every quote in the body is either escaped or balanced per line.
    for line in dot.splitlines():
        assert line.replace("\\\\", "").replace('\\"', "").count('"') % 2 == 0


def test_to_dot_idle_and_widths() -> None:
    assert "no traffic" in to_dot(flow_edges(frame_of(), 10))
    frame = frame_of(
        *[record(i, NOW - 5) for i in range(4)],
        record(9, NOW - 1, pattern="send", message_type="Ping", targets=["p"]),
    )
    dot = to_dot(flow_edges(frame, 10))
    assert "penwidth=5.00" in dot and "penwidth=2.00" in dot
    assert '"publish:MemoryStored" [label="MemoryStored", tooltip="publish MemoryStored"' in dot


def test_an_empty_flow_window_still_renders() -> None:
    """No record in the window (or none at all): every view of it is an empty table, not a
    crash (pandas 2.3 refused ``round`` on the untyped columns of an empty frame)."""
    for frame in (data.flow_frame([], NOW, 60), frame_of(record(1, NOW - 500))):
        assert frame.empty
        assert data.latest_messages(frame).empty
        assert series.throughput_series(frame, 5, NOW).empty
        assert flow_edges(frame, 60).empty
