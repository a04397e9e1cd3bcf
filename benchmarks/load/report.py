"""What one target's run comes to (figures and pass/fail checks), the machine, and the table."""

from __future__ import annotations

import contextlib
import os
import platform
from collections import Counter
from importlib import metadata
from typing import Any

from .measure import CountingLogger, StdlibCounter
from .settings import PATTERNS, SERVICES
from .telemetry import Telemetry
from .workload import Load


def report(
    kind: str,
    load: Load,
    tel: Telemetry,
    logger: CountingLogger,
    stdlib: StdlibCounter,
    metrics: dict[str, Any],
    extra: dict[str, Any],
) -> dict[str, Any]:
    seconds = extra["measured_seconds"]
    patterns: dict[str, Any] = {}
    for p in PATTERNS:
        st = load.stats[p]
        errors: Counter[str] = Counter(st.errors)
        lost = load.expected[p] - load.handled[p]
        if lost > 0:
            errors["lost"] += lost
        elif lost < 0 and p in ("publish", "send"):
            errors["duplicates"] += -lost
        elif lost < 0:  # the handler ran but the call failed (already counted above)
            errors["handled_without_reply"] += -lost
        if load.out_of_order[p]:
            errors["out_of_order"] += load.out_of_order[p]
        patterns[p] = {
            "msg_per_s": round(st.ops / seconds, 1),
            "calls_measured": st.ops,
            "calls_total": st.ops_total,
            "deliveries_expected": load.expected[p],
            "deliveries_handled": load.handled[p],
            "sequence_gaps": load.gaps[p],
            "latency": st.e2e.summary(),
            "call_latency": st.call.summary(),
            "errors": sum(errors.values()),
            "error_kinds": dict(sorted(errors.items())),
        }
    patterns["publish"]["deliveries_per_s"] = round(
        patterns["publish"]["msg_per_s"] * load.subscribers, 1
    )
    violations = {
        name: {"max_concurrent": cap, "peak": load.peak[name]}
        for name, cap, *_ in SERVICES
        if load.peak[name] > cap
    }
    dropped = tel.ends.ended - tel.exporter.exported
    lib_errors = logger.of_level("error")
    checks = {
        "errors_per_pattern_zero": all(patterns[p]["errors"] == 0 for p in PATTERNS),
        "max_concurrent_respected": not violations,
        "no_producer_hung": load.hung == 0,
        "no_library_error_logs": not lib_errors,
        "no_stdlib_error_logs": not any(
            k.startswith(("ERROR:", "CRITICAL:")) for k in stdlib.counts
        ),
        "no_telemetry_errors": metrics["telemetry_errors"] == 0,
        "workload_messages_all_ok_in_metrics": not any(
            key.split(":", 2)[2].startswith("Load") for key in metrics["messages_not_ok"]
        ),
        "no_handler_errors_or_timeouts_in_metrics": metrics["handler_errors"] == 0
        and metrics["timeouts"] == 0,
        "inflight_back_to_zero": metrics["inflight_at_end"] == 0
        and metrics["service_load_at_end"] == 0,
    }
    return {
        "target": kind,
        "total_msg_per_s": round(sum(patterns[p]["msg_per_s"] for p in PATTERNS), 1),
        "patterns": patterns,
        "dispatch_latency_by_priority": {prio: h.summary() for prio, h in load.by_priority.items()},
        "service_peak_concurrency": {
            name: {"max_concurrent": cap, "peak": load.peak[name]} for name, cap, *_ in SERVICES
        },
        "max_concurrent_violations": violations,
        "producers_hung": load.hung,
        "spans": {"ended": tel.ends.ended, "exported": tel.exporter.exported, "dropped": dropped},
        "library_logs": {"errors": lib_errors, "warnings": logger.of_level("warning")},
        "library_first_errors": logger.first_errors,
        "third_party_warnings": dict(stdlib.counts),
        "metrics": metrics,
        **extra,
        "checks": checks,
        "ok": all(checks.values()),
    }


def machine() -> dict[str, Any]:
    model = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        mem = f.readline().split(":", 1)[1].strip()
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory": mem,
        "python": platform.python_version(),
    }


def versions() -> dict[str, str]:
    out = {}
    for dist in (
        "jeeves-control-tower",
        "opentelemetry-sdk",
        "prometheus_client",
        "redis",
        "nats-py",
    ):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def table(results: dict[str, Any]) -> str:
    head = (
        f"{'target':9} {'pattern':9} {'msg/s':>8} {'p50 µs':>9} {'p99 µs':>9} {'max µs':>9}"
        f" {'errors':>7}  error kinds"
    )
    lines = [head, "-" * len(head)]
    for t in results["targets"].values():
        for p in PATTERNS:
            x = t["patterns"][p]
            lat = x["latency"]
            kinds = ", ".join(f"{k}={v}" for k, v in x["error_kinds"].items())
            lines.append(
                f"{t['target']:9} {p:9} {x['msg_per_s']:>8,.0f} {lat['p50_us']:>9,.0f}"
                f" {lat['p99_us']:>9,.0f} {lat['max_us']:>9,.0f} {x['errors']:>7}  {kinds}"
            )
        lines.append(f"{t['target']:9} {'total':9} {t['total_msg_per_s']:>8,.0f}")
        s = t["spans"]
        lines.append(
            f"{'':9} RSS {t['rss_mb_after_warmup']} MB after warm-up -> {t['rss_mb_end']} MB"
            f" at the end ({t['rss_growth_mb']:+} MB); spans ended {s['ended']:,},"
            f" dropped {s['dropped']:,}"
        )
        tick = t["loop_tick"]
        lines.append(
            f"{'':9} publish deliveries {t['patterns']['publish']['deliveries_per_s']:,.0f}/s;"
            f" CPU {t['cpu_percent']} % of a core; loop pass p50 {tick['p50_us'] / 1000:.1f} ms,"
            f" p99 {tick['p99_us'] / 1000:.1f} ms"
        )
        failed = [name for name, ok in t["checks"].items() if not ok]
        lines.append(
            f"{'':9} checks: {'all passed' if not failed else 'FAILED ' + ', '.join(failed)}"
        )
        lines.append("")
    lines.append(
        "latency: publish/send from the call to the end of the handler (per delivery);"
        " query/dispatch the call"
    )
    return "\n".join(lines)
