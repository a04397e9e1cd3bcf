"""The README's Python examples run as written and print what the README says they print.

An example is a ```python block followed by ``Output...:`` and a ```text block.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.brokers import require

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = re.compile(r"```python\n(.*?)```\n\nOutput[^\n]*:\n\n```text\n(.*?)```", re.DOTALL)
EXAMPLES = EXAMPLE.findall((ROOT / "README.md").read_text())


def test_the_readme_has_its_examples() -> None:
    assert len(EXAMPLES) >= 3  # using it, serve(...), RedisTransport.connect(...)


@pytest.mark.parametrize(
    ("code", "output"),
    [
        pytest.param(code, output, id=f"example{i}", marks=[pytest.mark.redis] * is_redis)
        for i, (code, output) in enumerate(EXAMPLES)
        for is_redis in ["RedisTransport" in code]
    ],
)
def test_example_prints_what_the_readme_says(code: str, output: str, tmp_path: Path) -> None:
    if "RedisTransport" in code:
        require("redis://localhost:6379/0", "Redis")
    (tmp_path / "example.py").write_text(code)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run(
        [sys.executable, "example.py"], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout == output
