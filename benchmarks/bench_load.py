"""Load benchmark: a mixed workload held for minutes through the instrumented bus, in memory
and over Redis and NATS; every message is accounted for.

For each target (``inmemory``, ``redis``, ``nats``) it builds the bus with the built-in
telemetry on, as an application would have it: an OpenTelemetry SDK ``TracerProvider`` with
a ``BatchSpanProcessor`` (every span sampled; the exporter drops spans and counts them), a
private Prometheus ``CollectorRegistry`` and a flow recorder. Over a broker there are two
buses in this process, each with its own transport, as two processes would have them: a
*producer* side and a *consumer* side that holds the subscribers, the handlers and the
services (dispatched to from the producer side through ``RemoteServices``).

``--producers`` tasks (16) then run for ``--duration`` seconds, each cycling through:

- **publish**: an event to ``--subscribers`` (3) subscribers;
- **send**: a durable command to its one handler;
- **query**: request/response (the result is checked);
- **dispatch**: ``CommBusCoordinator.dispatch`` to one of three services (``max_concurrent``
  64, 4 and 1) with the five priorities in turn (the envelope's output is checked).

Handlers suspend now and then (``asyncio.sleep(0)``, sometimes 0.5-1 ms). A producer keeps
at most ``--window`` (16) publish deliveries and sends not yet handled (over a broker they
return before delivery), so the load is steady instead of a growing backlog.

Reported per target: messages per second per pattern and in total (after the warm-up),
p50/p99/max latency per pattern (publish and send: from the call to the end of the handler,
per delivery; query and dispatch: the call), errors per pattern (exceptions, timeouts, wrong
results, terminated envelopes, and, after the producers stop and the consumers drain, lost
messages = sent but never handled, duplicates and out-of-order deliveries per producer),
``max_concurrent`` violations, resident memory (sampled every ``--sample-every`` s: after the
warm-up, at the end, growth), spans ended and dropped by the batch processor, the library's
own error logs and telemetry errors. Latencies are kept in fixed log-spaced histograms (2 %
wide buckets) so the benchmark itself does not grow in memory.

Exits with status 1 if any target had an error, a lost, duplicated or reordered message, a
``max_concurrent`` violation, a telemetry error or an error logged by the library.

Run: ``.venv/bin/python benchmarks/bench_load.py`` (about 7 minutes: 120 s per target), or
``--quick`` (10 s per target, results not written unless ``--output``), ``--targets redis``.
Needs Redis on 127.0.0.1:6379 and NATS with JetStream on 127.0.0.1:4222 (or JT_REDIS_URL /
JT_NATS_URL). Broker state lives under a prefix unique to the run and is deleted at the end.

The code lives in ``benchmarks/load/``, one module per job: ``settings`` (brokers, patterns,
timeouts, services), ``messages``, ``measure`` (histograms, stats, log counters),
``telemetry`` (the SDK set-up and the metric sums), ``workload`` (producers, handlers and the
bookkeeping of every message), ``targets`` (in memory, Redis, NATS; broker clean-up), ``run``
(each target held, stopped and drained), ``report`` (checks, machine, table) and ``cli``.
"""

from __future__ import annotations

import sys

from load.cli import main  # benchmarks/load/ (run from this folder, as procstats)

if __name__ == "__main__":
    sys.exit(main())
