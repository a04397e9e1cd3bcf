"""Fixtures for the dashboard tests: a live demo endpoint shared by the session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from jeeves_control_tower.demo import DemoHandle, run_demo_in_background

from ..demo.helpers import FAST, wait_for_traffic


@pytest.fixture(scope="package")
def live_demo() -> Iterator[DemoHandle]:
    """A running demo (observability server included) that has produced every pattern.

    Package-scoped: it stops when the dashboard tests are done, so its thread (its spans
    draw ids from the global ``random``) does not load the machine or disturb the
    property tests that run later."""
    handle = run_demo_in_background(config=FAST)
    try:
        wait_for_traffic(handle.url)
        yield handle
    finally:
        handle.stop()
