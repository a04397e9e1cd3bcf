"""The load benchmark, one module per job; ``benchmarks/bench_load.py`` runs it and
documents what it measures."""
