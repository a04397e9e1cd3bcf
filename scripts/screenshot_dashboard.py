"""Take docs/dashboard.png: a real screenshot of the dashboard on a live demo.

    .venv/bin/python scripts/screenshot_dashboard.py [--warmup 45] [--out docs/dashboard.png]
    .venv/bin/python scripts/screenshot_dashboard.py --url http://127.0.0.1:8501 [--out F]

Starts the demo in-process, serves the dashboard with ``streamlit run`` and captures it in
headless Chromium once the registry and the flow graph are on the page. With ``--url`` it
captures a dashboard that is already running there instead (no demo, no warm-up).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.dashboard.browser import chromium, streamlit_server  # noqa: E402

from jeeves_control_tower.demo import DemoConfig, run_demo_in_background  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warmup", type=float, default=45.0, help="seconds of traffic first")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "dashboard.png")
    parser.add_argument("--width", type=int, default=1600)
    parser.add_argument("--url", help="capture the dashboard already running at this URL")
    args = parser.parse_args()

    if args.url:
        capture(args.url, args.out, args.width)
    else:
        config = DemoConfig(rate=25.0, seed=11, flap_period=20.0)
        with run_demo_in_background(config=config) as demo:
            time.sleep(args.warmup)  # let the charts fill a few buckets
            with streamlit_server(demo.url) as url:
                capture(url, args.out, args.width)
    print(f"wrote {args.out}")
    return 0


def capture(url: str, out: Path, width: int) -> None:
    """Open ``url`` in headless Chromium, wait for the graph, a chart and a table, and save a
    screenshot of the whole page to ``out``."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with chromium(width, 1200) as driver:
        driver.get(url)
        WebDriverWait(driver, 60).until(
            lambda d: (
                d.find_elements(By.CSS_SELECTOR, '[data-testid="stGraphVizChart"] svg')
                and d.find_elements(By.CSS_SELECTOR, '[data-testid="stVegaLiteChart"]')
                and d.find_elements(By.CSS_SELECTOR, '[data-testid="stDataFrame"] [role="grid"]')
            )
        )
        time.sleep(3)  # charts animate in; graphviz lays out asynchronously
        block = driver.find_element(By.CSS_SELECTOR, '[data-testid="stMainBlockContainer"]')
        driver.set_window_size(width, int(block.size["height"]) + 160)
        time.sleep(2)
        out.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(out))


if __name__ == "__main__":
    sys.exit(main())
