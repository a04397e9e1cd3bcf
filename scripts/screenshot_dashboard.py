"""Take docs/dashboard.png: a real screenshot of the dashboard on a live demo.

    .venv/bin/python scripts/screenshot_dashboard.py [--warmup 45] [--out docs/dashboard.png]

Starts the demo in-process, serves the dashboard with ``streamlit run`` and captures it in
headless Chromium once the registry and the flow graph are on the page.
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
    args = parser.parse_args()

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with run_demo_in_background(config=DemoConfig(rate=25.0, seed=11, flap_period=20.0)) as demo:
        time.sleep(args.warmup)  # let the charts fill a few buckets
        with streamlit_server(demo.url) as url, chromium(args.width, 1200) as driver:
            driver.get(url)
            WebDriverWait(driver, 60).until(
                lambda d: (
                    d.find_elements(By.CSS_SELECTOR, '[data-testid="stGraphVizChart"] svg')
                    and d.find_elements(By.CSS_SELECTOR, '[data-testid="stVegaLiteChart"]')
                    and d.find_elements(
                        By.CSS_SELECTOR, '[data-testid="stDataFrame"] [role="grid"]'
                    )
                )
            )
            time.sleep(3)  # charts animate in; graphviz lays out asynchronously
            block = driver.find_element(By.CSS_SELECTOR, '[data-testid="stMainBlockContainer"]')
            height = int(block.size["height"]) + 160
            driver.set_window_size(args.width, height)
            time.sleep(2)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(args.out))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
