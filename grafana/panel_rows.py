"""The panels of the dashboard, row by row (titles, PromQL, units); declared as data."""

from __future__ import annotations

from typing import Any

from panel_kit import BARS, FAILED, MSG, RI, STAT, SVC, panel, quantiles, rate, series, target

EXEMPLARS = "Exemplars link a latency point to its trace (Jaeger)."
WIRE = (
    "Frames that crossed a broker (Redis, NATS): sent = accepted by the broker client,"
    " received = decoded. Empty for a process on the in-memory bus only."
)
REJECTED = "Frames the wire codec refused (malformed, too deep, too large...): never handled."
DROPPED = "Events accepted by publish and lost before the broker client took them."
TELEMETRY = "Failures inside telemetry hooks, by component: caught, messages are unaffected."
LOAD = f"sum by (service) ({series('commbus_service_load', SVC)})"
CAPACITY = f"sum by (service) ({series('commbus_service_capacity', SVC)})"
ALL_MESSAGES = f"sum(rate({series('commbus_messages_total', MSG)}[{RI}]))"
FAILED_MESSAGES = f"sum(rate({series('commbus_messages_total', FAILED)}[{RI}]))"
INFLIGHT = f"sum by (pattern) ({series('commbus_inflight_messages')})"

ROWS: list[tuple[str, list[dict[str, Any]]]] = [
    (
        "Overview",
        [
            panel("Message rate", [target(ALL_MESSAGES, "messages/s", "A")], unit="reqps", **STAT),
            panel(
                "Failed messages",
                [target(f"{FAILED_MESSAGES} / {ALL_MESSAGES}", "failed", "A")],
                unit="percentunit",
                **STAT,
            ),
            panel(
                "Healthy services",
                [
                    target(f"sum({series('commbus_service_healthy', SVC)})", "healthy", "A"),
                    target(f"sum({series('commbus_services_registered')})", "registered", "B"),
                ],
                **STAT,
            ),
            panel("In flight", [target(INFLIGHT, "{{pattern}}", "A")], **STAT),
        ],
    ),
    (
        "Messages",
        [
            panel(
                "Message rate by pattern",
                [target(rate("commbus_messages_total", "pattern", MSG), "{{pattern}}", "A")],
                unit="reqps",
                stack=True,
            ),
            panel(
                "Message rate by type",
                [
                    target(
                        rate("commbus_messages_total", "pattern, message_type", MSG),
                        "{{pattern}} {{message_type}}",
                        "A",
                    )
                ],
                unit="reqps",
            ),
            panel(
                "Message latency p50 / p95 / p99",
                quantiles("commbus_message_duration_seconds", "pattern", MSG),
                unit="s",
                description=EXEMPLARS,
            ),
            panel(
                "Outcomes by pattern",
                [
                    target(
                        rate("commbus_messages_total", "pattern, outcome", MSG),
                        "{{pattern}} {{outcome}}",
                        "A",
                    )
                ],
                unit="reqps",
                stack=True,
            ),
            panel(
                "Handler errors by type",
                [
                    target(
                        rate(
                            "commbus_handler_errors_total", "pattern, message_type, error_type", MSG
                        ),
                        "{{message_type}} {{error_type}}",
                        "A",
                    )
                ],
                unit="reqps",
            ),
            panel(
                "Timeouts",
                [
                    target(
                        rate("commbus_timeouts_total", "pattern, target"),
                        "{{pattern}} {{target}}",
                        "A",
                    )
                ],
                unit="reqps",
            ),
            panel(
                "Error rate by pattern",
                [
                    target(
                        f"{rate('commbus_messages_total', 'pattern', FAILED)}"
                        f" / {rate('commbus_messages_total', 'pattern', MSG)}",
                        "{{pattern}}",
                        "A",
                    )
                ],
                unit="percentunit",
            ),
            panel("In-flight messages", [target(INFLIGHT, "{{pattern}}", "A")]),
        ],
    ),
    (
        "Dispatch",
        [
            panel(
                "Dispatch outcomes",
                [target(rate("commbus_dispatch_total", "outcome", SVC), "{{outcome}}", "A")],
                unit="reqps",
                stack=True,
            ),
            panel(
                "Dispatch latency p50 / p95 / p99",
                quantiles("commbus_dispatch_duration_seconds", "service", SVC),
                unit="s",
                description=EXEMPLARS,
            ),
            panel(
                "Dispatch retries",
                [
                    target(
                        rate("commbus_dispatch_retries_total", "service, method", SVC),
                        "{{service}}.{{method}}",
                        "A",
                    )
                ],
                unit="reqps",
            ),
            panel(
                "Dispatch timeouts",
                [
                    target(
                        rate(
                            "commbus_timeouts_total",
                            "target",
                            'pattern="dispatch"',
                            'target=~"$service"',
                        ),
                        "{{target}}",
                        "A",
                    )
                ],
                unit="reqps",
            ),
        ],
    ),
    (
        "Services",
        [
            panel(
                "Load vs capacity",
                [target(f"{LOAD} / {CAPACITY}", "{{service}}", "A")],
                kind="bargauge",
                unit="percentunit",
                extra=BARS,
            ),
            panel(
                "Load and capacity",
                [
                    target(series("commbus_service_load", SVC), "load {{service}}", "A"),
                    target(series("commbus_service_capacity", SVC), "capacity {{service}}", "B"),
                ],
            ),
            panel(
                "Queue depth",
                [target(series("commbus_service_queue_depth", SVC), "{{service}}", "A")],
            ),
            panel(
                "Health",
                [target(series("commbus_service_healthy", SVC), "{{service}}", "A")],
                kind="state-timeline",
                extra={"options": {"showValue": "never", "mergeValues": True}},
            ),
            panel(
                "Registered services by type",
                [
                    target(
                        f"sum by (service_type) ({series('commbus_services_registered')})",
                        "{{service_type}}",
                        "A",
                    )
                ],
                kind="bargauge",
                width=24,
                height=5,
                extra=BARS,
            ),
        ],
    ),
    (
        "Transport",
        [
            panel(
                "Wire frames",
                [
                    target(
                        rate("commbus_wire_messages_total", "transport, direction, pattern"),
                        "{{transport}} {{direction}} {{pattern}}",
                        "A",
                    )
                ],
                unit="reqps",
                description=WIRE,
            ),
            panel(
                "Rejected frames",
                [
                    target(
                        rate("commbus_wire_rejected_total", "transport, reason"),
                        "{{transport}} {{reason}}",
                        "A",
                    )
                ],
                unit="reqps",
                description=REJECTED,
            ),
            panel(
                "Reconnects and redeliveries",
                [
                    target(
                        rate("commbus_transport_reconnects_total", "transport"),
                        "reconnects {{transport}}",
                        "A",
                    ),
                    target(
                        rate("commbus_transport_redeliveries_total", "transport"),
                        "redeliveries {{transport}}",
                        "B",
                    ),
                ],
                unit="reqps",
                width=8,
            ),
            panel(
                "Buffered while the broker is away",
                [
                    target(
                        f"sum by (transport) ({series('commbus_transport_buffered_messages')})",
                        "{{transport}}",
                        "A",
                    )
                ],
                width=8,
            ),
            panel(
                "Dropped events",
                [
                    target(
                        rate("commbus_transport_dropped_events_total", "transport"),
                        "{{transport}}",
                        "A",
                    )
                ],
                unit="reqps",
                width=8,
                description=DROPPED,
            ),
        ],
    ),
    (
        "Dead letters and telemetry",
        [
            panel(
                "Dead letters by type",
                [
                    target(
                        rate("commbus_dead_letters_total", "transport, message_type"),
                        "{{transport}} {{message_type}}",
                        "A",
                    )
                ],
                unit="reqps",
                width=8,
            ),
            panel(
                "Dead-letter depth",
                [
                    target(
                        f"sum by (transport, queue) ({series('commbus_dead_letter_messages')})",
                        "{{transport}} {{queue}}",
                        "A",
                    )
                ],
                width=8,
                description="Entries waiting in the dead-letter store; it should not grow.",
            ),
            panel(
                "Telemetry errors",
                [
                    target(
                        rate("commbus_telemetry_errors_total", "component"),
                        "{{component}}",
                        "A",
                    )
                ],
                unit="reqps",
                width=8,
                description=TELEMETRY,
            ),
        ],
    ),
]
