"""Jeeves Control Tower: the live dashboard of one or more observability endpoints.

Run ``streamlit run dashboard/app.py``. Endpoints come from the sidebar or the
``JEEVES_ENDPOINTS`` environment variable (comma-separated); with none, an in-process demo
is started so the page shows live data on its own. With ``JEEVES_TRACE_URL`` set (a URL
template holding ``{trace_id}``, e.g. ``http://localhost:16686/trace/{trace_id}``) trace ids
link to the trace UI. Endpoints are polled once per refresh interval for the whole server,
however many viewers (:class:`~dashboard.source.SharedPoller`). This module is layout
only (the flow section in ``flow_view``): fetching is in ``source``, shaping in
``data``/``series``/``graph``/``history``.
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

import pandas as pd
import streamlit as st

from . import data, history, series
from .fleet import ALLOW_ENV, AllowList, Fleet
from .flow_view import flow_section
from .source import EndpointState, SharedPoller
from .timetext import clock, span_text, spans_text

KEEP_RECORDS = 15_000
RECOVERED_BANNER_S = 20.0
WINDOWS = {"1 min": 60.0, "5 min": 300.0, "15 min": 900.0}


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


@st.cache_resource
def shared_poller() -> SharedPoller:
    """One poller per server process: every session reads the same polls."""
    return SharedPoller(KEEP_RECORDS)


def refresh_all(endpoints: list[str], token: str, refresh: float, fleet: Fleet) -> None:
    """Take the shared poller's data (it polls each endpoint at most once per ``refresh``
    seconds for the whole server, the token only to origins the fleet's allow-list
    trusts); the session keeps it, so a paused page stays still."""
    poller = shared_poller()
    states, records = poller.refresh(endpoints, token, refresh, send_token=fleet.allow.trusts)
    st.session_state.states = states
    st.session_state.records = records


def status_banners(endpoints: list[str], refresh: int) -> None:
    states: dict[str, EndpointState] = st.session_state.get("states", {})
    now = time.time()
    for url in endpoints:
        state = states.get(url)
        shown = data.md_escape(url)
        if state is None or state.up is None:
            st.info(f"Connecting to {shown}…")
        elif not state.up:
            since = clock(state.down_since or now) + " UTC"
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


def kpi_row(
    flow: pd.DataFrame, services: pd.DataFrame, cover: data.Coverage, n_up: int, n: int
) -> None:
    k = series.kpis(flow, services, cover)
    over = f"Over {spans_text(cover)}: the time the flow data covers."
    cols = st.columns(6)
    cols[0].metric("Endpoints up", f"{n_up} / {n}")
    cols[1].metric("Healthy services", f"{k['healthy']:.0f} / {k['services']:.0f}")
    cols[2].metric("Messages / s", f"{k['rate']:.2f}", help=over)
    cols[3].metric("Failed", f"{k['error_pct']:.1f} %", help=over)
    cols[4].metric("p95 latency", f"{k['p95_ms']:.1f} ms", help=over)
    cols[5].metric(
        "Queued avg / peak",
        f"{k['queued']:.1f} / {k['queued_peak']:.0f}",
        help="Dispatches waiting for a slot over the window: the time-weighted average"
        " (summed over services) and the highest queue of one service.",
    )


def registry_section(services: pd.DataFrame, opts: dict[str, Any]) -> None:
    st.subheader("Service registry")
    shown = data.filter_services(services, opts["types"], opts["health"])
    if services.empty:
        st.caption("No services reported yet.")
        return
    windowed = services["windowed"] if "windowed" in services else pd.Series(dtype=bool)
    span = opts.get("history_span")
    over = (
        f"Load, queue and counts over the last {span_text(span[1] - span[0])}"
        f" ({clock(span[0])} to {clock(span[1])} UTC), from the endpoint's own history;"
        " *Handled* counts dispatches, *Events* bus messages its handlers ran."
        if span and windowed.any()
        else "The endpoint keeps no history (an older version): load, queue and counts"
        " are an instant snapshot and totals since it started."
    )
    if not opts.get("handler_runs"):
        over += (
            " The endpoint does not record bus handler runs, so *Events* stay 0"
            " (create its recorder with `FlowRecorder(handler_runs=True)`)."
        )
    st.caption(f"{len(shown)} of {len(services)} services match the filters. {over}")
    view = data.registry_view(shown, with_endpoint=len(opts["endpoints"]) > 1)
    st.dataframe(
        view.style.map(_health_colour, subset=["health"]),
        hide_index=True,
        column_order=[*data.REGISTRY_SHOWN, *(["endpoint"] if "endpoint" in view else [])],
        key="registry_table",
        column_config={
            "name": st.column_config.TextColumn("Service", pinned=True),
            "type": st.column_config.TextColumn("Type", width=60),
            "version": st.column_config.TextColumn("Version", width=60),
            "health": st.column_config.TextColumn("Health", width=90),
            "slots": st.column_config.TextColumn(
                "In flight", width=120, help="Time-weighted average (peak) / max_concurrent"
            ),
            "load_pct": st.column_config.ProgressColumn(
                "Load vs capacity",
                format="%.0f%%",
                min_value=0,
                max_value=100,
                width=100,
                help="Average in flight / max_concurrent over the window",
            ),
            "queue": st.column_config.TextColumn(
                "Queued", width=95, help="Dispatches waiting for a slot: average (peak)"
            ),
            "requests": st.column_config.NumberColumn(
                "Handled", format="%d", width=70, help="Dispatches to the service"
            ),
            "events": st.column_config.NumberColumn(
                "Events", format="%d", width=65, help="Bus messages its handlers ran"
            ),
            "problems": st.column_config.TextColumn(
                "Err / t.o. / retry", width=115, help="Errors / timeouts / retries"
            ),
            "error_pct": st.column_config.NumberColumn("Failed", format="%.1f%%", width=60),
            "avg_latency_ms": st.column_config.NumberColumn(
                "Avg latency", format="%.2f ms", width=85
            ),
            "capabilities": st.column_config.ListColumn("Capabilities", width=110),
            "endpoint": "Endpoint",
        },
    )


def _health_colour(value: object) -> str:
    """``value`` is a shown health ("● healthy" / "● unhealthy")."""
    healthy = isinstance(value, str) and value.endswith(" healthy")
    return "color: #2e7d32" if healthy else "color: #c62828; font-weight: 600"


@st.cache_resource(max_entries=16)
def shared_fleet(seeds: tuple[str, ...], token: str, allow_rules: str) -> Fleet:
    """One fleet discovery per set of given endpoints for the whole server: every session
    shares its peer lists (and its one ``/api/peers`` request per refresh interval)."""
    return Fleet(list(seeds), AllowList.for_endpoints(list(seeds), allow_rules), token=token)


def fleet_for(seeds: list[str], token: str) -> Fleet:
    """The fleet discovery for these endpoints (shared; a new one when they change)."""
    return shared_fleet(tuple(seeds), token, os.environ.get(ALLOW_ENV, ""))


def processes_section(fleet: Fleet) -> None:
    """Per-process health: shown once an endpoint has reported its fleet."""
    if not fleet.processes:
        return
    st.subheader("Processes")
    if fleet.notice:
        st.caption(data.md_escape(fleet.notice))
    rows = fleet.rows(st.session_state.get("states", {}))
    for row in rows:
        seen = row["last_seen"]
        row["last_seen"] = clock(seen) if seen else "—"
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
            "last_seen": st.column_config.TextColumn("Last seen (UTC)", width=110),
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
        down = {url for url, s in states_now.items() if s.up is False}
        fleet.discover(down, interval=opts["refresh"])
    opts["endpoints"] = fleet.endpoints()  # the given ones, then the processes found
    if not opts["paused"]:
        refresh_all(opts["endpoints"], opts["token"], opts["refresh"], fleet)
    status_banners(opts["endpoints"], opts["refresh"])
    states: dict[str, EndpointState] = st.session_state.get("states", {})
    shown = [url for url in opts["endpoints"] if url in states]
    payloads = {url: states[url].services for url in shown}
    opts["histories"] = {url: states[url].history for url in shown}
    windowed, handlers = history.history_frames(opts["histories"], opts["window_s"])
    services = history.apply_history(data.services_frame(payloads), windowed, handlers)
    opts["handler_runs"] = not handlers.empty
    if not windowed.empty:
        opts["history_span"] = (float(windowed["since"].min()), float(windowed["until"].max()))
    records = st.session_state.get("records", [])
    now = opts["now"] = time.time()
    # Rates and charts start where the data does: over the nominal window a buffer that
    # holds two minutes would read as less than half the rate, a bucket before it as a dip.
    started = {url: states[url].started_at for url in shown}
    cover = opts["coverage"] = data.coverage(records, now, opts["window_s"], started)
    flow = data.flow_frame(records, now, now - cover.since)
    if opts["patterns"]:
        flow = flow[flow["pattern"].isin(opts["patterns"])].reset_index(drop=True)
    n_up = sum(1 for url in opts["endpoints"] if url in states and states[url].up)
    kpi_row(flow, services, cover, n_up, len(opts["endpoints"]))
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
