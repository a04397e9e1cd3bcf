"""Jeeves Control Tower: the live dashboard of one or more observability endpoints.

Run ``streamlit run dashboard/app.py``. Endpoints come from the sidebar or the
``JEEVES_ENDPOINTS`` environment variable (comma-separated); with none, an in-process demo
is started so the page shows live data on its own. This module is layout only: fetching is
in ``source``, shaping in ``data``/``series``/``graph``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script (``streamlit run``): PEP 366, import as a package
    _HERE = Path(__file__).resolve().parent
    if (_HERE.parent / "__init__.py").is_file():  # installed: jeeves_control_tower/dashboard/
        __package__ = "jeeves_control_tower.dashboard"
    else:  # a checkout: <repository>/dashboard/, importable as ``dashboard`` from the root
        if str(_HERE.parent) not in sys.path:
            sys.path.insert(0, str(_HERE.parent))
        __package__ = "dashboard"

import altair as alt
import pandas as pd
import streamlit as st

from . import data, graph, series
from .fleet import ALLOW_ENV, AllowList, Fleet
from .source import EndpointState, poll

KEEP_RECORDS = 15_000
KEEP_SAMPLES = 5_000
RECOVERED_BANNER_S = 20.0
LEGEND = (
    ":blue[■ publish] · :orange[■ send] · :violet[■ query] · :green[■ dispatch]"
    " — edge width = rate, colour = share failed"
    " (:green[0 %] · :orange[≥ 5 %] · :red[≥ 25 %])"
)
WINDOWS = {"1 min": 60.0, "5 min": 300.0, "15 min": 900.0}
PATTERN_COLOURS = alt.Scale(
    domain=list(data.PATTERNS), range=["#1e88e5", "#fb8c00", "#8e24aa", "#43a047"]
)
PROBLEM_COLOURS = alt.Scale(
    domain=["errors", "timeouts", "retries"], range=["#e53935", "#fb8c00", "#5c6bc0"]
)


@st.cache_resource(show_spinner="Starting the in-process demo…")
def local_demo() -> Any:
    """One demo system per server process, shared by every session."""
    from jeeves_control_tower.demo import run_demo_in_background

    return run_demo_in_background(rate=25.0)


def sidebar() -> dict[str, Any]:
    st.sidebar.title(":material/satellite_alt: Control Tower")
    if "endpoints_text" not in st.session_state:
        st.session_state.endpoints_text = os.environ.get(data.ENV_VAR, "")
        st.session_state.token = os.environ.get("JEEVES_TOKEN", "")
    text = st.sidebar.text_area(
        "Observability endpoints",
        key="endpoints_text",
        placeholder="http://127.0.0.1:9464, http://other-host:9464",
        help=f"Comma-separated. Also read from ${data.ENV_VAR}. Empty: run a demo in-process.",
    )
    token = st.sidebar.text_input("Bearer token", key="token", type="password")
    refresh = st.sidebar.select_slider(
        "Refresh every", [1, 2, 5, 10], value=2, key="refresh", format_func="{}s".format
    )
    window = st.sidebar.selectbox("Time window", list(WINDOWS), index=1, key="window")
    st.sidebar.subheader("Filters")
    types = st.sidebar.multiselect(
        "Service type", ["flow", "worker", "vertical"], key="types", placeholder="All types"
    )
    health = st.sidebar.segmented_control(
        "Health", ["all", "healthy", "unhealthy"], default="all", key="health"
    )
    patterns = st.sidebar.multiselect(
        "Message pattern", list(data.PATTERNS), key="patterns", placeholder="All patterns"
    )
    paused = st.sidebar.toggle("Pause live updates", key="paused")
    endpoints, rejected = data.parse_endpoints(text)
    for bad in rejected:
        st.sidebar.warning(f"Ignored {data.md_escape(bad)}: not an http(s) URL.")
    return {
        "endpoints": endpoints,
        "token": token,
        "refresh": refresh,
        "window_s": WINDOWS[window],
        "types": types,
        "health": health or "all",
        "patterns": patterns,
        "paused": paused,
    }


def refresh_all(endpoints: list[str], token: str) -> None:
    """Poll every endpoint once; state lives in the session across reruns."""
    states: dict[str, EndpointState] = st.session_state.setdefault("states", {})
    records: list[dict[str, Any]] = st.session_state.setdefault("records", [])
    samples: list[tuple[float, str, int]] = st.session_state.setdefault("retry_samples", [])
    for url in endpoints:
        state = states.setdefault(url, EndpointState(url))
        records = poll(state, records, KEEP_RECORDS, token)
        if state.up:
            retries = data.services_frame({url: state.services})["retries"].sum()
            samples.append((time.time(), url, int(retries)))
    st.session_state.records = [r for r in records if r["endpoint"] in endpoints]
    del samples[:-KEEP_SAMPLES]


def status_banners(endpoints: list[str], refresh: int) -> None:
    states: dict[str, EndpointState] = st.session_state.get("states", {})
    now = time.time()
    for url in endpoints:
        state = states.get(url)
        shown = data.md_escape(url)
        if state is None or state.up is None:
            st.info(f"Connecting to {shown}…")
        elif not state.up:
            since = time.strftime("%H:%M:%S", time.localtime(state.down_since or now))
            st.error(
                f"**Endpoint down:** {shown} has not answered since {since}"
                f" ({data.md_escape(state.error)}). Showing the last data received;"
                f" retrying every {refresh}s.",
                icon=":material/error:",
            )
        elif state.recovered_at and now - state.recovered_at < RECOVERED_BANNER_S:
            st.success(
                f"**Reconnected:** {shown} is answering again.", icon=":material/check_circle:"
            )


def kpi_row(flow: pd.DataFrame, services: pd.DataFrame, window_s: float, n_up: int, n: int) -> None:
    k = series.kpis(flow, services, window_s)
    cols = st.columns(6)
    cols[0].metric("Endpoints up", f"{n_up} / {n}")
    cols[1].metric("Healthy services", f"{k['healthy']:.0f} / {k['services']:.0f}")
    cols[2].metric("Messages / s", f"{k['rate']:.1f}")
    cols[3].metric("Failed", f"{k['error_pct']:.1f} %")
    cols[4].metric("p95 latency", f"{k['p95_ms']:.1f} ms")
    cols[5].metric("Queued dispatches", f"{k['queued']:.0f}")


def registry_section(services: pd.DataFrame, opts: dict[str, Any]) -> None:
    st.subheader("Service registry")
    shown = data.filter_services(services, opts["types"], opts["health"])
    if services.empty:
        st.caption("No services reported yet.")
        return
    st.caption(f"{len(shown)} of {len(services)} services match the filters.")
    view = data.registry_view(shown, with_endpoint=len(opts["endpoints"]) > 1)
    st.dataframe(
        view.style.map(_health_colour, subset=["health"]),
        hide_index=True,
        key="registry_table",
        column_config={
            "name": st.column_config.TextColumn("Service", pinned=True),
            "type": "Type",
            "version": "Version",
            "health": st.column_config.TextColumn("Health", width=105),
            "slots": st.column_config.TextColumn("Load", help="Running / max_concurrent"),
            "load_pct": st.column_config.ProgressColumn(
                "Load vs capacity", format="%.0f%%", min_value=0, max_value=100
            ),
            "queue_depth": st.column_config.NumberColumn("Queued", format="%d"),
            "requests": st.column_config.NumberColumn("Requests", format="%d"),
            "errors": st.column_config.NumberColumn("Errors", format="%d"),
            "timeouts": st.column_config.NumberColumn("Timeouts", format="%d"),
            "retries": st.column_config.NumberColumn("Retries", format="%d"),
            "error_pct": st.column_config.NumberColumn("Failed", format="%.1f%%"),
            "avg_latency_ms": st.column_config.NumberColumn("Avg latency", format="%.1f ms"),
            "capabilities": st.column_config.ListColumn("Capabilities"),
            "endpoint": "Endpoint",
        },
    )


def _health_colour(value: object) -> str:
    """``value`` is a shown health ("● healthy" / "● unhealthy")."""
    healthy = isinstance(value, str) and value.endswith(" healthy")
    return "color: #2e7d32" if healthy else "color: #c62828; font-weight: 600"


def _line(frame: pd.DataFrame, y: str, title: str, dash: str | None = None) -> alt.Chart:
    scale = alt.Scale(type="symlog") if dash else alt.Scale()
    enc: dict[str, Any] = {
        "x": alt.X("bucket:T", title=None),
        "y": alt.Y(f"{y}:Q", title=title, scale=scale),
        "color": alt.Color("pattern:N", scale=PATTERN_COLOURS, title="Pattern"),
        "tooltip": ["bucket:T", "pattern:N", alt.Tooltip(f"{y}:Q", format=".2f")],
    }
    if dash:
        enc["strokeDash"] = alt.StrokeDash(f"{dash}:N", title="Quantile")
        enc["tooltip"].append(f"{dash}:N")
    chart: alt.Chart = alt.Chart(frame).mark_line(interpolate="monotone").encode(**enc)
    return chart


def flow_section(flow: pd.DataFrame, opts: dict[str, Any]) -> None:
    st.subheader("Live message flow")
    window_s = opts["window_s"]
    now = time.time()
    left, right = st.columns([5, 6])
    with left:
        st.markdown("**Who talks to whom** · message types → handlers and services")
        st.caption(LEGEND)
        st.graphviz_chart(graph.to_dot(graph.flow_edges(flow, window_s)))
    with right:
        st.markdown("**Latest messages**")
        st.dataframe(
            data.latest_messages(flow, 200),
            hide_index=True,
            height=420,
            key="latest_table",
            column_config={
                "time": st.column_config.DatetimeColumn("Time", format="HH:mm:ss.SSS"),
                "duration_ms": st.column_config.NumberColumn("ms", format="%.2f"),
                "trace_id": st.column_config.TextColumn("Trace id", width="medium"),
            },
        )
    bucket = data.bucket_seconds(window_s)
    a, b, c = st.columns(3)
    with a:
        st.markdown("**Throughput** (messages / s)")
        rates = series.throughput_series(flow, bucket, now, opts["since"])
        _chart_or_wait(rates, lambda f: _line(f, "rate", "msg/s"))
    with b:
        st.markdown("**Latency** p50 / p95 (ms, log scale)")
        latency = series.latency_series(flow, bucket, now, opts["since"])
        _chart_or_wait(latency, lambda f: _line(f, "latency_ms", "ms", dash="quantile"))
    with c:
        st.markdown("**Errors, timeouts and retries**")
        samples = st.session_state.get("retry_samples", [])
        retries = series.retry_deltas(samples, bucket, now, opts["since"])
        problems = series.problem_series(flow, retries, bucket, now, opts["since"])
        _chart_or_wait(
            problems,
            lambda f: (
                alt.Chart(f)
                .mark_bar()
                .encode(
                    x=alt.X("bucket:T", title=None),
                    y=alt.Y("count:Q", title="count", stack=True),
                    color=alt.Color("kind:N", scale=PROBLEM_COLOURS, title=None),
                    tooltip=["bucket:T", "kind:N", "count:Q"],
                )
            ),
        )


def _chart_or_wait(frame: pd.DataFrame, build: Any) -> None:
    if frame.empty:
        st.caption("Waiting for traffic…")
        return
    st.altair_chart(build(frame).properties(height=220), width="stretch")


def fleet_for(seeds: list[str], token: str) -> Fleet:
    """The session's fleet discovery for these endpoints (a new one when they change)."""
    key = (tuple(seeds), token, os.environ.get(ALLOW_ENV, ""))
    if st.session_state.get("fleet_key") != key:
        allow = AllowList.for_endpoints(seeds, key[2])
        st.session_state.fleet = Fleet(seeds, allow, token=token)
        st.session_state.fleet_key = key
    fleet: Fleet = st.session_state.fleet
    return fleet


def processes_section(fleet: Fleet) -> None:
    """Per-process health: shown once an endpoint has reported its fleet."""
    if not fleet.processes:
        return
    st.subheader("Processes")
    rows = fleet.rows(st.session_state.get("states", {}))
    for row in rows:
        seen = row["last_seen"]
        row["last_seen"] = time.strftime("%H:%M:%S", time.localtime(seen)) if seen else "—"
    columns = ["process", "endpoint", "status", "last_seen", "services", "note"]
    st.dataframe(
        pd.DataFrame(rows, columns=columns).style.map(
            lambda v: "" if v == "up" else "color: #c62828", subset=["status"]
        ),
        hide_index=True,
        key="processes_table",
        column_config={
            "process": st.column_config.TextColumn("Process", pinned=True),
            "endpoint": "Endpoint",
            "status": st.column_config.TextColumn("Status", width=90),
            "last_seen": st.column_config.TextColumn("Last seen", width=90),
            "services": st.column_config.ListColumn("Services"),
            "note": "Note",
        },
    )


def live(opts: dict[str, Any]) -> None:
    """Everything that refreshes: one poll, then the sections drawn from session state."""
    # A fragment rerun gets the same ``opts``: the given endpoints are kept apart.
    fleet = fleet_for(opts.setdefault("given", opts["endpoints"]), opts["token"])
    if not opts["paused"]:
        states_now: dict[str, EndpointState] = st.session_state.get("states", {})
        fleet.discover(down={url for url, s in states_now.items() if s.up is False})
    opts["endpoints"] = fleet.endpoints()  # the given ones, then the processes found
    if not opts["paused"]:
        refresh_all(opts["endpoints"], opts["token"])
    status_banners(opts["endpoints"], opts["refresh"])
    states: dict[str, EndpointState] = st.session_state.get("states", {})
    payloads = {url: states[url].services for url in opts["endpoints"] if url in states}
    services = data.services_frame(payloads)
    records = st.session_state.get("records", [])
    now = time.time()
    flow = data.flow_frame(records, now, opts["window_s"])
    # Charts start where the data does: a bucket before the first record would read as a dip.
    opts["since"] = max(now - opts["window_s"], min((r["time"] for r in records), default=now))
    if opts["patterns"]:
        flow = flow[flow["pattern"].isin(opts["patterns"])].reset_index(drop=True)
    n_up = sum(1 for url in opts["endpoints"] if url in states and states[url].up)
    kpi_row(flow, services, opts["window_s"], n_up, len(opts["endpoints"]))
    processes_section(fleet)
    registry_section(services, opts)
    flow_section(flow, opts)


def main() -> None:
    st.set_page_config(page_title="Jeeves Control Tower", page_icon="🛰️", layout="wide")
    opts = sidebar()
    if not opts["endpoints"]:
        try:
            demo = local_demo()
        except Exception as exc:  # e.g. the observability extra is not installed
            st.error(
                "No endpoint is configured and the in-process demo could not start:"
                f" {data.md_escape(exc)}. Enter an endpoint in the sidebar.",
                icon=":material/error:",
            )
            st.stop()
        opts["endpoints"] = [demo.url]
        st.sidebar.info(
            f"No endpoint configured: showing a demo running in this process at"
            f" {data.md_escape(demo.url)}."
        )
    st.title("Jeeves Control Tower")
    st.caption(
        "Live view of the CommBus: the service registry, who talks to whom, throughput,"
        " latency and failures."
    )
    run_every = None if opts["paused"] else opts["refresh"]
    st.fragment(run_every=run_every)(live)(opts)


main()
