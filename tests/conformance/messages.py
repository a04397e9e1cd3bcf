"""The suite's messages, now in :mod:`jeeves_control_tower.testing.messages` (the other
tests still import them from here)."""

from jeeves_control_tower.testing.messages import (
    REGISTRY,
    Answer,
    Ask,
    DoWork,
    Happened,
    Level,
    NotRegistered,
    Other,
    Point,
    Rich,
)

__all__ = [
    "REGISTRY",
    "Answer",
    "Ask",
    "DoWork",
    "Happened",
    "Level",
    "NotRegistered",
    "Other",
    "Point",
    "Rich",
]
