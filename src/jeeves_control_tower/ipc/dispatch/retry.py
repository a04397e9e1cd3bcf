"""Retry backoff: exponential with full jitter, capped, never past a deadline."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["RetryPolicy"]


@dataclass(frozen=True)
class RetryPolicy:
    """Delay before retry ``n`` (1-based) is drawn uniformly from
    ``[base * jitter_floor, base]`` where ``base = min(cap, initial * multiplier ** (n - 1))``.

    Defaults: about 50 ms first, doubling, capped at 2 s. ``jitter_floor=1.0`` disables
    jitter (deterministic delays, useful in tests).
    """

    initial_delay: float = 0.05
    multiplier: float = 2.0
    max_delay: float = 2.0
    jitter_floor: float = 0.5
    _random: random.Random = field(default_factory=random.Random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.initial_delay < 0 or self.max_delay < 0:
            raise ValueError("RetryPolicy delays must be >= 0")
        if self.multiplier < 1:
            raise ValueError("RetryPolicy.multiplier must be >= 1")
        if not 0 <= self.jitter_floor <= 1:
            raise ValueError("RetryPolicy.jitter_floor must be within [0, 1]")

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first retry)."""
        if retry < 1:
            raise ValueError("retry numbers start at 1")
        base = min(self.max_delay, self.initial_delay * self.multiplier ** min(retry - 1, 64))
        if self.jitter_floor >= 1.0:
            return base
        return self._random.uniform(base * self.jitter_floor, base)
