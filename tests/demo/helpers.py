"""Shared by the demo, dashboard and Grafana tests: a live demo and ways to wait for it."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from jeeves_control_tower.demo import DemoConfig

#: Busy enough that every pattern and outcome shows up within seconds; billing flaps fast.
FAST = DemoConfig(rate=60.0, seed=7, flap_period=4.0, flap_down=1.5)
PATTERNS = {"publish", "send", "query", "dispatch"}


def get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def wait_until(
    predicate: Callable[[], bool], timeout: float, what: str, every: float = 0.2
) -> None:
    """Poll ``predicate`` until it holds; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except OSError:
            pass  # not listening yet
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


def flow_patterns(url: str) -> set[str]:
    stats = get_json(f"{url}/api/stats")
    seen = {p for p, counts in stats["messages"].items() if sum(counts.values())}
    if sum(stats["dispatch"].values()):
        seen.add("dispatch")
    return seen


def wait_for_traffic(url: str, timeout: float = 30.0) -> None:
    """Until the endpoint has seen every pattern, a timeout, and at least one retry."""

    def ready() -> bool:
        services = get_json(f"{url}/api/services")["services"]
        stats = get_json(f"{url}/api/stats")
        return (
            flow_patterns(url) == PATTERNS
            and stats["dispatch"].get("timeout", 0) > 0
            and sum(s["retries"] for s in services) > 0
        )

    wait_until(ready, timeout, "traffic of every pattern from the demo")
