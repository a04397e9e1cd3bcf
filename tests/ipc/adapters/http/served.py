"""A target for ``jeeves-ipc serve-http`` in tests: an async factory, as a user writes one."""

from __future__ import annotations

from jeeves_control_tower.ipc import CommBusCoordinator
from tests.ipc.adapters.http.messages import Wired, registry

REGISTRY = registry()


async def build() -> CommBusCoordinator:
    return Wired().coordinator


def forgot_return() -> None:
    """A factory that builds a coordinator and forgets to return it."""
    Wired()
