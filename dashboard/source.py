"""Reading observability endpoints, and the per-endpoint state kept between refreshes.

The only I/O of the dashboard: small JSON GETs (:func:`dashboard.net.get`: one total
deadline per request, bounded size, no redirects). An endpoint that fails or does not
answer in time is marked down with the reason; its last good data stays on screen until
it answers again. Endpoints are polled concurrently, so a slow one delays nobody.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlencode

from . import net
from .data import merge_records, next_cursor

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

    @property
    def started_at(self) -> float | None:
        """When the endpoint started (Unix seconds, from ``uptime_seconds`` at the last
        good poll), ``None`` if unknown."""
        uptime = _uptime(self.stats)
        return self.last_ok - uptime if self.last_ok is not None and uptime > 0 else None


#: The most one JSON answer may weigh.
MAX_BODY = 8 * 1024 * 1024


def fetch_json(base: str, path: str, token: str = "", timeout: float = 2.0) -> Any:
    """GET ``base + path`` within ``timeout`` seconds in total (at most :data:`MAX_BODY`
    bytes, no redirects) and decode its JSON; :class:`FetchError` on any failure."""
    try:
        body = net.get(base + path, token=token, timeout=timeout, max_bytes=MAX_BODY)
    except net.HTTPStatusError as exc:
        raise FetchError(f"HTTP {exc.status} from {path}") from None
    except net.GetError as exc:
        raise FetchError(str(exc)) from None
    try:
        return json.loads(body)
    except ValueError:
        raise FetchError(f"{path} did not return JSON") from None


def poll(
    state: EndpointState,
    records: list[dict[str, Any]],
    keep: int,
    token: str = "",
    now: float | None = None,
    *,
    timeout: float = 2.0,
    deadline: float | None = None,
) -> list[dict[str, Any]]:
    """Refresh ``state`` from its endpoint and return ``records`` with the new flow merged.

    Each request gets ``timeout`` seconds in total, and the whole poll ends by
    ``deadline`` (``time.monotonic()`` seconds) if given: past it the poll fails as
    timed out. On failure ``state`` is marked down (the previous services and records are
    kept); on the first success after a failure ``recovered_at`` is stamped.
    """
    now = time.time() if now is None else now

    def get(path: str) -> Any:
        allowed = timeout
        if deadline is not None:
            allowed = min(timeout, deadline - time.monotonic())
            if allowed <= 0:
                raise FetchError("timed out: the poll ran out of time")
        return fetch_json(state.url, path, token, allowed)

    try:
        services = get("/api/services")
        stats = get("/api/stats")
        if not isinstance(services, dict) or not isinstance(stats, dict):
            raise FetchError("unexpected JSON shape")
        try:
            history = get(HISTORY_QUERY)
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
            page = get(f"/api/flow?{query}")
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

    :meth:`refresh` starts a poll of each endpoint whose data is older than ``interval``
    and that is not being polled already, all at once on a small pool of threads, then
    waits for the polls of its endpoints (its own or another session's) until
    ``deadline`` seconds have passed: never longer. Each request of a poll gets
    ``timeout`` seconds in total and the poll ends with the deadline, so an endpoint that
    trickles its answer is marked down as timed out while the others are shown; an
    endpoint whose poll is somehow still running at the deadline is returned with its
    previous data, marked down as timed out. No lock is held during network I/O.

    At most ``max_entries`` endpoint/token pairs are kept (the one read least recently
    goes first), each with at most ``keep`` records. Thread-safe: Streamlit runs each
    session on its own thread.
    """

    def __init__(
        self,
        keep: int,
        clock: Any = time.monotonic,
        max_entries: int = 64,
        *,
        timeout: float = 2.0,
        deadline: float = 4.0,
        workers: int = 8,
    ) -> None:
        self.keep = keep
        self.max_entries = max_entries
        self.timeout = timeout
        self.deadline = deadline
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="poll")

    def refresh(
        self,
        endpoints: list[str],
        token: str,
        interval: float,
        *,
        send_token: Callable[[str], bool] | None = None,
    ) -> tuple[dict[str, EndpointState], list[dict[str, Any]]]:
        """Fresh-enough states (copies) and flow records of these ``endpoints``, within
        :attr:`deadline` seconds. ``send_token(url)`` (default: always) says whether
        ``token`` may go to ``url``; where it may not, the endpoint is asked without it."""
        ends_at = time.monotonic() + self.deadline
        entries: dict[str, _Entry] = {}
        pending: list[Future[None]] = []
        for url in endpoints:
            sent = token if send_token is None or send_token(url) else ""
            entry = entries[url] = self._entry(url, sent)
            with entry.lock:
                now = self._clock()
                due = entry.polled_at is None or now - entry.polled_at >= interval * 0.9
                if due and entry.running is None:
                    entry.running = self._pool.submit(self._poll, entry, sent, ends_at)
                if entry.running is not None:
                    pending.append(entry.running)
        if pending:
            wait(pending, timeout=max(0.0, ends_at - time.monotonic()) + 0.25)
        states: dict[str, EndpointState] = {}
        records: list[dict[str, Any]] = []
        for url, entry in entries.items():
            with entry.lock:
                state = replace(entry.state)
                if entry.running is not None:  # past the deadline and still polling
                    if state.up is not False:
                        state.down_since = time.time()
                    state.up = False
                    state.error = f"timed out: no answer within {self.deadline:g} s"
                states[url] = state
                records.extend(entry.records)
        return states, records

    def _entry(self, url: str, token: str) -> _Entry:
        with self._lock:
            entry = self._entries.get((url, token))
            if entry is None:
                while len(self._entries) >= self.max_entries:
                    stale = min(self._entries, key=lambda k: self._entries[k].read_at)
                    del self._entries[stale]
                entry = self._entries[url, token] = _Entry(EndpointState(url))
            entry.read_at = self._clock()
            return entry

    def _poll(self, entry: _Entry, token: str, ends_at: float) -> None:
        """Poll a copy of ``entry``'s state outside every lock, then install the result."""
        with entry.lock:
            state, records = replace(entry.state), entry.records
        try:
            records = poll(state, records, self.keep, token, timeout=self.timeout, deadline=ends_at)
        finally:
            with entry.lock:
                entry.state, entry.records = state, records
                entry.polled_at = self._clock()
                entry.running = None


@dataclass
class _Entry:
    state: EndpointState
    records: list[dict[str, Any]] = field(default_factory=list)
    polled_at: float | None = None
    read_at: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)
    running: Future[None] | None = None


def _uptime(stats: dict[str, Any]) -> float:
    value = stats.get("uptime_seconds")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0.0
    return float(value)
