"""`interp demo`: the whole pipeline on a built-in corpus, as a list of named steps.

    corpus (stdlib or shakespeare) -> tokenizer + model (`interp model train`)
    -> activations (`interp capture`) -> SAE streamed from the model (`interp train-sae`)
    -> the scorecard's SAEs: a random-init control model (`interp model init`) and its SAE, the same
       SAE with another seed, SAEs of two other widths (`interp train-sae`), and in the paper preset
       a second model with another seed
    -> feature analysis (`interp analyze`) -> labels (`interp label`) -> scorecard (`interp scorecard`)
    -> HTML report (`interp report`)

Every budget is a count of tokens, so the same command gives the same artifacts on every machine
and load (only the time differs). PRESETS holds the two sizes: `demo` (the default; `make demo`
takes about 15 minutes on 2 cores, install included, over a third of it the scorecard's extra SAEs) and
`paper` (a longer model and a dictionary 8x the neurons on 50M tokens, the closest this machine
gets to "Towards Monosemanticity"'s A/1 run: about an hour for model and SAE, and about two more
for the scorecard's second model and extra SAEs). The captured activations are not what the SAE trains on (it reads
the model directly, so it can see far more tokens than a disk holds); they are kept for
`sae train`, `sae eval` and the benchmarks.

Each step writes one artifact folder under OUT (default artifacts/demo) by calling the same function
as its CLI command. A step whose artifact exists and is complete is skipped ("reusing ..."); an
incomplete one runs again (a capture resumes from its last complete shard). Once a step has run,
every later step's artifact is stale and is rebuilt from scratch, as `make` would.

To add a step: write `run(cfg)` and `is_complete(cfg)` for its artifact folder and append a
`Step` to STEPS; put any settings it needs on DemoConfig.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from interp.analysis.artifact import META_FILE as ANALYSIS_FILE
from interp.analysis.artifact import NEURONS_DIR
from interp.analysis.config import AnalysisConfig
from interp.analysis.run import run_analysis
from interp.capture import run_capture
from interp.labels.files import LABELS_FILE
from interp.labels.labeller import LabelConfig, run_labels
from interp.model import CONFIG_FILE, WEIGHTS_FILE, ModelConfig
from interp.model_training import ModelTrainConfig, initial_model, train_model
from interp.report.write import write_report
from interp.scorecard import SCORECARD_FILE
from interp.scorecard.run import ScorecardConfig, ScorecardInputs, run_scorecard
from interp.stream import train_from_model
from interp.tokenizer import TOKENIZER_FILE
from interp.training_record import RECORD_FILE, TENSORS_FILE
from sae.checkpoint import latest_checkpoint
from sae.config import TrainConfig as SAETrainConfig
from sae.files import read_json
from sae.options import sweep_names
from sae.shards import MANIFEST

DEFAULT_OUT = Path("artifacts/demo")


@dataclass
class DemoConfig:
    """Settings of every step. The defaults are the `demo` preset on stdlib; tests shrink them."""

    out: Path = DEFAULT_OUT
    train: ModelTrainConfig = field(default_factory=lambda: ModelTrainConfig(corpus="stdlib", tokens=8_000_000))
    model: ModelConfig = field(default_factory=ModelConfig)  # 1 layer, d_model 128, 512 MLP neurons, context 128
    hooks: tuple[str, ...] = ("blocks.0.mlp.hook_post", "blocks.0.hook_resid_post")
    capture_tokens: int = 2**18
    capture_dtype: str = "float32"
    sae_hook: str = "blocks.0.mlp.hook_post"
    sae_arch: str = "topk"
    sae_fields: dict = field(default_factory=lambda: {"d_sae": 2048, "k": 16})  # 4x the 512 neurons
    sae_tokens: int = 3_000_000  # streamed from the model's training split (3.35M tokens of stdlib)
    sae_epochs: int | None = None  # passes over the split at most (None: as many as sae_tokens needs)
    sae_train: SAETrainConfig = field(
        default_factory=lambda: SAETrainConfig(batch_size=2048, lr=1e-3, device="cpu", checkpoint_every=500)
    )
    analysis: AnalysisConfig = field(default_factory=lambda: AnalysisConfig(tokens=2**16))
    scorecard: ScorecardConfig = field(default_factory=lambda: ScorecardConfig(tokens=2**16))
    widths: tuple[int, ...] = (512, 1024)  # d_sae of the splitting SAEs beside the main one
    universality_seed: int = 1  # seed of the second SAE (and, with universality_model, the second model)
    universality_model: bool = False  # also train a second model (paper preset): neuron universality
    labels: LabelConfig = field(default_factory=LabelConfig)
    report: Path | None = None  # report folder; None: OUT/report (`interp demo` writes reports/demo)
    progress: bool = True

    @property
    def corpus(self) -> str:
        return self.train.corpus

    def validate(self) -> None:
        """Check every setting before the first step runs (a bad value must not cost a trained model)."""
        self.train.validate()
        self.model.validate()
        self.sae_train.validate()
        for name in ("capture_tokens", "sae_tokens"):
            if getattr(self, name) <= 0:
                raise ValueError(f"the demo's {name} must be positive, got {getattr(self, name)}.")
        if self.sae_tokens < self.sae_train.batch_size:
            raise ValueError(
                f"the demo's sae_tokens ({self.sae_tokens}) is less than one SAE batch ({self.sae_train.batch_size})."
            )
        self.scorecard.validate()
        if any(w <= 0 for w in self.widths) or self.sae_fields.get("d_sae") in self.widths:
            raise ValueError(
                f"the demo's widths {list(self.widths)} must be positive and differ from the main SAE's d_sae "
                f"({self.sae_fields.get('d_sae')}), which joins them."
            )
        if self.universality_seed == self.sae_train.seed:
            raise ValueError(f"the demo's universality_seed must differ from the SAE seed {self.sae_train.seed}.")
        if self.sae_hook not in self.hooks:
            raise ValueError(f"the demo's sae_hook {self.sae_hook!r} is not one of its hooks {list(self.hooks)}.")

    @property
    def model_dir(self) -> Path:
        return self.out / "model"

    @property
    def activations_dir(self) -> Path:
        """One activation dataset per hook inside: activations/<hook name>/."""
        return self.out / "activations"

    @property
    def sae_dir(self) -> Path:
        return self.out / "sae"

    @property
    def analysis_dir(self) -> Path:
        return self.out / "analysis"

    @property
    def control_dir(self) -> Path:
        """The random-init control: control/model (the model at initialisation) and control/sae."""
        return self.out / "control"

    @property
    def seed_sae_dir(self) -> Path:
        return self.out / f"sae-seed{self.universality_seed}"

    @property
    def widths_dir(self) -> Path:
        """One SAE per width inside: sae-widths/d_sae<W>/ (one width: the folder itself)."""
        return self.out / "sae-widths"

    @property
    def width_sae_dirs(self) -> list[Path]:
        names = sweep_names([{"d_sae": w} for w in self.widths])
        return [self.widths_dir / name for name in names]

    @property
    def seed_model_dir(self) -> Path:
        return self.out / f"model-seed{self.universality_seed}"

    @property
    def scorecard_dir(self) -> Path:
        return self.out / "scorecard"

    @property
    def report_dir(self) -> Path:
        return self.report if self.report is not None else self.out / "report"


def demo_config(preset: str = "demo", corpus: str = "stdlib", **fields) -> DemoConfig:
    """The DemoConfig of a preset (PRESETS) on a corpus; fields override DemoConfig's own (out, report, ...)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown demo preset {preset!r}; choose one of {list(PRESETS)}.")
    cfg = DemoConfig(**fields)
    PRESETS[preset](cfg)
    cfg.train.corpus = corpus
    return cfg


def _paper(cfg: DemoConfig) -> None:
    """About an hour on 2 cores: the model trains for most of it; 4096 latents (8x the neurons) on 50M tokens."""
    cfg.train.tokens = 80_000_000
    cfg.sae_fields = {"d_sae": 4096, "k": 16}
    cfg.sae_tokens = 50_000_000
    cfg.sae_train = dataclasses.replace(cfg.sae_train, batch_size=4096, checkpoint_every=1000)
    cfg.widths = (1024, 2048)
    cfg.universality_model = True


PRESETS: dict[str, Callable[[DemoConfig], None]] = {"demo": lambda cfg: None, "paper": _paper}


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
    run_capture(
        cfg.model_dir,
        cfg.hooks,
        cfg.corpus,
        cfg.capture_tokens,
        cfg.activations_dir,
        dtype=cfg.capture_dtype,
        resume=resume,
        seed=cfg.train.seed,
        split="train",
        progress=cfg.progress,
    )


def _saes_are_complete(*folders: Path) -> bool:
    return all((f / name).is_file() for f in folders for name in ("cfg.json", "sae_weights.safetensors"))


def _sae_is_complete(cfg: DemoConfig) -> bool:
    return _saes_are_complete(cfg.sae_dir)


def _stream_sae(cfg: DemoConfig, model_dir: Path, out: Path, fields: dict, seed: int) -> None:
    """Train SAEs of the demo's settings (`fields` each a list of values) from a model into `out`."""
    resume = out.is_dir() and latest_checkpoint(out) is not None
    if out.exists() and not resume:
        shutil.rmtree(out)  # a run that stopped before its first checkpoint starts over
    train_from_model(
        str(model_dir),
        [cfg.sae_hook],
        cfg.sae_arch,
        fields,
        dataclasses.replace(cfg.sae_train, seed=seed),
        out,
        tokens=cfg.sae_tokens,
        corpus=cfg.corpus,
        split="train",
        corpus_seed=cfg.train.seed,
        epochs=cfg.sae_epochs,
        resume=resume,
        progress=cfg.progress,
    )


def _fields(cfg: DemoConfig) -> dict:
    return {name: [value] for name, value in cfg.sae_fields.items()}


def _train_sae(cfg: DemoConfig) -> None:
    _stream_sae(cfg, cfg.model_dir, cfg.sae_dir, _fields(cfg), cfg.sae_train.seed)


def _control(cfg: DemoConfig) -> None:
    """The model at initialisation, and an SAE trained on it exactly as the main SAE is."""
    model_dir = cfg.control_dir / "model"
    if not _model_is_complete_at(model_dir, record=False):
        initial_model(cfg.model_dir, model_dir, overwrite=True)
    _stream_sae(cfg, model_dir, cfg.control_dir / "sae", _fields(cfg), cfg.sae_train.seed)


def _seed_sae(cfg: DemoConfig) -> None:
    _stream_sae(cfg, cfg.model_dir, cfg.seed_sae_dir, _fields(cfg), cfg.universality_seed)


def _width_saes(cfg: DemoConfig) -> None:
    _stream_sae(cfg, cfg.model_dir, cfg.widths_dir, {**_fields(cfg), "d_sae": list(cfg.widths)}, cfg.sae_train.seed)


def _train_seed_model(cfg: DemoConfig) -> None:
    train = dataclasses.replace(cfg.train, seed=cfg.universality_seed, tokenizer=str(cfg.model_dir / TOKENIZER_FILE))
    train_model(train, cfg.model, cfg.seed_model_dir, show_progress=cfg.progress, overwrite=True)


def _analyze(cfg: DemoConfig) -> None:
    run_analysis(
        str(cfg.model_dir),
        str(cfg.sae_dir),
        cfg.corpus,
        cfg.analysis_dir,
        cfg.analysis,
        hook_name=cfg.sae_hook,
        progress=cfg.progress,
    )


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
        universality_sae=str(cfg.seed_sae_dir),
        universality_model=str(cfg.seed_model_dir) if cfg.universality_model else None,
        width_saes=[str(folder) for folder in cfg.width_sae_dirs],
    )
    run_scorecard(inputs, cfg.scorecard, cfg.scorecard_dir, progress=cfg.progress)


def _report(cfg: DemoConfig) -> None:
    write_report(cfg.analysis_dir, cfg.report_dir, scorecard=cfg.scorecard_dir, progress=cfg.progress)


STEPS: list[Step] = [
    Step("model", lambda cfg: cfg.model_dir, _model_is_complete, _train_model),
    Step("capture", lambda cfg: cfg.activations_dir, _capture_is_complete, _capture),
    Step("sae", lambda cfg: cfg.sae_dir, _sae_is_complete, _train_sae),
    Step("control", lambda cfg: cfg.control_dir, lambda cfg: _saes_are_complete(cfg.control_dir / "sae"), _control),
    Step("sae-seed", lambda cfg: cfg.seed_sae_dir, lambda cfg: _saes_are_complete(cfg.seed_sae_dir), _seed_sae),
    Step("sae-widths", lambda cfg: cfg.widths_dir, lambda cfg: _saes_are_complete(*cfg.width_sae_dirs), _width_saes),
    Step(
        "model-seed",
        lambda cfg: cfg.seed_model_dir,
        lambda cfg: _model_is_complete_at(cfg.seed_model_dir),
        _train_seed_model,
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
