"""End to end: ``streamlit run dashboard/app.py`` in headless Chromium against a live demo."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from jeeves_control_tower.demo import DemoHandle

from .browser import chromium, chromium_available, streamlit_server

pytestmark = pytest.mark.browser

GRAPH = '[data-testid="stGraphVizChart"] svg'
GRID = '[data-testid="stDataFrame"] [role="grid"]'


@pytest.fixture(scope="module")
def page(live_demo: DemoHandle) -> Iterator[Any]:
    if not chromium_available():
        if os.environ.get("CI"):
            pytest.fail("chromium and chromedriver are required in CI")
        pytest.skip("chromium / chromedriver not installed")
    from selenium.webdriver.support.ui import WebDriverWait

    with streamlit_server(live_demo.url) as url, chromium() as driver:
        driver.get(url)
        WebDriverWait(driver, 60).until(lambda d: _grid_texts(d, 0) and _graph_texts(d))
        yield driver


def _grid_texts(driver: Any, index: int) -> list[str]:
    """Cell texts of the ``index``-th data grid (Glide keeps an accessible copy in the DOM)."""
    from selenium.webdriver.common.by import By

    grids = driver.find_elements(By.CSS_SELECTOR, GRID)
    if len(grids) <= index:
        return []
    cells = grids[index].find_elements(By.CSS_SELECTOR, '[role="gridcell"], [role="columnheader"]')
    return [c.get_attribute("textContent") or "" for c in cells]


def _graph_texts(driver: Any) -> set[str]:
    from selenium.webdriver.common.by import By

    return {t.text for t in driver.find_elements(By.CSS_SELECTOR, f"{GRAPH} text")}


def test_page_renders_registry_and_flow(page: Any) -> None:
    from selenium.webdriver.common.by import By

    assert "Jeeves Control Tower" in page.title
    assert not page.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')
    registry = _grid_texts(page, 0)
    for name in ("flow_service", "embedder", "billing", "Load vs capacity", "Avg latency"):
        assert name in registry, name
    graph = _graph_texts(page)
    assert {"execute_pipeline", "flow_service", "MemoryStored", "Indexer.on_memory_stored"} <= graph
    latest = _grid_texts(page, 1)
    assert {"publish", "send", "query", "dispatch"} <= set(latest)
    metrics = [m.text for m in page.find_elements(By.CSS_SELECTOR, '[data-testid="stMetric"]')]
    assert any(m.startswith("Healthy services") for m in metrics)


def test_page_updates_live_without_reloading(page: Any) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    page.execute_script("window.__jeeves_marker = 42;")
    before = _grid_texts(page, 1)
    WebDriverWait(page, 30).until(lambda d: _grid_texts(d, 1) and _grid_texts(d, 1) != before)
    assert page.execute_script("return window.__jeeves_marker;") == 42
