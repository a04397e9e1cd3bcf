"""``opentelemetry-instrument python app.py`` instruments a bus with no code change: a real
subprocess, an application that never touches a telemetry API, spans on the console."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

APP = """
import asyncio
from dataclasses import dataclass, field

from jeeves_control_tower.ipc import InMemoryCommBus


@dataclass
class Tick:
    n: int
    category: str = field(default="event", init=False)


@dataclass
class HowMany:
    category: str = field(default="query", init=False)


async def main() -> None:
    bus = InMemoryCommBus()
    seen = []

    async def on_tick(event: Tick) -> None:
        seen.append(event.n)

    bus.subscribe("Tick", on_tick)
    bus.register_handler("HowMany", lambda query: len(seen))
    await bus.publish(Tick(1))
    assert await bus.query(HowMany()) == 1
    print("app done")


asyncio.run(main())
"""

# Runs the application as ``python app.py`` would, then says whether the instrumentor was
# switched on in this process (by opentelemetry-instrument, through its entry point).
RUN = """
import runpy, sys
runpy.run_path(sys.argv[1], run_name="__main__")
from jeeves_control_tower.instrumentation import CommBusInstrumentor
print("instrumentor on:", CommBusInstrumentor().is_instrumented_by_opentelemetry)
"""


def _spans(stdout: str) -> list[dict[str, object]]:
    """The spans the console exporter printed (one JSON object each, pretty-printed)."""
    decoder = json.JSONDecoder()
    spans, at = [], 0
    while (start := stdout.find("{", at)) != -1:
        try:
            obj, at = decoder.raw_decode(stdout, start)
        except json.JSONDecodeError:
            at = start + 1
            continue
        if isinstance(obj, dict) and "context" in obj:
            spans.append(obj)
    return spans


def run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    app = tmp_path / "app.py"
    app.write_text(APP)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    clean.update(
        OTEL_SERVICE_NAME="instrumented-app",
        OTEL_TRACES_EXPORTER="console",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        **env,
    )
    instrument = Path(sys.executable).parent / "opentelemetry-instrument"
    return subprocess.run(
        [str(instrument), sys.executable, "-c", RUN, str(app)],
        cwd=tmp_path,
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_opentelemetry_instrument_instruments_the_bus(tmp_path: Path) -> None:
    done = run(tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "app done" in done.stdout
    assert "instrumentor on: True" in done.stdout
    spans = {s["name"]: s for s in _spans(done.stdout)}
    assert {"publish Tick", "process Tick", "query HowMany", "process HowMany"} <= set(spans)
    publish = spans["publish Tick"]
    assert publish["kind"] == "SpanKind.PRODUCER"
    assert publish["resource"]["attributes"]["service.name"] == "instrumented-app"  # type: ignore[index]
    assert spans["process Tick"]["parent_id"] == publish["context"]["span_id"]  # type: ignore[index]


def test_disabled_by_opentelemetry_instrument_the_instrumentor_stays_off(tmp_path: Path) -> None:
    # OTEL_PYTHON_DISABLED_INSTRUMENTATIONS names the entry point: proof that it is what
    # opentelemetry-instrument found (the bus still gets the default telemetry).
    done = run(tmp_path, OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="jeeves_control_tower")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "instrumentor on: False" in done.stdout
