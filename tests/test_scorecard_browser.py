"""The scorecard page in headless Chromium: the verdicts, the concept table, the specificity, purity and
frontier plots, logit consistency and the family explorer draw with no console error, the unit
measure picker redraws, the top bar links the page, and a hostile concept name stays text."""

from __future__ import annotations

import pytest
from browser_pages import assert_clean, open_page, wait_for
from test_demo import tiny_demo

from interp.app.demo import run_demo

HOSTILE = "<script>window.pwned(1)</script><img src onerror\\x3dalert(1)>"  # no "=": NAME=REGEX splits there


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    cfg = tiny_demo(tmp_path_factory.mktemp("card") / "demo")
    cfg.scorecard.concepts = (f"{HOSTILE}=def",)
    run_demo(cfg)
    return cfg


def test_scorecard_page_draws_and_keeps_hostile_text_inert(browser, demo, shots):
    url = (demo.report_dir / "scorecard.html").as_uri()
    logs = open_page(browser, url)
    wait_for(browser, "document.querySelectorAll('#concept-table tbody tr').length > 0")
    names = browser.execute_script(
        "return Array.from(document.querySelectorAll('#concept-table td:first-child')).map(td => td.textContent)"
    )
    assert HOSTILE in names and "python.keyword def" in names
    assert (
        browser.execute_script("return document.querySelectorAll('#concept-table img, #concept-table svg').length") == 0
    )
    wait_for(
        browser, "document.querySelectorAll('.js-plotly-plot').length >= 5"
    )  # specificity, purity, deciles, frontier
    assert browser.execute_script("return document.querySelectorAll('#verdicts table.verdicts tbody tr').length") > 0
    browser.execute_script(
        "var s = document.getElementById('unit-measure'); s.value = 'pearson_r'; s.dispatchEvent(new Event('change'));"
    )
    wait_for(browser, "document.querySelector('#purity .js-plotly-plot').textContent.indexOf('Pearson') >= 0")
    assert browser.execute_script("return document.querySelector('#family .member') !== null")
    browser.execute_script(
        "var i = document.getElementById('family-id'); i.value = '3';"
        "i.dispatchEvent(new KeyboardEvent('keydown', {key: 'Enter'}));"
    )
    wait_for(browser, "location.hash === '#family-3'")
    assert browser.execute_script("return document.querySelector('#family .member').textContent.indexOf('16/#3') === 0")
    browser.save_screenshot(str(shots / "scorecard.png"))
    assert_clean(browser, logs)
    open_page(browser, (demo.report_dir / "index.html").as_uri())
    assert wait_for(
        browser, "Array.from(document.querySelectorAll('.topbar a')).some(a => a.textContent === 'Scorecard')"
    )
