"""Reading observability endpoints, and the per-endpoint state kept between refreshes.

The only I/O of the dashboard: small JSON GETs with a short timeout. An endpoint that
fails is marked down with the reason; its last good data stays on screen until it answers
again.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlencode

from .data import merge_records, next_cursor
from .fleet import OPENER

__all__ = ["EndpointState", "FetchError", "SharedPoller", "fetch_json", "poll"]

FLOW_PAGE = 1000
MAX_PAGES = 5
#: What ``/api/history`` is asked for: the longest window the page offers, in 5 s buckets.
HISTORY_QUERY = "/api/history?window=900&step=5"


class FetchError(Exception):
    """The endpoint did not answer with the JSON we expected."""


@dataclass
class EndpointState:
    """What the dashboard remembers about one endpoint across refreshes."""

    url: str
    cursor: int | None = None
    services: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    up: bool | None = None  # None until the first poll
    error: str = ""
    down_since: float | None = None
    recovered_at: float | None = None
    last_ok: float | None = None
    history: dict[str, Any] = field(default_factory=dict)


def fetch_json(base: str, path: str, token: str = "", timeout: float = 2.0) -> Any:
    """GET ``base + path`` and decode its JSON; :class:`FetchError` on any failure."""
    request = urllib.request.Request(base + path, headers={"Accept": "application/json"})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        # No redirects: the token must not follow a 3xx to another origin.
        with OPENER.open(request, timeout=timeout) as response:
            return json.loads(response.read(8 * 1024 * 1024))
    except urllib.error.HTTPError as exc:
        raise FetchError(f"HTTP {exc.code} from {path}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise FetchError(f"cannot reach the endpoint ({reason})") from None
    except ValueError:
        raise FetchError(f"{path} did not return JSON") from None


def poll(
    state: EndpointState,
    records: list[dict[str, Any]],
    keep: int,
    token: str = "",
    now: float | None = None,
) -> list[dict[str, Any]]:
    """Refresh ``state`` from its endpoint and return ``records`` with the new flow merged.

    On failure ``state`` is marked down (the previous services and records are kept);
    on the first success after a failure ``recovered_at`` is stamped.
    """
    now = time.time() if now is None else now
    try:
        services = fetch_json(state.url, "/api/services", token)
        stats = fetch_json(state.url, "/api/stats", token)
        if not isinstance(services, dict) or not isinstance(stats, dict):
            raise FetchError("unexpected JSON shape")
        try:
            history = fetch_json(state.url, HISTORY_QUERY, token)
        except FetchError:
            history = {}  # an endpoint older than /api/history: the page says so
        if not isinstance(history, dict):
            history = {}
        if _uptime(stats) < _uptime(state.stats):
            state.cursor = None  # the endpoint restarted: its sequence numbers did too
        flow_info = stats.get("flow")
        if not isinstance(flow_info, dict):
            flow_info = {}
        # A new client starts far enough back to fill the charts, as far as pages allow.
        after = next_cursor(state.cursor, flow_info.get("last_seq"), None, FLOW_PAGE * MAX_PAGES)
        for _ in range(MAX_PAGES):
            query = urlencode({"after": after, "limit": FLOW_PAGE})
            page = fetch_json(state.url, f"/api/flow?{query}", token)
            batch = page.get("records") if isinstance(page, dict) else None
            if not isinstance(batch, list):
                raise FetchError("/api/flow returned no record list")
            records, highest = merge_records(records, state.url, batch, keep)
            after = next_cursor(after, page.get("last_seq"), highest, FLOW_PAGE)
            if len(batch) < FLOW_PAGE:
                break
    except FetchError as exc:
        if state.up is not False:
            state.down_since = now
        state.up = False
        state.error = str(exc)
        state.recovered_at = None
        return records
    if state.up is False:
        state.recovered_at = now
    state.up = True
    state.error = ""
    state.down_since = None
    state.last_ok = now
    state.cursor = after
    state.services = services
    state.stats = stats
    state.history = history
    return records


class SharedPoller:
    """One poll per endpoint per refresh interval for the whole server, however many
    sessions read it (the app keeps one in ``st.cache_resource``).

    :meth:`refresh` polls an endpoint only when its data is older than ``interval``; a
    session arriving while another polls waits for that poll (one lock per endpoint and
    token) instead of starting its own. At most ``max_entries`` endpoint/token pairs are
    kept (the one read least recently goes first), each with at most ``keep`` records.
    Thread-safe: Streamlit runs each session on its own thread.
    """

    def __init__(self, keep: int, clock: Any = time.monotonic, max_entries: int = 64) -> None:
        self.keep = keep
        self.max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str], _Entry] = {}

    def refresh(
        self, endpoints: list[str], token: str, interval: float
    ) -> tuple[dict[str, EndpointState], list[dict[str, Any]]]:
        """Fresh-enough states (copies) and flow records of these ``endpoints``."""
        states: dict[str, EndpointState] = {}
        records: list[dict[str, Any]] = []
        for url in endpoints:
            with self._lock:
                entry = self._entries.get((url, token))
                if entry is None:
                    while len(self._entries) >= self.max_entries:
                        stale = min(self._entries, key=lambda k: self._entries[k].read_at)
                        del self._entries[stale]
                    entry = self._entries[url, token] = _Entry(EndpointState(url))
                entry.read_at = self._clock()
            with entry.lock:
                now = self._clock()
                if entry.polled_at is None or now - entry.polled_at >= interval * 0.9:
                    entry.records = poll(entry.state, entry.records, self.keep, token)
                    entry.polled_at = self._clock()
                states[url] = replace(entry.state)
                records.extend(entry.records)
        return states, records


@dataclass
class _Entry:
    state: EndpointState
    records: list[dict[str, Any]] = field(default_factory=list)
    polled_at: float | None = None
    read_at: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _uptime(stats: dict[str, Any]) -> float:
    value = stats.get("uptime_seconds")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0.0
    return float(value)
