from __future__ import annotations

import pytest

from jeeves_control_tower.ipc import RetryPolicy


def test_defaults_double_and_cap() -> None:
    p = RetryPolicy(jitter_floor=1.0)
    assert [p.delay(n) for n in range(1, 8)] == [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0]
    assert p.delay(10_000) == 2.0


def test_jitter_within_bounds() -> None:
    p = RetryPolicy()
    for n in range(1, 10):
        base = min(2.0, 0.05 * 2 ** (n - 1))
        for _ in range(50):
            assert base * 0.5 <= p.delay(n) <= base


def test_validation() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(initial_delay=-1)
    with pytest.raises(ValueError):
        RetryPolicy(multiplier=0.5)
    with pytest.raises(ValueError):
        RetryPolicy(jitter_floor=2)
    with pytest.raises(ValueError):
        RetryPolicy().delay(0)
