"""The page's live message flow section: the who-talks-to-whom graph, the latest
messages and the throughput, latency and problem charts (layout only: the shaping is in
``data``, ``series``, ``graph`` and ``history``)."""

from __future__ import annotations

import os
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from . import data, graph, history, series
from .timetext import clock, span_text, spans_text

__all__ = ["flow_section", "latest_table"]

LEGEND = (
    ":blue[■ publish] · :orange[■ send] · :violet[■ query] · :green[■ dispatch]"
    " — edge width = rate, colour = share failed"
    " (:green[none] · :orange[some] · :red[25 % or more])"
)
#: One time format everywhere: 24-hour UTC, in tables, chart axes and tooltips.
TIME_AXIS = alt.Axis(format="%H:%M:%S", title=None, labelAngle=0)
UTC = alt.Scale(type="utc")
PATTERN_COLOURS = alt.Scale(
    domain=list(data.PATTERNS), range=["#1e88e5", "#fb8c00", "#8e24aa", "#43a047"]
)
PROBLEM_COLOURS = alt.Scale(
    domain=["errors", "timeouts", "retries"], range=["#e53935", "#fb8c00", "#5c6bc0"]
)


def _line(frame: pd.DataFrame, y: str, title: str, dash: str | None = None) -> alt.Chart:
    scale = alt.Scale(type="symlog") if dash else alt.Scale()
    enc: dict[str, Any] = {
        "x": alt.X("bucket:T", axis=TIME_AXIS, scale=UTC),
        "y": alt.Y(f"{y}:Q", title=title, scale=scale),
        "color": alt.Color("pattern:N", scale=PATTERN_COLOURS, title="Pattern"),
        "tooltip": [_time_tip(), "pattern:N", alt.Tooltip(f"{y}:Q", format=".2f")],
    }
    if dash:
        enc["strokeDash"] = alt.StrokeDash(f"{dash}:N", title="Quantile")
        enc["tooltip"].append(f"{dash}:N")
    chart: alt.Chart = alt.Chart(frame).mark_line(interpolate="monotone").encode(**enc)
    return chart


def _time_tip() -> alt.Tooltip:
    return alt.Tooltip("bucket:T", title="time (UTC)", format="%H:%M:%S", formatType="utc")


def flow_section(flow: pd.DataFrame, opts: dict[str, Any]) -> None:
    st.subheader("Live message flow")
    window_s = opts["window_s"]
    now = opts["now"]
    cover: data.Coverage = opts["coverage"]
    since = cover.since
    st.caption(
        f"Rates, shares and charts over {clock(since)} to {clock(now)} UTC"
        f" ({spans_text(cover)}): the part of the {span_text(window_s)} window the"
        " flow data covers (all of it unless a buffer dropped records)."
    )
    st.markdown("**Who talks to whom** · message types → handlers and services")
    st.caption(LEGEND)
    st.graphviz_chart(graph.to_dot(graph.flow_edges(flow, cover)))
    latest_table(flow)
    bucket = data.bucket_seconds(window_s)
    a, b, c = st.columns(3)
    with a:
        st.markdown("**Throughput** (messages / s)")
        rates = series.throughput_series(flow, bucket, now, since)
        _chart_or_wait(rates, lambda f: _line(f, "rate", "msg/s"))
    with b:
        st.markdown("**Latency** p50 / p95 (ms, log scale)")
        latency = series.latency_series(flow, bucket, now, since)
        _chart_or_wait(latency, lambda f: _line(f, "latency_ms", "ms", dash="quantile"))
    with c:
        st.markdown("**Errors, timeouts and retries**")
        # Retries come from the endpoint's history (5 s buckets), so the bars use 5 s too.
        coarse = max(bucket, 5.0)
        retries = history.history_retries(opts["histories"], since, now)
        problems = series.problem_series(flow, retries, coarse, now, since)
        _chart_or_wait(
            problems,
            lambda f: (
                alt.Chart(f)
                .mark_bar()
                .encode(
                    x=alt.X("bucket:T", axis=TIME_AXIS, scale=UTC),
                    y=alt.Y("count:Q", title="count", stack=True),
                    color=alt.Color("kind:N", scale=PROBLEM_COLOURS, title=None),
                    tooltip=[_time_tip(), "kind:N", "count:Q"],
                )
            ),
        )


def latest_table(flow: pd.DataFrame) -> None:
    st.markdown("**Latest messages**")
    table = data.latest_messages(flow, 200)
    template = os.environ.get(data.TRACE_URL_VAR, "")
    trace: Any = st.column_config.TextColumn("Trace id", width=250)
    if template and data.trace_link(template, "0" * 32):
        table["trace_id"] = [data.trace_link(template, t) for t in table["trace_id"]]
        trace = st.column_config.LinkColumn(
            "Trace id", width=250, display_text=r"([0-9a-f]{32})", help="Opens the trace UI"
        )
    st.dataframe(
        table,
        hide_index=True,
        height=420,
        key="latest_table",
        column_config={
            "time": st.column_config.DatetimeColumn("Time (UTC)", format="HH:mm:ss.SSS", width=95),
            "pattern": st.column_config.TextColumn("Pattern", width=65),
            "type": st.column_config.TextColumn("Type", width=150),
            "target": st.column_config.TextColumn("Target", width=285),
            "duration_ms": st.column_config.NumberColumn("ms", format="%.2f", width=55),
            "outcome": st.column_config.TextColumn("Outcome", width=70),
            "error": st.column_config.TextColumn("Error", width=160),
            "trace_id": trace,
        },
    )


def _chart_or_wait(frame: pd.DataFrame, build: Any) -> None:
    if frame.empty:
        st.caption("Waiting for traffic…")
        return
    st.altair_chart(build(frame).properties(height=220), width="stretch")
