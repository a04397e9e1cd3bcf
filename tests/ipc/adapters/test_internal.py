"""InternalEndpoints: the adapters' own traffic, taken into callbacks instead of the bus."""

from __future__ import annotations

import pytest

from jeeves_control_tower.ipc.adapters.internal import InternalEndpoints


@pytest.mark.parametrize("pattern", ["publish", "query"])
def test_internal_endpoints_retire_removed_event_types(pattern: str) -> None:
    async def callback(message: object) -> None:
        return None

    endpoints = InternalEndpoints()
    endpoints.add(pattern, "Beat", callback)
    assert endpoints.keys() == {(pattern, "Beat")}
    assert endpoints.remove(pattern, "Beat") and not endpoints.remove(pattern, "Beat")
    assert endpoints.keys() == set()
    assert endpoints.retired == ({"Beat"} if pattern == "publish" else set())
    endpoints.add(pattern, "Beat", callback)  # back: no longer retired
    assert endpoints.retired == set()
