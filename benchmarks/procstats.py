"""Process figures the benchmarks report (shared by ``bench_soak.py`` and ``bench_load.py``,
which import it from their own folder)."""

from __future__ import annotations

import resource


def rss_mb() -> float:
    """Current resident set size in MiB (from /proc, falling back to the peak)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * resource.getpagesize() / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
