"""Write a report folder that opens from disk with no network:

  index.html             every feature in a sortable, filterable table (rows rendered virtually),
                         the feature-density distribution; data inline as JSON
  feature.html#ID        one data-driven page for every feature; it loads data/features-NNNN.js
                         (CHUNK features each) with a <script> tag, which works from file://
  model.html             training curves, samples from the fixed prompt, neuron heatmaps
  neurons.html, neuron.html#J   for SAEs on MLP neurons: see interp.report.neurons
  data/meta.js, data/vocab.js, data/summary.js, data/features-NNNN.js
  report.css, report.js, index.js, feature.js, model.js, plotly.min.js

Text from the corpus is untrusted: every page builds its DOM with textContent, and JSON placed in
a <script> has `<`, `>`, `&`, U+2028 and U+2029 written as \\u escapes, so no string can close the
script element or open a comment.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from interp.analysis import Analysis
from interp.report.data import ReportData, read_labels, report_meta, training_data

ASSETS = Path(__file__).parent / "assets"
STATIC_FILES = ("report.css", "report.js", "index.js", "feature.js", "model.js")
CHUNK = 64  # features per data file


def script_json(value: Any) -> str:
    """JSON that is safe inside a <script> element and inside a .js file."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for raw, escaped in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(raw, escaped)
    return text


def plotly_js() -> Path:
    """plotly.min.js from the installed plotly package."""
    import plotly

    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise FileNotFoundError(
            f"the installed plotly package has no {path}; reinstall plotly (pip install --force-reinstall plotly)."
        )
    return path


def _page(template: str, title: str, data: dict[str, Any]) -> str:
    """Fill an HTML template in one pass: {{TITLE}} (escaped text) and {{DATA:name}} (inline JSON)."""

    def fill(match: re.Match) -> str:
        return html.escape(title) if match.group(1) == "TITLE" else script_json(data[match.group(2)])

    return re.sub(r"\{\{(TITLE|DATA:(\w+))\}\}", fill, (ASSETS / template).read_text())


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def copy_static(out: Path) -> None:
    """The folder with its scripts, stylesheet and plotly.min.js."""
    (out / "data").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(plotly_js(), out / "plotly.min.js")
    for name in STATIC_FILES:
        shutil.copyfile(ASSETS / name, out / name)


def write_index(out: Path, meta: dict[str, Any], rows: list[list[Any]]) -> None:
    """index.html with the feature rows (see `ReportData.summary_rows`) inline."""
    _write(out / "index.html", _page("index.html", meta["title"], {"meta": meta, "rows": rows}))


def write_report(analysis_dir: str | os.PathLike, out: str | os.PathLike, *, progress: bool = True) -> dict[str, float]:
    """Build the report of the analysis in `analysis_dir` into `out`. Returns timings in seconds."""
    start = time.perf_counter()
    analysis_dir, out = Path(analysis_dir), Path(out)
    analysis = Analysis.load(analysis_dir)
    data = ReportData(analysis, read_labels(analysis_dir))
    meta = report_meta(analysis)
    title = f"{meta['model']} · {meta['hook']} · {meta['d_sae']} features"
    meta["title"] = title
    meta["neurons"] = analysis.neurons is not None  # an SAE on MLP neurons: the neuron pages (interp.report.neurons)
    loaded = time.perf_counter()

    copy_static(out)
    rows = data.summary_rows()
    _write(out / "data" / "meta.js", f"monoReport.meta = {script_json(meta)};\n")
    _write(
        out / "data" / "vocab.js",
        f"monoReport.vocab = {script_json(data.vocab)};\nmonoReport.tokenCounts = {script_json(data.token_counts)};\n",
    )
    _write(out / "data" / "summary.js", f"monoReport.rows = {script_json(rows)};\n")
    for first in tqdm(range(0, data.F, CHUNK), desc="report", unit="chunk", disable=not progress, leave=False):
        features = [data.feature(i) for i in range(first, min(first + CHUNK, data.F))]
        _write(
            out / "data" / f"features-{first // CHUNK:04d}.js",
            f"monoReport.addChunk({first // CHUNK}, {script_json(features)});\n",
        )
    _write(out / "feature.html", _page("feature.html", f"Feature · {title}", {"chunk": CHUNK}))
    _write(
        out / "model.html",
        _page("model.html", f"Model · {title}", {"meta": meta, "training": training_data(analysis_dir)}),
    )
    write_index(out, meta, rows)
    if analysis.neurons is not None:
        from interp.report.neurons import write_neuron_pages

        write_neuron_pages(analysis, out, title)
    done = time.perf_counter()
    return {"load_s": loaded - start, "write_s": done - loaded, "total_s": done - start}
