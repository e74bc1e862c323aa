"""The report's neuron pages in headless Chromium from file://: the neuron index (sorted by
polysemanticity, both plots drawn, sorting and filtering), a neuron page whose sentence, drivers and
example groups match `interp.features.neurons`, links both ways between neuron and feature pages by one
share, the index's label-score column, and hostile token strings shown as text with nothing run."""

from __future__ import annotations

import json

import pytest
import torch
from browser_pages import HOSTILE_LINES, assert_clean, open_page, wait_for
from planted import planted_analysis, token_detector_batches, zipf_tokens

from interp.app.config import ReportConfig
from interp.app.report.write import write_report
from interp.features.analysis.config import AnalysisConfig
from interp.features.labels.labeller import run_labels
from interp.features.neurons import neuron_summaries

F, N, V, T, N_SEQ = 24, 8, 48, 24, 90


@pytest.fixture(scope="module")
def neuron_report(tmp_path_factory):
    """A planted SAE on 8 neurons (24 token-detector features, each writing to a few neurons), its
    labels and neuron labels, and the report; some token strings are hostile HTML."""
    from interp.features.analysis.artifact import Analysis

    root = tmp_path_factory.mktemp("neurons-report")
    vocab = ["<bos>"] + [f" w{i}" for i in range(1, V)]
    for k, line in enumerate(HOSTILE_LINES):
        vocab[1 + k] = line  # the most frequent tokens
    g = torch.Generator().manual_seed(0)
    W_dec = torch.relu(torch.randn(F, N, generator=g)) * (torch.rand(F, N, generator=g) < 0.35)
    W_dec[torch.arange(F), torch.arange(F) % N] += 0.5  # every feature writes to at least one neuron
    tokens = zipf_tokens(N_SEQ, T, V, seed=1, exponent=0.7)
    feature_tokens = [[1 + i % (V - 1)] for i in range(F)]
    cfg = AnalysisConfig(top_k=8, intervals=3, interval_samples=3, window_left=5, window_right=2, random_sequences=40)
    analysis = planted_analysis(
        token_detector_batches(tokens, feature_tokens, seed=2),
        vocab,
        cfg,
        W_dec=W_dec,
        unembed=torch.randn(N, V, generator=g),
        neurons=True,
        expected_sequences=N_SEQ,
    )
    analysis.save(root / "analysis")
    run_labels(root / "analysis", progress=False)
    write_report(ReportConfig(analysis=str(root / "analysis"), out=str(root / "report")), progress=False)
    return root / "report", Analysis.load(root / "analysis")


def test_neuron_files_are_written(neuron_report):
    report, _ = neuron_report
    for name in ("neurons.html", "neuron.html", "neurons.js", "neuron.js", "data/neurons.js"):
        assert (report / name).is_file(), name
    for page in ("neurons.html", "neuron.html"):
        assert "<script>window" not in (report / page).read_text()


def test_neuron_index_sorts_filters_and_plots(browser, neuron_report, shots):
    report, analysis = neuron_report
    summaries = neuron_summaries(analysis)
    logs = open_page(browser, (report / "neurons.html").as_uri())
    wait_for(
        browser, "document.querySelector('#score-plot .main-svg') && document.querySelector('#neff-plot .main-svg')"
    )
    ids = browser.execute_script(
        "return Array.from(document.querySelectorAll('#neuron-rows tr')).map(r => Number(r.dataset.id))"
    )
    assert ids == [s.neuron for s in summaries]  # most polysemantic first
    first = browser.find_element("css selector", "#neuron-rows tr:first-child td:nth-child(2)").text
    assert float(first) == pytest.approx(summaries[0].effective_features, rel=2e-3)
    counts = browser.execute_script(
        "return Array.from(document.querySelectorAll('#score-summary tr[data-who] td:nth-child(2)')).map(c => "
        "c.textContent)"
    )
    scored = [
        sum(item["score"] is not None for item in json.loads((folder / "labels.json").read_text())["features"])
        for folder in (report.parent / "analysis", report.parent / "analysis" / "neurons")
    ]
    assert counts == [str(n) for n in scored] and scored[1] == N
    browser.find_element("css selector", ".nhdr th[data-key=id]").click()
    ids = browser.execute_script(
        "return Array.from(document.querySelectorAll('#neuron-rows tr')).map(r => Number(r.dataset.id))"
    )
    assert ids == list(range(N))
    driver = summaries[0].drivers[0].feature
    browser.find_element("id", "neuron-filter").send_keys(f"#{driver} ")
    expected = sorted(s.neuron for s in summaries if driver in [d.feature for d in s.drivers])
    wait_for(browser, f"document.getElementById('neuron-count').textContent === 'showing {len(expected)} of {N}'")
    browser.save_screenshot(str(shots / "neurons.png"))
    assert_clean(browser, logs)


def test_neuron_page_and_links_both_ways(browser, neuron_report, shots):
    report, analysis = neuron_report
    top = neuron_summaries(analysis)[0]
    logs = open_page(browser, (report / "neuron.html").as_uri() + f"#{top.neuron}")
    wait_for(browser, f"document.getElementById('neuron-title').textContent === 'Neuron {top.neuron}'")
    sentence = browser.find_element("id", "neuron-sentence").text
    first = top.drivers[0]
    assert (
        sentence.startswith(f"Neuron {top.neuron} takes ")
        and f"of its activation mass from feature {first.feature} (" in sentence
    )
    assert sentence.count("from feature") == min(3, len(top.drivers)) and "fires for" not in sentence
    drivers = browser.execute_script(
        "return Array.from(document.querySelectorAll('#neuron-drivers tr')).map(r => "
        "[Number(r.dataset.feature), r.children[3].textContent])"
    )
    assert [d for d, _ in drivers] == [d.feature for d in top.drivers]
    own = json.loads((report.parent / "analysis" / "neurons" / "labels.json").read_text())["features"][top.neuron]
    assert browser.find_element("id", "label-score").text.startswith(
        f"score {own['score']:.2g} from {own['held_out']['positives']} held-out firings"
    )
    groups = browser.execute_script(
        "return Array.from(document.querySelectorAll('#neuron-groups .group-head')).map(h => Number(h.dataset.feature))"
    )
    assert groups == [g.feature for g in top.groups]
    assert browser.execute_script("return document.querySelectorAll('#neuron-groups .example').length") == sum(
        len(g.examples) for g in top.groups
    )
    browser.save_screenshot(str(shots / f"neuron-{top.neuron}.png"))
    assert_clean(browser, logs)

    feature = top.drivers[0].feature
    browser.find_element("css selector", f"#neuron-drivers a[href='feature.html#{feature}']").click()
    wait_for(
        browser,
        "document.getElementById('feature-title') && document.getElementById('feature-title').textContent === "
        f"'Feature {feature}'",
    )
    # the feature page lists the neuron back, by the same share, among every neuron that lists it
    listed = browser.execute_script(
        "return Array.from(document.querySelectorAll('#drives-neurons tr')).map(r => "
        "[Number(r.dataset.neuron), r.children[1].textContent])"
    )
    expected = sorted(s.neuron for s in neuron_summaries(analysis) if feature in [d.feature for d in s.drivers])
    assert sorted(j for j, _ in listed) == expected
    assert dict(listed)[top.neuron].split(" of ")[0] == drivers[0][1].strip()
    browser.find_element("css selector", f"#drives-neurons a[href='neuron.html#{top.neuron}']").click()
    wait_for(
        browser,
        "document.getElementById('neuron-title') && document.getElementById('neuron-title').textContent === 'Neuron "
        f"{top.neuron}'",
    )
    assert browser.find_element("css selector", "header nav a.active").text == "Neurons"
    assert_clean(browser, [])


def test_index_shows_label_scores(browser, neuron_report):
    from interp.app.report.data import auroc_lower_bound

    report, analysis = neuron_report
    labels = json.loads((report.parent / "analysis" / "labels.json").read_text())["features"]
    logs = open_page(browser, (report / "index.html").as_uri() + "#few=0")  # opens sorted by the lower bound
    wait_for(browser, "document.querySelector('#feature-rows .frow')")
    scored = [label for label in labels if label["score"] is not None and label["held_out"]["positives"]]

    def bound(label):
        return auroc_lower_bound(label["score"], label["held_out"]["positives"], label["held_out"]["negatives"])

    best = max(scored, key=lambda label: (round(bound(label), 4), -label["id"]))
    shown = browser.execute_script("""return Array.from(document.querySelectorAll('#feature-rows .frow'))
        .sort((a, b) => a.offsetTop - b.offsetTop)[0].children[2].textContent""")
    score, positives = shown.split(" · ")
    assert (
        float(score) == pytest.approx(best["score"], abs=1e-2)
        and int(positives.replace(",", "")) == best["held_out"]["positives"]
    )
    assert_clean(browser, logs)
