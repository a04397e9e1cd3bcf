"""The public suite as a third party runs it: its own test module, pytest-asyncio's strict
mode, warnings as errors, in a separate pytest process.

Checks what the in-repo subclasses cannot: an undeclared feature is a skip that names
it, a feature declared but not kept fails, a subclass without the fixture is an error.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"

MODULE = """
from dataclasses import replace

import pytest

from jeeves_control_tower.testing.conformance import (
    IN_MEMORY,
    TransportConformance,
    TransportUnderTest,
)


class TestHonest(TransportConformance):
    @pytest.fixture
    def transport_under_test(self):
        return TransportUnderTest(IN_MEMORY, None)


class TestLiar(TransportConformance):
    # The in-process bus re-raises a handler's own exception; this claims it does not.
    @pytest.fixture
    def transport_under_test(self):
        return TransportUnderTest(
            replace(IN_MEMORY, name="liar", query_preserves_exception_type=False), None
        )


class TestForgotTheFixture(TransportConformance):
    pass
"""

INI = """[pytest]
asyncio_mode = strict
asyncio_default_fixture_loop_scope = function
filterwarnings = error
addopts = -p no:cacheprovider
"""


def run_suite(tmp_path: Path) -> dict[str, tuple[str, str]]:
    """``{class::test: (outcome, message)}`` of one pytest run of :data:`MODULE`."""
    (tmp_path / "pytest.ini").write_text(INI)
    (tmp_path / "test_third_party.py").write_text(MODULE)
    report = tmp_path / "report.xml"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }
    select = "TestHonest or test_query_handler_error_reaches_the_caller"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", f"--junitxml={report}", "-k", select],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert report.exists(), done.stdout + done.stderr
    outcomes: dict[str, tuple[str, str]] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        name = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"
        results = [c for c in case if c.tag in ("failure", "error", "skipped")]
        if results:
            outcomes[name] = (results[0].tag, results[0].get("message", ""))
        else:
            outcomes[name] = ("passed", "")
    return outcomes


def test_a_third_party_module_runs_the_suite(tmp_path: Path) -> None:
    outcomes = run_suite(tmp_path)
    honest = {k: v for k, v in outcomes.items() if k.startswith("TestHonest::")}
    assert len(honest) == 18
    skipped = {k: v for k, v in honest.items() if v[0] != "passed"}
    assert list(skipped) == ["TestHonest::test_message_id_and_headers_cross_the_wire"]
    outcome, reason = skipped["TestHonest::test_message_id_and_headers_cross_the_wire"]
    assert outcome == "skipped"
    assert "does not declare cross_process" in reason

    liar = outcomes["TestLiar::test_query_handler_error_reaches_the_caller"]
    assert liar[0] == "failure"  # a declared feature the transport does not keep fails

    forgot = outcomes["TestForgotTheFixture::test_query_handler_error_reaches_the_caller"]
    assert forgot[0] == "error"
    assert "transport_under_test" in forgot[1]
