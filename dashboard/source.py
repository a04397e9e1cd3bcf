"""Reading observability endpoints, and the per-endpoint state kept between refreshes.

The only I/O of the dashboard: small JSON GETs with a short timeout. An endpoint that
fails is marked down with the reason; its last good data stays on screen until it answers
again.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from .data import merge_records, next_cursor
from .fleet import OPENER

__all__ = ["EndpointState", "FetchError", "fetch_json", "poll"]

FLOW_PAGE = 1000
MAX_PAGES = 5


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
    return records


def _uptime(stats: dict[str, Any]) -> float:
    value = stats.get("uptime_seconds")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0.0
    return float(value)
