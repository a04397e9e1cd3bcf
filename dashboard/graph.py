"""Who talks to whom: message types to the handlers and services they reached, as DOT.

Edge width is the message rate, edge colour the share of failed deliveries. Every label is
quoted and escaped, so a hostile message type cannot change the graph's structure.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from .data import Coverage, short_target

__all__ = ["edge_colour", "failed_label", "flow_edges", "to_dot"]

EDGE_COLUMNS = ["pattern", "message_type", "target", "count", "failed", "rate", "error_share"]
NO_HANDLER = "(no handler)"

#: Fill and border colour of a message-type node, by pattern (the app shows the legend).
PATTERN_STYLE = {
    "publish": ("#e3f2fd", "#1e88e5"),
    "send": ("#fff3e0", "#fb8c00"),
    "query": ("#f3e5f5", "#8e24aa"),
    "dispatch": ("#e8f5e9", "#43a047"),
}


def flow_edges(frame: pd.DataFrame, span_s: float | Coverage) -> pd.DataFrame:
    """One row per (pattern, message type, target) over ``frame``: count, failed, rate per
    second and error share. ``span_s`` is the time ``frame`` really covers, not the
    nominal window (a buffer that holds two minutes of a five-minute window must not read
    as less than half the rate): seconds, or a :class:`~dashboard.data.Coverage` (see
    :func:`~dashboard.data.coverage`), and then each endpoint's count is over its own
    span and the rates are summed, as the headline rate is."""
    rows: list[dict[str, Any]] = []
    for endpoint, pattern, message_type, targets, failed in zip(
        frame["endpoint"],
        frame["pattern"],
        frame["message_type"],
        frame["targets"],
        frame["failed"],
        strict=True,
    ):
        span = span_s.span(endpoint) if isinstance(span_s, Coverage) else max(span_s, 1e-9)
        weight = 1.0 / span
        for target in targets or (NO_HANDLER,):
            rows.append(
                {
                    "pattern": pattern,
                    "message_type": message_type,
                    "target": short_target(target),
                    "failed": bool(failed),
                    "rate": weight,
                }
            )
    if not rows:
        return pd.DataFrame(columns=EDGE_COLUMNS)
    data = pd.DataFrame(rows)
    keys = ["pattern", "message_type", "target"]
    grouped = data.groupby(keys).agg(
        count=("failed", "size"), failed=("failed", "sum"), rate=("rate", "sum")
    )
    grouped = grouped.reset_index()
    grouped["error_share"] = grouped["failed"] / grouped["count"]
    return grouped.sort_values(keys).reset_index(drop=True)[EDGE_COLUMNS]


#: Edge colours, matching the legend the app shows: none failed, some, a quarter or more.
NONE_FAILED, SOME_FAILED, MANY_FAILED = "#2e7d32", "#ef6c00", "#c62828"


def edge_colour(error_share: float) -> str:
    """Green when nothing failed, orange when something did, red from 25 % failed."""
    if error_share <= 0.0:
        return NONE_FAILED
    if error_share < 0.25:
        return SOME_FAILED
    return MANY_FAILED


def failed_label(error_share: float) -> str:
    """The share failed as the edge label shows it: never "0 %" for an edge that failed."""
    percent = 100.0 * error_share
    if percent >= 10:
        return f"{percent:.0f}% failed"
    if percent >= 0.1:
        return f"{percent:.1f}% failed"
    return "<0.1% failed"


def _escape(text: str) -> str:
    clean = " ".join(str(text).split())
    return clean.replace("\\", "\\\\").replace('"', '\\"')


def _quote(text: str) -> str:
    """A DOT double-quoted string: backslashes and quotes escaped, no raw line break."""
    return '"' + _escape(text) + '"'


def to_dot(edges: pd.DataFrame, max_edges: int = 80) -> str:
    """A left-to-right DOT digraph of the busiest ``max_edges`` edges."""
    lines = [
        "digraph flow {",
        '  graph [rankdir=LR, bgcolor="transparent", nodesep=0.12, ranksep=1.6];',
        '  node [fontname="Helvetica", fontsize=10, shape=box, style="rounded,filled",'
        ' height=0.26, margin="0.12,0.03", penwidth=1.2];',
        '  edge [fontname="Helvetica", fontsize=8, arrowsize=0.6];',
    ]
    if edges.empty:
        lines.append('  idle [label="no traffic in this window", shape=plaintext, style=""];')
        lines.append("}")
        return "\n".join(lines)
    top = edges.nlargest(max_edges, "count").sort_values(["pattern", "message_type", "target"])
    peak = float(top["rate"].max()) or 1.0
    sources: dict[str, tuple[str, str]] = {}
    targets: set[str] = set()
    body: list[str] = []
    for row, rate, error_share in zip(
        top.itertuples(index=False),
        top["rate"].astype(float),
        top["error_share"].astype(float),
        strict=True,
    ):
        source_id = f"{row.pattern}:{row.message_type}"
        sources[source_id] = (str(row.pattern), str(row.message_type))
        target_id = f"to:{row.target}"
        targets.add(str(row.target))
        width = 1.0 + 4.0 * rate / peak
        label = f"{rate:.2f}/s" if rate < 10 else f"{rate:.1f}/s"  # as the headline tile
        if row.failed:
            label += f" · {failed_label(error_share)}"
        body.append(
            f"  {_quote(source_id)} -> {_quote(target_id)} [penwidth={width:.2f},"
            f" color={_quote(edge_colour(error_share))}, label={_quote(label)}];"
        )
    for source_id, (pattern, message_type) in sorted(sources.items()):
        fill, border = PATTERN_STYLE.get(pattern, ("#eeeeee", "#757575"))
        lines.append(
            f"  {_quote(source_id)} [label={_quote(message_type)},"
            f" tooltip={_quote(f'{pattern} {message_type}')},"
            f" fillcolor={_quote(fill)}, color={_quote(border)}];"
        )
    for target in sorted(targets):
        fill = "#ffebee" if target == NO_HANDLER else "#fafafa"
        lines.append(
            f"  {_quote('to:' + target)} [label={_quote(target)}, fillcolor={_quote(fill)}];"
        )
    lines.extend(body)
    lines.append("}")
    return "\n".join(lines)
