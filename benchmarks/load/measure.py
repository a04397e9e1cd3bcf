"""Counting without growing: latency histograms, per-pattern stats, log counters."""

from __future__ import annotations

import logging
import math
import resource
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


class Histogram:
    """Latencies in log-spaced buckets 2 % wide from 1 µs up to about 6 minutes: constant
    memory however long the run; quantiles are the upper edge of their bucket."""

    RATIO = 1.02
    BUCKETS = 1000
    _LOG = math.log(RATIO)

    __slots__ = ("counts", "max", "n", "total")

    def __init__(self) -> None:
        self.counts = [0] * self.BUCKETS
        self.n = 0
        self.max = 0.0
        self.total = 0.0

    def add(self, seconds: float) -> None:
        us = seconds * 1e6
        i = 0 if us <= 1.0 else min(int(math.log(us) / self._LOG) + 1, self.BUCKETS - 1)
        self.counts[i] += 1
        self.n += 1
        self.total += us
        if us > self.max:
            self.max = us

    def quantile(self, q: float) -> float:
        """The ``q`` quantile in µs (0 when empty)."""
        if not self.n:
            return 0.0
        rank = max(1, math.ceil(q * self.n))
        seen = 0
        for i, c in enumerate(self.counts):
            seen += c
            if seen >= rank:
                return min(self.RATIO**i, self.max)
        return self.max

    def summary(self) -> dict[str, Any]:
        return {
            "samples": self.n,
            "p50_us": _r(self.quantile(0.50)),
            "p99_us": _r(self.quantile(0.99)),
            "max_us": _r(self.max),
            "mean_us": _r(self.total / self.n) if self.n else 0.0,
        }


def _r(x: float) -> float:
    return round(x, 1) if x < 1000 else float(round(x))


@dataclass
class PatternStats:
    ops: int = 0  # completed calls while measuring (after the warm-up)
    ops_total: int = 0  # completed calls over the whole run
    errors: Counter[str] = field(default_factory=Counter)
    call: Histogram = field(default_factory=Histogram)  # the producer's await
    e2e: Histogram = field(default_factory=Histogram)  # call -> end of the handler


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class CountingLogger:
    """A structlog-style logger for the library that keeps nothing but counts per level and
    event (and the first few error events in full)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.first_errors: list[dict[str, Any]] = []

    def _log(self, level: str, message: str, fields: dict[str, Any]) -> None:
        self.counts[f"{level}:{message}"] += 1
        if level == "error" and len(self.first_errors) < 10:
            self.first_errors.append({"event": message, **{k: str(v) for k, v in fields.items()}})

    def debug(self, message: str, /, **fields: Any) -> None:
        return None

    def info(self, message: str, /, **fields: Any) -> None:
        return None

    def warning(self, message: str, /, **fields: Any) -> None:
        self._log("warning", message, fields)

    def error(self, message: str, /, **fields: Any) -> None:
        self._log("error", message, fields)

    def exception(self, message: str, /, **fields: Any) -> None:
        self._log("error", message, fields)

    def bind(self, **fields: Any) -> CountingLogger:
        return self

    def of_level(self, level: str) -> dict[str, int]:
        prefix = f"{level}:"
        return {k[len(prefix) :]: v for k, v in self.counts.items() if k.startswith(prefix)}


class StdlibCounter(logging.Handler):
    """Counts WARNING and above from third-party loggers (the OTel SDK's "Queue is full",
    nats-py, redis-py) by logger name."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        self.counts[f"{record.levelname}:{record.name}"] += 1
