"""The report's live panels in headless Chromium: served by `interp serve`, the prompt view shows the
tokens and features of typed text (hostile text stays text) and the steering panel changes the
continuation; opened from file://, both say how to start the server."""

from __future__ import annotations

import threading

import pytest
from browser_pages import HOSTILE_LINES, assert_clean, open_page, wait_for
from tiny_live import DOCUMENTS, HOOK, tiny_opened

from interp.app.config import ReportConfig
from interp.app.report.write import write_report
from interp.app.serve import LiveModel, ReportServer
from interp.features.analysis.config import AnalysisConfig
from interp.features.analysis.run import analyze
from interp.model.corpus import token_sequences

N_CTX = 128  # room for the hostile lines


@pytest.fixture(scope="module")
def live_report(tmp_path_factory):
    opened = tiny_opened(context_length=N_CTX)
    root = tmp_path_factory.mktemp("live")
    windows = token_sequences(DOCUMENTS, opened.model.tokenizer, N_CTX, seed=0)
    cfg = AnalysisConfig(tokens=64 * N_CTX, batch_size=16, top_k=4, intervals=3, interval_samples=2)
    analysis = analyze(opened.model, opened.sae, HOOK, windows, cfg, progress=False)
    analysis.save(root / "analysis")
    write_report(ReportConfig(analysis=str(root / "analysis"), out=str(root / "report")), progress=False)
    server = ReportServer(root / "report", LiveModel(opened), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root / "report", f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def type_into(driver, element_id: str, text: str) -> None:
    driver.execute_script("var e = document.getElementById(arguments[0]); e.value = arguments[1];", element_id, text)


def test_prompt_view_shows_tokens_and_features(browser, live_report, shots):
    _, url = live_report
    logs = open_page(browser, url + "prompt.html")
    wait_for(browser, "document.getElementById('prompt-run')")
    type_into(browser, "prompt-text", "def f12(x):\n    return x * 12")
    browser.execute_script("document.getElementById('prompt-run').click()")
    wait_for(browser, "document.querySelectorAll('#prompt-tokens .tok').length > 0")
    tokens = browser.execute_script(
        "return Array.from(document.querySelectorAll('#prompt-tokens .tok')).map(s => s.textContent)"
    )
    assert "".join(tokens).replace("↵", "\n").startswith("def")
    links = wait_for(
        browser, "Array.from(document.querySelectorAll('#prompt-features a')).map(a => a.getAttribute('href'))"
    )
    assert links and all(link.startswith("feature.html#") for link in links)
    shaded = browser.execute_script(
        "return Array.from(document.querySelectorAll('#prompt-tokens .tok')).filter(s => s.style.background).length"
    )
    assert shaded >= 1
    assert "text=" in browser.current_url  # the state is in the address
    browser.save_screenshot(str(shots / "prompt-view.png"))
    assert_clean(browser, logs, origin=url)


def test_hostile_prompt_text_renders_inert(browser, live_report):
    _, url = live_report
    logs = open_page(browser, url + "prompt.html")
    wait_for(browser, "document.getElementById('prompt-run')")
    hostile = "\n".join(HOSTILE_LINES[:2])  # <script> and <img onerror>, within the context
    type_into(browser, "prompt-text", hostile)
    browser.execute_script("document.getElementById('prompt-run').click()")
    wait_for(browser, "document.querySelectorAll('#prompt-tokens .tok').length > 0")
    shown = browser.execute_script("return document.getElementById('prompt-tokens').textContent")
    assert "<script>" in shown.replace("·", " ")
    assert (
        browser.execute_script(
            "return document.querySelectorAll('#prompt-tokens img, #prompt-tokens svg, #prompt-tokens script').length"
        )
        == 0
    )
    assert_clean(browser, logs, origin=url)


def test_steering_panel_changes_the_text(browser, live_report, shots):
    _, url = live_report
    changed = False
    for feature in range(6):  # a random model: some feature's clamp moves the greedy continuation
        logs = open_page(browser, url + f"feature.html#{feature}")
        wait_for(browser, "document.getElementById('steer-run')")
        type_into(browser, "steer-prompt", "def f3(x):\n")
        type_into(browser, "steer-value", "60")
        type_into(browser, "steer-tokens", "12")
        browser.execute_script("document.getElementById('steer-run').click()")
        status = wait_for(
            browser,
            "['done', 'no change'].indexOf(document.getElementById('steer-status').textContent) >= 0 && "
            "document.getElementById('steer-status').textContent",
        )
        clean = browser.execute_script("return document.getElementById('steer-clean').textContent")
        steered = browser.execute_script("return document.getElementById('steer-steered').textContent")
        assert clean  # the clean continuation is shown either way
        assert_clean(browser, logs, origin=url)
        if status == "done":
            assert clean != steered
            changed = True
            browser.save_screenshot(str(shots / "steering.png"))
            break
    assert changed


def test_live_panels_from_file_say_how_to_start_the_server(browser, live_report, tmp_path):
    import shutil

    report, _ = live_report
    quoted = tmp_path / "it's a report"  # a space and a quote: the command must still run when pasted
    shutil.copytree(report, quoted)
    for folder, shown in ((report, str(report)), (quoted, "'" + str(quoted).replace("'", "'\\''") + "'")):
        for page, panel in (("prompt.html", "prompt-body"), ("feature.html#0", "steering")):
            logs = open_page(browser, (folder / page).as_uri().replace("%23", "#"))
            command = f"document.querySelector('#{panel} .command')"
            text = wait_for(browser, f"{command} && {command}.textContent")
            assert text.startswith("interp serve --report " + shown + " --model ")
            assert_clean(browser, logs)


def test_the_info_endpoint_describes_the_served_sae(live_report):
    import json
    import urllib.request

    _, url = live_report
    with urllib.request.urlopen(url + "api/info") as response:
        info = json.loads(response.read())
    assert info["d_sae"] == 96 and info["hook"] == HOOK and info["limits"]["context_tokens"] == N_CTX


def test_a_live_panel_whose_server_went_away_says_how_to_start_it(browser, live_report):
    report, _ = live_report
    server = ReportServer(report, LiveModel(tiny_opened(context_length=N_CTX)), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    logs = open_page(browser, f"http://127.0.0.1:{server.server_address[1]}/prompt.html")
    wait_for(browser, "document.getElementById('prompt-run')")
    server.shutdown()
    server.server_close()
    browser.execute_script("document.getElementById('prompt-run').click()")
    text = wait_for(
        browser,
        "(document.getElementById('prompt-status').textContent.indexOf('does not answer') >= 0) && "
        "document.getElementById('prompt-status').textContent",
    )
    assert "start it again: interp serve --report REPORT --model" in text
    assert not [entry for entry in logs if entry["level"] == "SEVERE"]  # the page itself loaded cleanly
