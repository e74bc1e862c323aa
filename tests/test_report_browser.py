"""The HTML report: its Python side (escaping, labels, rounding), then the pages themselves in
headless Chromium from file:// — no console errors, plots drawn, sorting and filtering, links, and a
corpus full of <script> and <img onerror> text shown as text with nothing run.

Screenshots land in the test's temporary folder (printed with -s)."""

from __future__ import annotations

import json
import math
import re
import shutil
import time
from pathlib import Path

import pytest
import torch
from browser_pages import HOSTILE_LINES, assert_clean, open_page, wait_for

from interp.app.config import ReportConfig
from interp.app.report import write as report_write
from interp.app.report.data import heatmap_order, sig_array
from interp.app.report.html import PLOTLY, script_json, write_page
from interp.app.report.write import copy_static, write_report
from interp.features.analysis.config import AnalysisConfig
from interp.features.analysis.run import analyze
from interp.features.labels.files import read_labels

T = 32


def rows_as_text(report: Path) -> list[list]:
    """The index rows of data/summary.js, their token ids ([5] top tokens, [6] promoted) as strings."""
    rows = json.loads((report / "data" / "summary.js").read_text().split("=", 1)[1].rstrip().rstrip(";"))
    vocab = json.loads((report / "data" / "vocab.js").read_text().split("=", 1)[1].split(";\n")[0])
    return [[*r[:5], [vocab[t] for t in r[5]], [vocab[t] for t in r[6]], *r[7:]] for r in rows]


# ---- Python side ---------------------------------------------------------------------------------


def test_script_json_cannot_close_a_script():
    value = {"s": "</script><!-- <script>alert(1)</script> & \u2028"}
    text = script_json(value)
    for bad in ("</", "<!--", "<script", "\u2028"):
        assert bad not in text
    assert json.loads(text) == value


def test_sig_array_rounds_short():
    values = sig_array(torch.tensor([0.123456, 123456.7, -0.00098765, 0.0, float("inf"), 9.99996]))
    assert values == [0.1235, 123500.0, -0.0009877, 0.0, 0.0, 10.0]
    assert json.dumps(values) == "[0.1235, 123500.0, -0.0009877, 0.0, 0.0, 10.0]"


def test_labels_file_forms_and_errors(tmp_path):
    assert read_labels(tmp_path) == {}
    (tmp_path / "labels.json").write_text(json.dumps({"features": [{"id": 3, "label": "x", "score": 0.5}]}))
    assert read_labels(tmp_path)[3]["label"] == "x"
    (tmp_path / "labels.json").write_text(json.dumps({"features": {"4": {"label": "y", "score": None}}}))
    assert read_labels(tmp_path)[4]["label"] == "y"
    (tmp_path / "labels.json").write_text(json.dumps({"features": [{"id": "3", "label": "x"}]}))
    with pytest.raises(ValueError, match="integer 'id'"):
        read_labels(tmp_path)
    (tmp_path / "labels.json").write_text(json.dumps({"labels": []}))
    with pytest.raises(ValueError, match="field 'features'"):
        read_labels(tmp_path)
    (tmp_path / "labels.json").write_text("{")
    with pytest.raises(ValueError, match="not readable JSON"):
        read_labels(tmp_path)


def test_report_of_a_missing_analysis_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="interp analyze"):
        write_report(ReportConfig(analysis=str(tmp_path / "nothing"), out=str(tmp_path / "report")), progress=False)


# ---- a report built from hostile text ------------------------------------------------------------


@pytest.fixture(scope="module")
def hostile_report(tmp_path_factory) -> Path:
    """An analysis of a tiny model over a corpus of hostile HTML, with hostile labels and a hostile
    training record, written as a report."""
    import transformer_lens.model_bridge.sources.native  # noqa: F401
    from transformer_lens.model_bridge.bridge import TransformerBridge

    from interp.model.corpus import token_sequences
    from interp.model.record import Sample, TrainingRecord
    from interp.model.tokenizer import train_tokenizer
    from interp.model.transformer import LoadedModel
    from sae.architectures import build_sae

    root = tmp_path_factory.mktemp("hostile")
    documents = [f"def f{i}(x):\n    s = '{HOSTILE_LINES[i % 4]}'\n    return x + {i}\n" for i in range(200)]
    tokenizer = train_tokenizer(documents, vocab_size=320, show_progress=False)
    bridge = TransformerBridge.boot_native(
        dict(
            d_model=32,
            d_head=8,
            n_layers=1,
            n_ctx=T,
            n_heads=4,
            d_vocab=320,
            d_mlp=64,
            act_fn="gelu",
            seed=0,
            normalization_type="LN",
        )
    )
    model = LoadedModel(bridge=bridge.eval(), tokenizer=tokenizer, name="<b>tiny</b>", context_length=T)
    torch.manual_seed(0)
    sae = build_sae("topk", d_in=64, d_sae=80, k=10)
    windows = token_sequences(documents, tokenizer, T, seed=0)
    cfg = AnalysisConfig(tokens=96 * T, batch_size=32, top_k=6, intervals=4, interval_samples=3)
    analysis = analyze(
        model,
        sae,
        "blocks.0.mlp.hook_post",
        windows,
        cfg,
        progress=False,
        meta={"corpus": {"spec": "<img src=x onerror=alert(1)>", "split": "heldout"}},
    )
    folder = root / "analysis"
    analysis.save(folder)
    labels = [  # every fourth score rests on 3 held-out firings: high, but worth less than its neighbours'
        {
            "id": i,
            "label": f"label {i}",
            "score": 0.5 + i / 200,
            "held_out": {"positives": 3 if i % 4 == 0 else 200, "negatives": 900},
        }
        for i in range(0, 80, 2)
    ]
    labels[0]["label"] = HOSTILE_LINES[1]
    (folder / "labels.json").write_text(json.dumps({"features": labels}))
    record = TrainingRecord(
        prompt=HOSTILE_LINES[0],
        prompt_token_strings=[
            "<|endoftext|>",
            '<span style="background-image:url(http://127.0.0.1:9/x.png)">x</span>',
            '<a href="http://127.0.0.1:9/">link</a>',
        ],
        sample_temperature=0.8,
        sample_seed=0,
    )
    for step in range(5):
        record.add_train_step(step=step, tokens=step * 100, loss=5.0 - step * 0.5, lr=1e-3, seconds=step * 2.0)
    record.add_heldout(0, 0, 4.0)
    record.add_heldout(4, 400, 3.2)
    record.samples.append(Sample(step=0, tokens=0, progress=0.0, greedy="\n" * 60, sampled="a\n    b"))
    record.samples.append(Sample(step=4, tokens=400, progress=1.0, greedy=HOSTILE_LINES[2], sampled=HOSTILE_LINES[1]))
    record.summary = {
        "tokens": 400,
        "heldout_loss": 3.2,
        "heldout_bytes": 1000,
        "heldout_predictions": 300,
        "heldout_bits_per_byte": 3.2 * 300 / math.log(2) / 1000,
        "compressors_bits_per_byte": {"gzip -9": 2.1, "xz -9e": 1.8},
    }
    record.tensors = {
        "prompt_tokens": torch.arange(3),
        "mlp_post.init": torch.randn(1, 3, 64),
        "mlp_post.final": torch.randn(1, 3, 64),
    }
    record.save(folder)
    write_report(ReportConfig(analysis=str(folder), out=str(root / "report")), progress=False)
    return root / "report"


def test_report_folder_is_complete(hostile_report):
    for name in (
        "index.html",
        "feature.html",
        "model.html",
        "plotly-cartesian.min.js",
        "report.js",
        "data/meta.js",
        "data/vocab.js",
        "data/summary.js",
        "data/features-0000.js",
        "data/features-0001.js",
    ):
        assert (hostile_report / name).is_file(), name
    for page in ("index.html", "model.html"):
        text = (hostile_report / page).read_text()
        assert "<script>window" not in text and "<img src=x" not in text and "<b>tiny" not in text
        assert "cdn" not in text.lower() and "https://" not in text


def test_a_failed_rewrite_keeps_the_old_report_whole_and_leaves_no_temp_folder(hostile_report, tmp_path, monkeypatch):
    out = tmp_path / "report"
    shutil.copytree(hostile_report, out)
    before = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    abandoned = tmp_path / ".report.999999999.tmp"  # a build of a killed process
    (abandoned / "data").mkdir(parents=True)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report_write, "write_page", disk_full)  # after the data files, before the pages
    with pytest.raises(OSError, match="No space left"):
        write_report(ReportConfig(analysis=str(hostile_report.parent / "analysis"), out=str(out)), progress=False)
    assert {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]  # no build folder, the abandoned one gone


# ---- the browser ---------------------------------------------------------------------------------


def rendered_ids(driver) -> list[int]:
    return driver.execute_script("""
        return Array.from(document.querySelectorAll('#feature-rows .frow'))
          .sort((a, b) => a.offsetTop - b.offsetTop).map(r => Number(r.dataset.id));""")


def test_index_loads_sorts_and_filters(browser, hostile_report, shots):
    logs = open_page(browser, (hostile_report / "index.html").as_uri() + "#few=0")  # every feature
    wait_for(browser, "document.querySelector('#density-plot .main-svg')")
    rows = rows_as_text(hostile_report)
    by_max = sorted(rows, key=lambda r: (-r[2], r[0]))
    browser.find_element("css selector", ".fhdr [data-key=max]").click()
    assert rendered_ids(browser)[:10] == [r[0] for r in by_max[:10]]
    browser.find_element("css selector", ".fhdr [data-key=max]").click()
    ascending = sorted(rows, key=lambda r: (r[2], r[0]))
    assert rendered_ids(browser)[:10] == [r[0] for r in ascending[:10]]
    browser.find_element("css selector", ".fhdr [data-key=id]").click()
    assert rendered_ids(browser)[:5] == [0, 1, 2, 3, 4]

    browser.find_element("id", "filter").send_keys("#7")
    expected = [r[0] for r in rows if "#7" in f"#{r[0]} {r[7]} {' '.join(r[5])} {' '.join(r[6])}".lower()]
    wait_for(browser, f"document.getElementById('row-count').textContent.startsWith('showing {len(expected)} of')")
    assert rendered_ids(browser) == sorted(expected)
    browser.find_element("id", "filter").clear()
    browser.find_element("id", "filter").send_keys("x")
    wait_for(browser, f"!document.getElementById('row-count').textContent.startsWith('showing {len(expected)} of')")
    browser.save_screenshot(str(shots / "index.png"))
    label_cell = browser.find_element("css selector", ".frow[data-id='0'] > div:nth-child(2)")
    assert label_cell.text == HOSTILE_LINES[1]  # a hostile label, shown as text
    assert_clean(browser, logs)


def test_feature_page_shows_hostile_text_as_text(browser, hostile_report, shots):
    chunk = (hostile_report / "data" / "features-0000.js").read_text()
    features = json.loads(chunk[chunk.index(", ") + 2 : chunk.rindex(")")])
    vocab = json.loads((hostile_report / "data" / "vocab.js").read_text().split("=", 1)[1].split(";\n")[0])
    with_angle = next(
        f["id"]
        for f in features
        if f["fire_count"] and any("<" in vocab[t] for e in f["top"] for t in e[2][0] if t >= 0)
    )
    logs = open_page(browser, (hostile_report / "feature.html").as_uri() + f"#{with_angle}")
    wait_for(browser, "document.querySelector('#activation-histogram .main-svg')")
    wait_for(browser, "document.querySelector('#logit-histogram .main-svg')")
    assert browser.find_element("id", "feature-title").text == f"Feature {with_angle}"
    text = browser.execute_script("return document.getElementById('top-examples').textContent")
    assert "<" in text and ("script" in text or "img" in text or "onerror" in text)
    assert (
        browser.execute_script(
            "return document.querySelectorAll('#top-examples script, #top-examples img, #intervals img').length"
        )
        == 0
    )
    peak = browser.find_element("css selector", "#top-examples .tok.peak")
    assert "activation" in peak.get_attribute("title") and float(peak.get_attribute("data-act")) > 0
    browser.save_screenshot(str(shots / f"feature-{with_angle}.png"))

    link = browser.find_element("css selector", "section.panel a[href^='#']")
    target = int(link.get_attribute("href").rsplit("#", 1)[1])
    link.click()
    wait_for(browser, f"document.getElementById('feature-title').textContent === 'Feature {target}'")
    wait_for(
        browser,
        "document.querySelector('#activation-histogram .main-svg') || document.querySelector('#activation-histogram "
        ".empty')",
    )
    labelled = browser.execute_script("window.location.hash = '#0'; return true")
    assert labelled
    wait_for(browser, "document.getElementById('feature-title').textContent === 'Feature 0'")
    assert browser.find_element("css selector", ".label-chip").text == HOSTILE_LINES[1]
    browser.save_screenshot(str(shots / "feature-0.png"))
    assert_clean(browser, logs)


def visible(text: str) -> str:
    """Text as the model page shows samples: · for a space, ↵ before each newline."""
    return text.replace(" ", "·").replace("\n", "↵\n")


def test_model_page_plots_and_escapes(browser, hostile_report, shots):
    logs = open_page(browser, (hostile_report / "model.html").as_uri())
    wait_for(browser, "document.querySelectorAll('.main-svg').length >= 4")  # loss, bits per byte, 2 heatmaps
    page_text = browser.execute_script("return document.body.textContent")
    assert visible(HOSTILE_LINES[2]) in page_text and visible(HOSTILE_LINES[0]) in page_text
    assert visible("a\n    b") in page_text  # whitespace shown as the text holds it
    # a sample of 60 newlines is 60 visible ↵ in a box of capped height, not 60 rows of page
    boxes = browser.execute_script(
        "return Array.from(document.querySelectorAll('.samples .text')).map(e => [e.textContent, e.clientHeight])"
    )
    blank = [height for text, height in boxes if text.count("↵") >= 60]
    assert blank and all(0 < height < 200 for height in blank), boxes
    stats = browser.execute_script("return document.querySelector('.stats').textContent")
    assert (
        "gzip -9 bits per byte" in stats and "xz -9e bits per byte" in stats and "1.38" in stats
    )  # 3.2 * 300 / ln 2 / 1000
    # the heatmap's tick labels are the prompt tokens as text: markup in a token is not an element
    ticks = browser.execute_script(
        "return Array.from(document.querySelectorAll('.ytick text')).map(e => e.textContent)"
    )
    assert '2 <a href="http://127.0.0.1:9/">link</a>' in ticks, ticks
    browser.save_screenshot(str(shots / "model.png"))
    assert_clean(browser, logs)


def test_index_stays_responsive_at_16k_features(browser, tmp_path, shots):
    n = 16384
    g = torch.Generator().manual_seed(0)
    density = (10 ** (-5 * torch.rand(n, generator=g))).tolist()
    maxes = (torch.rand(n, generator=g) * 10).tolist()
    words = ["def", " class", "(", " self", " return", "\n", " import", " the"]
    rows = [
        [
            i,
            round(density[i], 6),
            round(maxes[i], 3),
            round(maxes[i] / 3, 3),
            int(density[i] * 1e6),
            [i % 8, (i * 3) % 8],
            [(i * 5) % 8],
            f"feature about {words[i % 8].strip()} #{i}",
            0.5,
        ]
        for i in range(n)
    ]
    copy_static(tmp_path)
    meta = {"title": "16k", "dead": 0, "l0": 12.0, "tokens": 10**6, "d_sae": n}
    (tmp_path / "data" / "vocab.js").write_text(f"monoReport.vocab = {script_json(words)};\n")
    write_page(tmp_path, "index", "16k", scripts=("data/vocab.js",), data={"meta": meta, "rows": rows}, plots=True)
    logs = open_page(browser, (tmp_path / "index.html").as_uri())
    wait_for(browser, "document.querySelector('#density-plot .main-svg')")
    assert browser.execute_script("return document.querySelectorAll('#feature-rows .frow').length") < 120
    elapsed = browser.execute_script("""
        const t0 = performance.now();
        document.querySelector('.fhdr [data-key=max]').click();
        document.querySelector('.fhdr [data-key=label]').click();
        return performance.now() - t0;""")
    assert elapsed < 1000, f"two sorts of 16k rows took {elapsed:.0f} ms"
    matching = sum(
        "class" in f"#{r[0]} {r[7]} {' '.join(words[t] for t in r[5])} {' '.join(words[t] for t in r[6])}".lower()
        for r in rows
    )
    start = time.time()
    browser.find_element("id", "filter").send_keys("class")
    wait_for(browser, f"document.getElementById('row-count').textContent === 'showing {matching:,} of {n:,}'")
    assert time.time() - start < 3
    browser.execute_script("document.getElementById('feature-rows').scrollTop = 200000")
    wait_for(browser, "document.querySelectorAll('#feature-rows .frow').length > 5")
    browser.save_screenshot(str(shots / "index-16k.png"))
    assert_clean(browser, logs)


def test_heatmap_order_groups_neurons_by_peak_token_then_peak():
    acts = torch.tensor(
        [
            [0.1, 2.0, -0.1, 0.0],  # neuron 1 peaks here (2.0)
            [0.9, 0.5, 3.0, 0.0],  # neurons 0 (0.9) and 2 (3.0) peak here
            [0.2, 0.1, 0.0, 0.05],  # neuron 3 (0.05)
        ]
    )
    assert heatmap_order(acts).tolist() == [1, 2, 0, 3]


def chip_text(s: str) -> str:
    """report.js's chipText: the form a token takes on the page."""
    if s == "":
        return "∅"
    s = s.replace("\r", "␍").replace("\n", "↵").replace("\t", "⇥")
    return re.sub(" {9,}", " " * 8, s).replace(" ", "·")


def test_index_filter_reads_what_the_page_shows_and_keeps_its_state(browser, hostile_report):
    rows = rows_as_text(hostile_report)

    def shown(r) -> str:  # the filter's haystack: every text of the row as the page shows it
        label = re.sub("`([^`]*)`", lambda m: "`" + chip_text(m.group(1)) + "`", r[7] or "")
        return "\u241f".join([f"#{r[0]}", label, *map(chip_text, r[5]), *map(chip_text, r[6])]).lower()

    spaced = next(t for r in rows for t in r[5] if t.startswith(" ") and t.strip() and "  " not in t)
    index = (hostile_report / "index.html").as_uri() + "#few=0"
    open_page(browser, index)
    box = browser.find_element("id", "filter")
    for query, term in (
        (chip_text(spaced), chip_text(spaced)),
        (f'"{spaced}"', chip_text(spaced)),
        (spaced.strip(), spaced.strip()),
    ):
        box.clear()
        box.send_keys(query)
        expected = sorted(r[0] for r in rows if term.lower() in shown(r))
        wait_for(browser, f"document.getElementById('row-count').textContent.startsWith('showing {len(expected)} of')")
        assert set(rendered_ids(browser)) <= set(expected), query
    with_space = sum(chip_text(spaced).lower() in shown(r) for r in rows)
    assert with_space <= sum(spaced.strip().lower() in shown(r) for r in rows)  # "·def" is narrower than "def"

    box.clear()
    box.send_keys("fired>=3 density<50%")
    expected = [r[0] for r in rows if r[4] >= 3 and r[1] < 0.5]
    wait_for(browser, f"document.getElementById('row-count').textContent.startsWith('showing {len(expected)} of')")
    assert "q=fired%3E%3D3%20density%3C50%25" in browser.current_url  # the state is in the URL
    browser.find_element("css selector", ".fhdr [data-key=max]").click()
    state_url = browser.current_url
    assert "sort=max" in state_url
    open_page(browser, "about:blank")
    open_page(browser, state_url)  # reopened: the same sort and filter
    wait_for(browser, f"document.getElementById('row-count').textContent.startsWith('showing {len(expected)} of')")
    assert browser.find_element("id", "filter").get_attribute("value") == "fired>=3 density<50%"
    by_max = [r[0] for r in sorted((r for r in rows if r[4] >= 3 and r[1] < 0.5), key=lambda r: (-r[2], r[0]))]
    assert rendered_ids(browser)[:5] == by_max[:5]

    box = browser.find_element("id", "filter")
    box.clear()
    box.send_keys("#3")
    box.send_keys("\n")  # Enter on an id opens the feature
    wait_for(browser, "location.pathname.endsWith('feature.html') && location.hash === '#3'")


def open_blank_page(browser, folder: Path) -> None:
    """A page of the report's shell with no script of its own: report.js's helpers, nothing else."""
    copy_static(folder)
    write_page(folder, "page", "t")
    page = folder / "page.html"
    page.write_text(page.read_text().replace('<script src="page.js"></script>', ""))
    open_page(browser, page.as_uri())


def test_labels_show_whitespace_as_the_chips_do(browser, tmp_path):
    from interp.features.labels.rules import show_token

    open_blank_page(browser, tmp_path)
    label = f"fires on {show_token(chr(10) + ' ' * 7)}, {show_token(chr(10) + ' ' * 11)} and {show_token('a`b')} (+3)"
    assert "\\n" in label and "\\`" in label  # the escapes labels.json holds
    shown = browser.execute_script("return monoReport.labelText(arguments[0])", label)
    assert shown == "fires on `↵·······`, `↵········` and `a`b` (+3)"  # 7 and 11 spaces: now told apart


def test_auroc_lower_bound_is_hanley_mcneil():
    from interp.app.report.data import auroc_lower_bound

    # A = 0.9 from 50 positives and 50 negatives, by hand: shrunk to A' = 45.5/51 = 0.892157,
    # Q1 = A'/(2 - A') = 0.805310, Q2 = 2A'^2/(1 + A') = 0.841309, SE = 0.033335, bound A' - 1.96 SE
    assert auroc_lower_bound(0.9, 50, 50) == pytest.approx(0.826820, abs=2e-5)
    assert auroc_lower_bound(1.0, 3, 3000) < auroc_lower_bound(0.9, 300, 3000) < 0.9  # 3 firings: worth less


def test_index_sorts_by_the_lower_bound_and_hides_few_firings_by_default(browser, hostile_report, tmp_path):
    rows = rows_as_text(hostile_report)
    scored = sorted((r for r in rows if r[10] is not None), key=lambda r: (-r[10], r[0]))
    unscored = sorted(r[0] for r in rows if r[10] is None)
    assert scored and unscored  # the fixture has both
    assert [r[0] for r in scored] != [r[0] for r in sorted(scored, key=lambda r: (-r[8], r[0]))]  # bound != score order
    open_page(browser, (hostile_report / "index.html").as_uri())
    wait_for(browser, f"document.getElementById('row-count').textContent.startsWith('showing {len(rows)} of')")
    assert rendered_ids(browser)[:5] == ([r[0] for r in scored] + unscored)[:5]  # by lower bound, unscored last
    browser.find_element("css selector", ".fhdr [data-key=lower]").click()  # ascending: unscored rows still last
    ascending = [r[0] for r in sorted(scored, key=lambda r: (r[10], r[0]))]
    assert rendered_ids(browser)[:5] == ascending[:5]
    browser.find_element("css selector", ".fhdr [data-key=lower]").click()  # back to descending: scored[0] on top
    cell = browser.find_element("css selector", f".frow[data-id='{scored[0][0]}'] > div:nth-child(3)")
    assert cell.text.endswith(f"· {scored[0][9]:,}")  # the held-out positives behind the score
    open_page(browser, (hostile_report / "feature.html").as_uri() + f"#{scored[0][0]}")
    shown = wait_for(
        browser, "document.getElementById('label-score') && document.getElementById('label-score').textContent"
    )
    assert f"from {scored[0][9]:,} held-out firings" in shown and "lower bound" in shown

    # the same index with three features that fired fewer than 10 times: hidden until the toggle is cleared
    report = tmp_path / "report"
    shutil.copytree(hostile_report, report)
    page = (report / "index.html").read_text()
    inline = re.search(r'<script id="report-rows" type="application/json">(.*?)</script>', page, re.S)
    few = json.loads(inline.group(1))
    for r in few[:3]:
        r[4] = 4
    (report / "index.html").write_text(page.replace(inline.group(1), script_json(few)))
    open_page(browser, (report / "index.html").as_uri())
    wait_for(browser, f"document.getElementById('row-count').textContent.startsWith('showing {len(rows) - 3} of')")
    assert browser.find_element("id", "hide-few").is_selected()
    assert "fewer than 10 firings" in browser.find_element("css selector", ".toolbar").text  # stated on the page
    browser.find_element("id", "hide-few").click()
    wait_for(browser, f"document.getElementById('row-count').textContent.startsWith('showing {len(rows)} of')")
    assert "few=0" in browser.current_url


def test_control_characters_are_drawn_as_control_pictures(browser, tmp_path):
    open_blank_page(browser, tmp_path)
    chip = browser.execute_script("return monoReport.chipText('a\\u0000b\\u001b\\u007f \\u000c')")
    text = browser.execute_script("return monoReport.showToken('\\u0007x')")
    assert (chip, text) == ("a␀b␛␡·␌", "␇x")


@pytest.fixture(scope="module")
def repeated_text_report(tmp_path_factory):
    """Feature 0 peaks at 10 on the same window of text in sequences 0-5 (the only firings in the
    octave [8, 16)) and fires below 8 on random text elsewhere; feature 1 fires on random text only."""
    from planted import planted_analysis, zipf_tokens

    g = torch.Generator().manual_seed(11)
    n_seq, T_, F = 30, 24, 2
    tokens = zipf_tokens(n_seq, T_, 40, seed=3)
    tokens[1:6] = tokens[0]  # six sequences with the same text
    f = torch.zeros(n_seq, T_, F)
    f[:6, 10, 0] = 10.0
    later = torch.rand(n_seq - 6, T_, generator=g) < 0.2
    f[6:, :, 0] = later * (0.5 + 7 * torch.rand(n_seq - 6, T_, generator=g))
    f[:, 1:, 1] = (torch.rand(n_seq, T_ - 1, generator=g) < 0.3) * torch.rand(n_seq, T_ - 1, generator=g)
    cfg = AnalysisConfig(top_k=8, intervals=4, interval_samples=4, window_left=4, window_right=2, random_sequences=5)
    vocab = ["<bos>"] + [f" w{i}" for i in range(1, 40)]
    batches = [(f[s : s + 8], tokens[s : s + 8]) for s in range(0, n_seq, 8)]
    analysis = planted_analysis(batches, vocab, cfg, W_dec=torch.randn(F, 8, generator=g), expected_sequences=n_seq)
    root = tmp_path_factory.mktemp("repeats")
    analysis.save(root / "analysis")
    write_report(ReportConfig(analysis=str(root / "analysis"), out=str(root / "report")), progress=False)
    return analysis, root / "report"


def test_top_examples_show_repeated_text_once_and_the_octaves_do_not_repeat_them(repeated_text_report):
    from interp.app.report.data import ReportData

    analysis, _ = repeated_text_report
    record = ReportData(analysis, {}).feature(0)
    top = record["top"]
    assert top[0][0] == 10.0 and top[0][3] == 6  # the six sequences of the same text: one example, counted
    assert sum(e[3] for e in top) == 8 and all(e[3] == 1 for e in top[1:])  # every kept slot accounted for
    windows = [tuple(e[2][0]) for e in top]
    assert len(set(windows)) == len(windows)
    by_octave = {iv[0]: iv for iv in record["intervals"]}
    highest = by_octave[8.0]  # [8, 16) holds only the repeated text: every sample repeats the top example
    assert highest[2] == 6 and highest[4] == [] and highest[5] == min(6, 4)
    for iv in record["intervals"]:
        shown = [tuple(e[1][0]) for e in iv[4]]
        assert len(set(shown)) == len(shown) and not set(shown) & set(windows)
    assert ReportData(analysis, {}).feature(1)["top"] and all(
        e[3] == 1 for e in ReportData(analysis, {}).feature(1)["top"]
    )


def test_feature_page_marks_repeated_text(browser, repeated_text_report):
    _, report = repeated_text_report
    logs = open_page(browser, (report / "feature.html").as_uri() + "#0")
    wait_for(browser, "document.querySelector('#top-examples .example')")
    badges = browser.execute_script(
        "return Array.from(document.querySelectorAll('#top-examples .example')).map(e => "
        "(e.querySelector('.repeats') || {}).textContent || '')"
    )
    assert badges[0] == "×6" and not any(badges[1:]) and len(badges) == 3
    note = browser.find_element("css selector", "#intervals .repeated").text
    assert note == "4 more samples from this octave repeat the text of an example above"
    assert_clean(browser, logs)


def test_byte_fragments_are_marked_by_id(browser, hostile_report):
    meta = json.loads((hostile_report / "data" / "meta.js").read_text().split("=", 1)[1].rstrip().rstrip(";"))
    fragments = set(meta["fragment_ids"])
    vocab = json.loads((hostile_report / "data" / "vocab.js").read_text().split("=", 1)[1].split(";\n")[0])
    assert len(fragments) >= 128 and all("\\x" in vocab[i] for i in fragments)
    chunk = (hostile_report / "data" / "features-0000.js").read_text()
    features = json.loads(chunk[chunk.index(", ") + 2 : chunk.rindex(")")])

    def listed(f):
        return [t[0] for t in f["logits"]["top"][:10] + f["logits"]["bottom"][:10]]

    f = next(f for f in features if 0 < sum(t in fragments for t in listed(f)) < 20)
    expected = sum(t in fragments for t in listed(f))
    logs = open_page(browser, (hostile_report / "feature.html").as_uri() + f"#{f['id']}")
    wait_for(browser, f"document.getElementById('feature-title').textContent === 'Feature {f['id']}'")
    marked = browser.execute_script("return document.querySelectorAll('.grid2b .chip.fragment').length")
    plain = browser.execute_script("return document.querySelectorAll('.grid2b .chip:not(.fragment)').length")
    assert (marked, plain) == (expected, 20 - expected)
    assert browser.find_element("css selector", ".fragment-note").text.startswith(f"{expected} of these (dashed)")
    title = browser.execute_script("return document.querySelector('.grid2b .chip.fragment').title")
    assert "byte fragment" in title
    assert_clean(browser, logs)


def test_plotly_is_the_cartesian_build_and_only_where_pages_plot(hostile_report):
    bundle = (hostile_report / PLOTLY).read_text()
    assert bundle.startswith("/**\n* plotly.js (cartesian - minified)")
    plotting = {"index", "feature", "model", "neurons"}
    for page in hostile_report.glob("*.html"):
        loads = f'<body data-plotly="{PLOTLY}">' in page.read_text()
        assert loads == (page.stem in plotting), page.name
    assert not list(hostile_report.glob("plotly.min.js"))  # the full build is not shipped


def test_every_chart_is_a_trace_type_of_the_shipped_build(browser, hostile_report):
    """Each page's Plotly charts use trace types that the cartesian build registers (an unknown type would
    draw nothing), and the charts draw."""
    chunk = (hostile_report / "data" / "features-0000.js").read_text()
    fired = next(f["id"] for f in json.loads(chunk[chunk.index(", ") + 2 : chunk.rindex(")")]) if f["fire_count"])
    for page, plots in (("index.html", 1), (f"feature.html#{fired}", 2), ("model.html", 4), ("neurons.html", 2)):
        name, _, fragment = page.partition("#")
        logs = open_page(browser, (hostile_report / name).as_uri() + (f"#{fragment}" if fragment else ""))
        drawn = "Array.from(document.querySelectorAll('.js-plotly-plot')).filter(gd => gd._fullLayout).length"
        assert wait_for(browser, f"{drawn} >= {plots} && {drawn}") == plots, page
        types = browser.execute_script(
            "return Array.from(document.querySelectorAll('.js-plotly-plot'))"
            ".flatMap(gd => gd.data.map(t => t.type || 'scatter'))"
        )
        registered = browser.execute_script("return Object.keys(Plotly.PlotSchema.get().traces)")
        assert types and set(types) <= set(registered), (page, types)
        assert_clean(browser, logs)


def test_the_text_does_not_wait_for_plotly_and_charts_draw_when_it_arrives(browser, hostile_report, tmp_path):
    report = tmp_path / "report"
    shutil.copytree(hostile_report, report)
    (report / PLOTLY).rename(report / "later.js")  # Plotly has not arrived when the page runs
    open_page(browser, (report / "index.html").as_uri() + "#few=0")
    wait_for(browser, "document.querySelectorAll('#feature-rows .frow').length > 0")
    assert browser.execute_script("return window.Plotly === undefined && monoReport.pendingPlots.length") == 1
    browser.execute_script(
        "var s = document.createElement('script'); s.src = 'later.js'; s.onload = monoReport.plotlyLoaded;"
        "document.head.appendChild(s);"
    )
    wait_for(browser, "document.getElementById('density-plot')._fullLayout && monoReport.pendingPlots.length === 0")


def test_the_score_column_shows_its_positives_whole(browser, hostile_report):
    open_page(browser, (hostile_report / "index.html").as_uri() + "#few=0")
    wait_for(browser, "document.querySelectorAll('#feature-rows .frow').length > 0")
    cells = "Array.from(document.querySelectorAll('#feature-rows .frow > div:nth-child(3)')).filter(d => d.textContent)"
    shown = browser.execute_script(f"return {cells}.map(d => [d.textContent, d.scrollWidth <= d.clientWidth])")
    assert shown and any(" · 200" in text for text, _ in shown)
    assert all(whole for _, whole in shown), [text for text, whole in shown if not whole]
