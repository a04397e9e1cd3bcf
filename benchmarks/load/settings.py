"""The load benchmark's fixed settings: brokers, patterns, timeouts and the services."""

from __future__ import annotations

import os
from pathlib import Path

from jeeves_control_tower.types import (
    SchedulingPriority,
)

RESULTS = Path(__file__).resolve().parents[1] / "results" / "load.json"
REDIS_URL = os.environ.get("JT_REDIS_URL", "redis://127.0.0.1:6379/0")
NATS_URL = os.environ.get("JT_NATS_URL", "nats://127.0.0.1:4222")
TARGETS = ("inmemory", "redis", "nats")
PATTERNS = ("publish", "send", "query", "dispatch")
PRIORITIES = tuple(SchedulingPriority)
PAYLOAD = "x" * 64
QUERY_TIMEOUT = 10.0  # seconds; any timeout is an error (no faults are injected)
DISPATCH_TIMEOUT = 10.0
STALL_TIMEOUT = 30.0  # a producer whose window does not move for this long gives up
DRAIN_TIMEOUT = 30.0  # after the producers stop: time for the consumers to catch up

#: name, max_concurrent, suspends every n-th call (sleep(0)), sleeps 0.5 ms every m-th call
SERVICES = (
    ("svc_fast", 64, 16, 0),
    ("svc_bounded", 4, 1, 16),
    ("svc_single", 1, 4, 32),
)
