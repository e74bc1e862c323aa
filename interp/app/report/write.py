"""Write a report folder that opens from disk with no network:

  index.html             every feature in a sortable, filterable table (rows rendered virtually),
                         the feature-density distribution; data inline as JSON
  feature.html#ID        one data-driven page for every feature; it loads data/features-NNNN.js
                         (CHUNK features each) with a <script> tag, which works from file://
  prompt.html            the prompt view: type text, see the features of each token (live with
                         `interp serve`, which also answers feature.html's steering panel; see interp.app.serve)
  model.html             training curves, samples from the fixed prompt, neuron heatmaps
  scorecard.html         with a scorecard (`interp scorecard`): features against neurons and a control
  neurons.html, neuron.html#J   for SAEs on MLP neurons: see interp.app.report.neurons
  data/meta.js, data/vocab.js, data/summary.js, data/features-NNNN.js
  report.css, report.js, live.js, index.js, feature.js, prompt.js, model.js, scorecard.js
  plotly-cartesian.min.js    Plotly's cartesian build, loaded only by the pages that plot

Every page is the shell of interp.app.report.html, which also says how untrusted text stays inert.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from interp.app.config import ReportConfig
from interp.app.report.data import ReportData, report_meta, training_data
from interp.app.report.html import ASSETS, PLOTLY, script_json, write_page
from interp.app.report.neurons import write_neuron_pages
from interp.features.analysis.artifact import Analysis
from interp.features.config import DRIVERS_LISTED
from interp.features.labels.files import read_labels
from interp.features.neurons import neurons_driven
from interp.features.scorecard import FORMAT as SCORECARD_FORMAT
from interp.features.scorecard import FORMAT_VERSION as SCORECARD_VERSION
from interp.features.scorecard import SCORECARD_FILE
from sae.files import TMP_SUFFIX, read_json, temp_path, write_text
from sae.progress import progress_bar

STATIC_FILES = ("report.css", "report.js", "live.js", "index.js", "feature.js", "prompt.js", "model.js", "scorecard.js")
CHUNK = 64  # features per data file


def copy_static(out: Path) -> None:
    """The folder with its scripts, stylesheet and Plotly."""
    (out / "data").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ASSETS / "vendor" / PLOTLY, out / PLOTLY)
    for name in STATIC_FILES:
        shutil.copyfile(ASSETS / name, out / name)


def write_report(cfg: ReportConfig, *, progress: bool = True) -> dict[str, float]:
    """Build the report of the analysis in `cfg.analysis` (and the scorecard in the folder
    `cfg.scorecard`, when given) into `cfg.out`. Returns timings in seconds.

    The report is written into a hidden folder beside `out` and renamed into place when complete, so
    a killed or failed write never leaves a report whose links fail (the old one stays until then).
    Only a report is replaced: a folder holding anything else is refused before any work."""
    cfg.validate()
    out = Path(cfg.out)
    _remove_abandoned_builds(out)
    building = temp_path(out)
    try:
        timings = _write_report(
            Path(cfg.analysis), building, scorecard=_read_scorecard(cfg.scorecard), progress=progress
        )
        replaced = out.with_name(f"{building.name}.old")
        if out.exists():
            os.replace(out, replaced)
        os.replace(building, out)
        shutil.rmtree(replaced, ignore_errors=True)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return timings


def _remove_abandoned_builds(out: Path) -> None:
    """Delete hidden build folders of `out` left by report writes whose process is gone."""
    for folder in out.parent.glob(f".{out.name}.*{TMP_SUFFIX}*"):
        pid = folder.name.removeprefix(f".{out.name}.").split(".")[0]
        if pid.isdigit() and not _process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_scorecard(folder: str | os.PathLike | None) -> dict | None:
    """The scorecard record in `folder`, checked to be one; None without a folder."""
    if folder is None:
        return None
    path = Path(folder) / SCORECARD_FILE
    if not path.is_file():
        raise ValueError(
            f"--scorecard {folder}: no {SCORECARD_FILE} there; build one with `interp scorecard --out {folder}`."
        )
    record = read_json(path)
    if record.get("format") != SCORECARD_FORMAT:
        raise ValueError(
            f"{path} is not a scorecard (format {record.get('format')!r}); rebuild it with `interp scorecard`."
        )
    if record.get("format_version") != SCORECARD_VERSION:
        raise ValueError(
            f"{path} is a scorecard of format version {record.get('format_version')}, this report reads version "
            f"{SCORECARD_VERSION}; rebuild it with `interp scorecard`."
        )
    return record


def _write_report(analysis_dir: Path, out: Path, *, scorecard: dict | None, progress: bool) -> dict[str, float]:
    start = time.perf_counter()
    analysis = Analysis.load(analysis_dir)
    driven = neurons_driven(analysis) if analysis.meta.get("neurons_written") else None
    data = ReportData(analysis, read_labels(analysis_dir), driven)
    meta = report_meta(analysis)
    title = f"{meta['model']} · {meta['hook']} · {meta['d_sae']} features"
    meta["title"] = title
    meta["neurons"] = (
        analysis.neurons is not None
    )  # an SAE on MLP neurons: the neuron pages (interp.app.report.neurons)
    meta["drivers_listed"] = DRIVERS_LISTED
    meta["scorecard"] = scorecard is not None
    loaded = time.perf_counter()

    copy_static(out)
    rows = data.summary_rows()
    write_text(out / "data" / "meta.js", f"monoReport.meta = {script_json(meta)};\n")
    write_text(
        out / "data" / "vocab.js",
        f"monoReport.vocab = {script_json(data.vocab)};\nmonoReport.tokenCounts = {script_json(data.token_counts)};\n",
    )
    write_text(out / "data" / "summary.js", f"monoReport.rows = {script_json(rows)};\n")
    for first in progress_bar(range(0, data.F, CHUNK), desc="report", unit="chunk", disable=not progress, leave=False):
        features = [data.feature(i) for i in range(first, min(first + CHUNK, data.F))]
        write_text(
            out / "data" / f"features-{first // CHUNK:04d}.js",
            f"monoReport.addChunk({first // CHUNK}, {script_json(features)});\n",
        )
    data_scripts = ("data/meta.js", "data/vocab.js", "data/summary.js")
    live_scripts = (*data_scripts, "live.js")  # the panels that `interp serve` answers
    write_page(out, "feature", f"Feature · {title}", scripts=live_scripts, data={"chunk": CHUNK}, plots=True)
    write_page(out, "prompt", f"Prompt · {title}", scripts=live_scripts)
    write_page(
        out, "model", f"Model · {title}", data={"meta": meta, "training": training_data(analysis_dir)}, plots=True
    )
    write_page(out, "index", title, scripts=("data/vocab.js",), data={"meta": meta, "rows": rows}, plots=True)
    if scorecard is not None:
        write_page(out, "scorecard", f"Scorecard · {title}", data={"meta": meta, "scorecard": scorecard}, plots=True)
    if analysis.neurons is not None:
        write_neuron_pages(analysis, out, title)
    done = time.perf_counter()
    return {"load_s": loaded - start, "write_s": done - loaded, "total_s": done - start}
