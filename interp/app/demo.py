"""`interp demo`: the whole pipeline on a built-in corpus, as a list of named steps.

    corpus (stdlib, shakespeare or mix) -> tokenizer + model (`interp model train`)
    -> activations (`interp capture`) -> SAE streamed from the model (`interp train-sae`)
    -> the scorecard's SAEs: a random-init control model (`interp model init`) and its SAE, SAEs of
       two other widths (`interp train-sae`), and in the paper preset SAEs of other k and a second
       model with another seed and its SAE (universality across models)
    -> feature analysis (`interp analyze`) -> labels (`interp label`) -> scorecard (`interp scorecard`)
    -> HTML report (`interp report`)

Every budget is a count of tokens, so the same command gives the same artifacts on every machine
and load (only the time differs; the README gives the measured times). PRESETS (interp.app.config,
beside DemoConfig) holds the two sizes: `demo` (the default) and `paper` (a longer model and a
dictionary 8x the neurons on 50M tokens, the closest this machine gets to "Towards Monosemanticity"'s
A/1 run, with a second model for the scorecard). The captured activations are not what the SAE trains
on (it reads the model directly, so it can see far more tokens than a disk holds); they are kept for
`sae train`, `sae eval` and the benchmarks.

Each step writes one artifact folder under OUT (default artifacts/demo) by calling the same function
as its CLI command. A step whose artifact exists and is complete is skipped ("reusing ..."); an
incomplete one runs again (a capture resumes from its last complete shard). Once a step has run,
every later step's artifact is stale and is rebuilt from scratch, as `make` would.

To add a step: write `run(cfg)` and `is_complete(cfg)` for its artifact folder and append a
`Step` to STEPS; put any settings it needs on DemoConfig (interp.app.config).
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from interp.activations.capture import run_capture
from interp.activations.config import CaptureConfig, StreamConfig
from interp.activations.stream import train_from_model
from interp.app.config import DemoConfig, ReportConfig
from interp.app.report.write import write_report
from interp.features.analysis.artifact import META_FILE as ANALYSIS_FILE
from interp.features.analysis.artifact import NEURONS_DIR
from interp.features.analysis.config import AnalyzeConfig
from interp.features.analysis.run import run_analysis
from interp.features.labels.files import LABELS_FILE
from interp.features.labels.labeller import run_labels
from interp.features.scorecard import SCORECARD_FILE
from interp.features.scorecard.config import ScorecardInputs
from interp.features.scorecard.run import run_scorecard
from interp.model.config import InitConfig
from interp.model.record import RECORD_FILE, TENSORS_FILE
from interp.model.tokenizer import TOKENIZER_FILE
from interp.model.training import initial_model, train_model
from interp.model.transformer import CONFIG_FILE, WEIGHTS_FILE
from sae.checkpoint import latest_checkpoint
from sae.files import read_json
from sae.shards import MANIFEST


@dataclass(frozen=True)
class Step:
    name: str
    artifact: Callable[[DemoConfig], Path]  # the folder the step writes
    is_complete: Callable[[DemoConfig], bool]
    run: Callable[[DemoConfig], None]
    enabled: Callable[[DemoConfig], bool] = lambda cfg: True  # a preset may leave the step out


def _model_is_complete_at(folder: Path, *, record: bool = True) -> bool:
    files = (CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE) + ((RECORD_FILE, TENSORS_FILE) if record else ())
    return all((folder / name).is_file() for name in files)  # the record is written last


def _model_is_complete(cfg: DemoConfig) -> bool:
    return _model_is_complete_at(cfg.model_dir)


def _train_model(cfg: DemoConfig) -> None:
    # the step runs only when the folder holds no complete model: whatever is there is replaced
    train_model(cfg.train, cfg.model, cfg.model_dir, show_progress=cfg.progress, overwrite=True)


def _dataset_manifests(cfg: DemoConfig) -> list[dict | None]:
    manifests = []
    for hook in cfg.hooks:
        file = cfg.activations_dir / hook / MANIFEST
        manifests.append(read_json(file) if file.is_file() else None)
    return manifests


def _capture_is_complete(cfg: DemoConfig) -> bool:
    return all(
        m is not None and m["complete"] and m["total_tokens"] == cfg.capture_tokens for m in _dataset_manifests(cfg)
    )


def _capture(cfg: DemoConfig) -> None:
    resume = any(m is not None for m in _dataset_manifests(cfg))
    capture = CaptureConfig(
        model=str(cfg.model_dir),
        hooks=list(cfg.hooks),
        corpus=cfg.corpus,
        split="train",
        corpus_seed=cfg.train.seed,
        tokens=cfg.capture_tokens,
        out=str(cfg.activations_dir),
        dtype=cfg.capture_dtype,
        resume=resume,
    )
    run_capture(capture, progress=cfg.progress)


def _saes_are_complete(*folders: Path) -> bool:
    return all((f / name).is_file() for f in folders for name in ("cfg.json", "sae_weights.safetensors"))


def _sae_is_complete(cfg: DemoConfig) -> bool:
    return _saes_are_complete(cfg.sae_dir)


def _stream_sae(cfg: DemoConfig, model_dir: Path, out: Path, fields: dict, seed: int) -> None:
    """Train SAEs of the demo's settings (`fields` each a list of values) from a model into `out`."""
    resume = out.is_dir() and latest_checkpoint(out) is not None
    if out.exists() and not resume:
        shutil.rmtree(out)  # a run that stopped before its first checkpoint starts over
    stream = StreamConfig(
        model=str(model_dir),
        hooks=[cfg.sae_hook],
        corpus=cfg.corpus,
        split="train",
        corpus_seed=cfg.train.seed,
        tokens=cfg.sae_tokens,
        epochs=cfg.sae_epochs or 0,
        out=str(out),
        resume=resume,
    )
    train_from_model(stream, cfg.sae_arch, fields, dataclasses.replace(cfg.sae_train, seed=seed), progress=cfg.progress)


def _fields(cfg: DemoConfig) -> dict:
    return {name: [value] for name, value in cfg.sae_fields.items()}


def _train_sae(cfg: DemoConfig) -> None:
    _stream_sae(cfg, cfg.model_dir, cfg.sae_dir, _fields(cfg), cfg.sae_train.seed)


def _control(cfg: DemoConfig) -> None:
    """The model at initialisation, and an SAE trained on it exactly as the main SAE is."""
    model_dir = cfg.control_dir / "model"
    if not _model_is_complete_at(model_dir, record=False):
        initial_model(InitConfig(like=str(cfg.model_dir), out=str(model_dir), overwrite=True))
    _stream_sae(cfg, model_dir, cfg.control_dir / "sae", _fields(cfg), cfg.sae_train.seed)


def _width_saes(cfg: DemoConfig) -> None:
    _stream_sae(cfg, cfg.model_dir, cfg.widths_dir, {**_fields(cfg), "d_sae": list(cfg.widths)}, cfg.sae_train.seed)


def _k_saes(cfg: DemoConfig) -> None:
    _stream_sae(cfg, cfg.model_dir, cfg.ks_dir, {**_fields(cfg), "k": list(cfg.ks)}, cfg.sae_train.seed)


def _second(cfg: DemoConfig) -> None:
    """A second model trained like the first with another seed (its tokenizer shared), and its SAE."""
    model_dir = cfg.second_dir / "model"
    if not _model_is_complete_at(model_dir):
        train = dataclasses.replace(
            cfg.train, seed=cfg.universality_seed, tokenizer=str(cfg.model_dir / TOKENIZER_FILE)
        )
        train_model(train, cfg.model, model_dir, show_progress=cfg.progress, overwrite=True)
    _stream_sae(cfg, model_dir, cfg.second_dir / "sae", _fields(cfg), cfg.sae_train.seed)


def _analyze(cfg: DemoConfig) -> None:
    analyze = AnalyzeConfig(
        model=str(cfg.model_dir),
        sae=str(cfg.sae_dir),
        hook=cfg.sae_hook,
        corpus=cfg.corpus,
        out=str(cfg.analysis_dir),
        analysis=cfg.analysis,
    )
    run_analysis(analyze, progress=cfg.progress)


def _labels_are_complete(cfg: DemoConfig) -> bool:
    """labels.json (and neurons/labels.json when the SAE is on MLP neurons) written after the analysis it labels."""
    pairs = [(cfg.analysis_dir / ANALYSIS_FILE, cfg.analysis_dir / LABELS_FILE)]
    if (cfg.analysis_dir / NEURONS_DIR / ANALYSIS_FILE).is_file():
        pairs.append((cfg.analysis_dir / NEURONS_DIR / ANALYSIS_FILE, cfg.analysis_dir / NEURONS_DIR / LABELS_FILE))
    return all(a.is_file() and b.is_file() and b.stat().st_mtime_ns >= a.stat().st_mtime_ns for a, b in pairs)


def _label(cfg: DemoConfig) -> None:
    run_labels(cfg.analysis_dir, cfg.labels, progress=cfg.progress)


def _scorecard(cfg: DemoConfig) -> None:
    inputs = ScorecardInputs(
        model=str(cfg.model_dir),
        sae=str(cfg.sae_dir),
        corpus=cfg.corpus,
        control_model=str(cfg.control_dir / "model"),
        control_sae=str(cfg.control_dir / "sae"),
        second_model=str(cfg.second_dir / "model") if cfg.universality_model else None,
        second_sae=str(cfg.second_dir / "sae") if cfg.universality_model else None,
        sibling_saes=[str(folder) for folder in [*cfg.width_sae_dirs, *cfg.k_sae_dirs]],
    )
    run_scorecard(inputs, cfg.scorecard, cfg.scorecard_dir, progress=cfg.progress)


def _report(cfg: DemoConfig) -> None:
    report = ReportConfig(analysis=str(cfg.analysis_dir), out=str(cfg.report_dir), scorecard=str(cfg.scorecard_dir))
    write_report(report, progress=cfg.progress)


STEPS: list[Step] = [
    Step("model", lambda cfg: cfg.model_dir, _model_is_complete, _train_model),
    Step("capture", lambda cfg: cfg.activations_dir, _capture_is_complete, _capture),
    Step("sae", lambda cfg: cfg.sae_dir, _sae_is_complete, _train_sae),
    Step("control", lambda cfg: cfg.control_dir, lambda cfg: _saes_are_complete(cfg.control_dir / "sae"), _control),
    Step("sae-widths", lambda cfg: cfg.widths_dir, lambda cfg: _saes_are_complete(*cfg.width_sae_dirs), _width_saes),
    Step(
        "sae-k",
        lambda cfg: cfg.ks_dir,
        lambda cfg: _saes_are_complete(*cfg.k_sae_dirs),
        _k_saes,
        enabled=lambda cfg: bool(cfg.ks),
    ),
    Step(
        "second",
        lambda cfg: cfg.second_dir,
        lambda cfg: _model_is_complete_at(cfg.second_dir / "model") and _saes_are_complete(cfg.second_dir / "sae"),
        _second,
        enabled=lambda cfg: cfg.universality_model,
    ),
    Step("analysis", lambda cfg: cfg.analysis_dir, lambda cfg: (cfg.analysis_dir / ANALYSIS_FILE).is_file(), _analyze),
    Step(
        "labels", lambda cfg: cfg.analysis_dir / LABELS_FILE, _labels_are_complete, _label
    ),  # a file in the analysis folder
    Step(
        "scorecard",
        lambda cfg: cfg.scorecard_dir,
        lambda cfg: (cfg.scorecard_dir / SCORECARD_FILE).is_file(),
        _scorecard,
    ),
    Step("report", lambda cfg: cfg.report_dir, lambda cfg: (cfg.report_dir / "index.html").is_file(), _report),
]


def run_demo(cfg: DemoConfig, steps: list[Step] | None = None) -> list[str]:
    """Run the steps in order, skipping those whose artifact is complete; return the names of those that ran."""
    cfg.validate()
    ran: list[str] = []
    for step in STEPS if steps is None else steps:
        if not step.enabled(cfg):
            continue
        artifact = step.artifact(cfg)
        if ran and artifact.exists():
            print(f"[{step.name}] {artifact} is stale (step {ran[-1]!r} ran again); rebuilding it", flush=True)
            artifact.unlink() if artifact.is_file() else shutil.rmtree(artifact)
        elif step.is_complete(cfg):
            print(f"[{step.name}] reusing {artifact}", flush=True)
            continue
        print(f"[{step.name}] building {artifact}", flush=True)
        start = time.perf_counter()
        step.run(cfg)
        print(f"[{step.name}] done in {time.perf_counter() - start:.0f} s", flush=True)
        ran.append(step.name)
    return ran
