"""End to end: ``streamlit run dashboard/app.py`` in headless Chromium against a live demo."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from jeeves_control_tower.demo import DemoHandle
from tests.helpers import unavailable

from .browser import chromium, chromium_available, streamlit_server

pytestmark = pytest.mark.browser

GRAPH = '[data-testid="stGraphVizChart"] svg'
GRID = '[data-testid="stDataFrame"] [role="grid"]'


@pytest.fixture(scope="module")
def page(live_demo: DemoHandle) -> Iterator[Any]:
    if not chromium_available():
        unavailable("chromium / chromedriver not installed")
    from selenium.webdriver.support.ui import WebDriverWait

    with streamlit_server(live_demo.url) as url, chromium() as driver:
        driver.get(url)
        WebDriverWait(driver, 60).until(lambda d: _grid_texts(d, 0) and _graph_texts(d))
        yield driver


def _grid_texts(driver: Any, index: int) -> list[str]:
    """Cell texts of the ``index``-th data grid (Glide keeps an accessible copy in the DOM),
    read in one script call: one round trip to the browser, however many cells (a call
    per cell made each poll take minutes on a loaded machine)."""
    texts = driver.execute_script(
        "const grids = document.querySelectorAll(arguments[0]);"
        "if (grids.length <= arguments[1]) return [];"
        "return Array.from(grids[arguments[1]].querySelectorAll("
        "'[role=\"gridcell\"], [role=\"columnheader\"]'), c => c.textContent || '');",
        GRID,
        index,
    )
    return [str(t) for t in texts or []]


def _graph_texts(driver: Any) -> set[str]:
    texts = driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0]), t => t.textContent || '');",
        f"{GRAPH} text",
    )
    return {str(t).strip() for t in texts or []}


def _eventually(page: Any, check: Any, timeout: float = 60) -> None:
    """Poll ``check(page)`` (which asserts) until it passes; re-raise its last failure.

    The page is live: on a loaded machine the demo's traffic and the dashboard's refresh
    take a while to show every pattern, so content is waited for, never sampled once."""
    from selenium.webdriver.support.ui import WebDriverWait

    failure: list[AssertionError] = []

    def passes(d: Any) -> bool:
        try:
            check(d)
        except AssertionError as exc:
            failure[:] = [exc]
            return False
        return True

    try:
        WebDriverWait(page, timeout, poll_frequency=1).until(passes)
    except Exception:
        if failure:
            raise failure[0] from None
        raise


def test_page_renders_registry_and_flow(page: Any) -> None:
    from selenium.webdriver.common.by import By

    assert "Jeeves Control Tower" in page.title

    def rendered(d: Any) -> None:
        assert not d.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')
        registry = _grid_texts(d, 0)
        shown = (
            "flow_service", "embedder", "billing", "audit", "Load vs capacity", "In flight",
            "Queued", "Events", "Err / t.o. / retry", "Avg latency", "Capabilities",
        )  # fmt: skip
        for name in shown:
            assert name in registry, name
        graph = _graph_texts(d)
        wanted = {"execute_pipeline", "flow_service", "MemoryStored", "Indexer.on_memory_stored"}
        assert wanted <= graph, wanted - graph
        latest = _grid_texts(d, 1)
        assert {"publish", "send", "query", "dispatch"} <= set(latest), latest
        metrics = [m.text for m in d.find_elements(By.CSS_SELECTOR, '[data-testid="stMetric"]')]
        assert any(m.startswith("Healthy services") for m in metrics), metrics

    _eventually(page, rendered)


def test_page_updates_live_without_reloading(page: Any) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    page.execute_script("window.__jeeves_marker = 42;")
    before = _grid_texts(page, 1)
    WebDriverWait(page, 90).until(lambda d: _grid_texts(d, 1) and _grid_texts(d, 1) != before)
    assert page.execute_script("return window.__jeeves_marker;") == 42


def test_figures_read_true(page: Any) -> None:
    """The corrected figures as a viewer sees them: the span the rates cover is stated,
    no edge that failed reads "0% failed", chart axes use 24-hour time, and both tables
    fit their column (no sideways scrolling hides the error or the trace id)."""
    import re

    def truthful(d: Any) -> None:
        body = d.find_element("css selector", "body").text
        assert re.search(
            r"Rates, shares and charts over \d\d:\d\d:\d\d to \d\d:\d\d:\d\d UTC", body
        )
        assert "from the endpoint's own history" in body
        failed = [t for t in _graph_texts(d) if "failed" in t]
        assert all(not re.search(r"(?<![\d.])0(\.0)?% failed", t) for t in failed), failed
        ticks = d.execute_script(
            "return Array.from(document.querySelectorAll("
            "'[data-testid=\"stVegaLiteChart\"] svg text'), t => t.textContent || '');"
        )
        times = [t for t in ticks or [] if re.fullmatch(r"\d\d:\d\d(:\d\d)?", str(t))]
        assert times, ticks
        assert not any(re.search(r"\b(AM|PM)\b", str(t)) for t in ticks or [])
        overflow = d.execute_script(
            "return Array.from(document.querySelectorAll('[data-testid=\"stDataFrame\"]'),"
            " f => { const s = f.querySelector('.dvn-scroller');"
            " return s ? s.scrollWidth - s.clientWidth : 0; });"
        )
        assert overflow and all(px <= 1 for px in overflow), overflow

    _eventually(page, truthful)
