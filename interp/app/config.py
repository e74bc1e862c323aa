"""The application room's configs: `interp report`, `interp export-neuronpedia`, `interp serve`, and the
demo (`interp demo`): the settings of every step of the pipeline (`DemoConfig`) and its presets. Imports
no torch."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from interp.features.analysis.config import AnalysisConfig, analysis_field
from interp.features.labels.config import LabelConfig
from interp.features.scorecard.config import ScorecardConfig
from interp.model.config import BUILTIN_CORPORA, ModelConfig, ModelTrainConfig, corpus_field, model_field
from sae.config import TrainConfig as SAETrainConfig
from sae.files import check_output_folder
from sae.schema import device_field, sae_dir_field
from sae.sweep import sweep_names

REPORT_FILES = ("index.html", "report.js", "data/meta.js")  # what every report holds: how one is recognised


def check_report_folder(path: Path, option: str = "--out") -> None:
    """A report may be written to `path` only when it is missing, an empty folder, or a report (it holds
    REPORT_FILES): writing replaces the whole folder, so anything else is refused before any work."""
    check_output_folder(path, option=option, holds=REPORT_FILES, what="report", overwrite=True, replaces_whole=True)


@dataclass(kw_only=True)
class ReportConfig:
    """`interp report`: the HTML feature dashboards of an analysis."""

    analysis: str = analysis_field()
    out: str = field(metadata={"help": "report folder to write (e.g. reports/NAME); only a report is replaced"})
    scorecard: str | None = field(
        default=None,
        metadata={"metavar": "DIR", "help": "a scorecard folder (`interp scorecard --out DIR`) to include"},
    )

    def validate(self) -> None:
        check_report_folder(Path(self.out))


@dataclass(kw_only=True)
class ExportConfig:
    """`interp export-neuronpedia`: an analysis in Neuronpedia's data-export layout."""

    analysis: str = analysis_field()
    out: str = field(metadata={"help": "output folder"})
    model_id: str | None = field(
        default=None, metadata={"help": "Neuronpedia model id; none: the analysis's model name"}
    )
    source_set: str | None = field(
        default=None, metadata={"help": "source set name; none: mono-<architecture>-<d_sae>"}
    )
    creator_id: str = field(
        default="monosemantic", metadata={"help": "id of the Neuronpedia user who owns the records"}
    )
    features_per_batch: int = field(default=1024, metadata={"help": "features per batch-N file"})

    def validate(self) -> None:
        if self.features_per_batch <= 0:
            raise ValueError(f"--features-per-batch must be positive, got {self.features_per_batch}.")
        if not self.creator_id:
            raise ValueError("--creator-id must name a user of the Neuronpedia instance; it is empty.")


@dataclass(kw_only=True)
class ServeConfig:
    """`interp serve`: a report served with live panels answered by the model and the SAE."""

    report: str = field(metadata={"metavar": "DIR", "help": "report folder written by `interp report`"})
    model: str = model_field()
    sae: str = sae_dir_field()
    host: str = field(default="127.0.0.1", metadata={"help": "address to bind (127.0.0.1: this machine only)"})
    port: int = field(default=8000, metadata={"help": "port (0 picks a free one)"})
    device: str | None = device_field()

    def validate(self) -> None:
        if not 0 <= self.port < 65536:
            raise ValueError(f"--port must be in 0..65535, got {self.port}.")


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
    # 4x the 512 neurons; k 64 chosen on the scorecard's frontier (k 16, 32, 64: the README)
    sae_fields: dict = field(default_factory=lambda: {"d_sae": 2048, "k": 64})
    sae_tokens: int = 3_000_000  # streamed from the model's training split (3.35M tokens of stdlib)
    sae_epochs: int | None = None  # passes over the split at most (None: as many as sae_tokens needs)
    sae_train: SAETrainConfig = field(
        default_factory=lambda: SAETrainConfig(batch_size=2048, lr=1e-3, device="cpu", checkpoint_every=500)
    )
    analysis: AnalysisConfig = field(default_factory=lambda: AnalysisConfig(tokens=2**16))
    scorecard: ScorecardConfig = field(default_factory=lambda: ScorecardConfig(tokens=2**16))
    widths: tuple[int, ...] = (512, 1024)  # d_sae of the splitting SAEs beside the main one
    ks: tuple[int, ...] = ()  # k of SAEs of the main width beside the main one (the frontier; paper preset)
    universality_seed: int = 1  # seed of the second model (universality across models)
    universality_model: bool = False  # also train a second model and its SAE (paper preset)
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
        self._check_capture_fits()
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
        if self.universality_seed == self.train.seed:
            raise ValueError(f"the demo's universality_seed must differ from the model's seed {self.train.seed}.")
        if any(k <= 0 for k in self.ks) or self.sae_fields.get("k") in self.ks:
            raise ValueError(
                f"the demo's ks {list(self.ks)} must be positive and differ from the main SAE's k "
                f"({self.sae_fields.get('k')}), which joins them."
            )
        out, report = self.out.resolve(), self.report_dir.resolve()
        if out.exists() and not out.is_dir():
            raise ValueError(f"--out {self.out} is a file, not a folder; give a folder for the demo's artifacts.")
        if report == out or out.is_relative_to(report):
            raise ValueError(
                f"--report {self.report_dir} would hold the artifacts in --out {self.out}, and writing the report "
                "replaces its folder; give the report a folder of its own."
            )
        check_report_folder(self.report_dir, "--report")
        if self.sae_hook not in self.hooks:
            raise ValueError(f"the demo's sae_hook {self.sae_hook!r} is not one of its hooks {list(self.hooks)}.")

    def _check_capture_fits(self) -> None:
        """--capture-tokens: at least one window, and no more than the disk under --out holds."""
        if self.capture_tokens < self.model.context_length:
            raise ValueError(
                f"--capture-tokens {self.capture_tokens} is less than one window of {self.model.context_length} "
                "tokens; capture at least one."
            )
        width = sum(self.model.d_mlp if ".mlp." in hook else self.model.d_model for hook in self.hooks)
        needed = self.capture_tokens * width * int(self.capture_dtype.removeprefix("b")[len("float") :]) // 8
        existing = self.out.resolve()
        while not existing.exists():
            existing = existing.parent
        free = shutil.disk_usage(existing).free
        if needed > free:
            raise ValueError(
                f"--capture-tokens {self.capture_tokens} needs {needed / 2**30:.1f} GiB for its activations and "
                f"{existing} has {free / 2**30:.1f} GiB free; capture fewer tokens or choose another --out."
            )

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
    def widths_dir(self) -> Path:
        """One SAE per width inside: sae-widths/d_sae<W>/ (one width: the folder itself)."""
        return self.out / "sae-widths"

    @property
    def width_sae_dirs(self) -> list[Path]:
        names = sweep_names([{"d_sae": w} for w in self.widths])
        return [self.widths_dir / name for name in names]

    @property
    def ks_dir(self) -> Path:
        """One SAE per k inside: sae-k/k<K>/ (one k: the folder itself)."""
        return self.out / "sae-k"

    @property
    def k_sae_dirs(self) -> list[Path]:
        names = sweep_names([{"k": k} for k in self.ks])
        return [self.ks_dir / name for name in names]

    @property
    def second_dir(self) -> Path:
        """The second model and its SAE (paper preset): second/model and second/sae."""
        return self.out / "second"

    @property
    def scorecard_dir(self) -> Path:
        return self.out / "scorecard"

    @property
    def report_dir(self) -> Path:
        return self.report if self.report is not None else self.out / "report"


@dataclass(kw_only=True)
class DemoOptions:
    """`interp demo`: which preset on which built-in corpus, and where its artifacts and report go."""

    preset: Literal["demo", "paper"] = field(
        default="demo",
        metadata={
            "help": "demo: the default sizes; paper: a longer model and 4096 latents on 50M tokens, with a second "
            "model for the scorecard (the README gives the time of each)"
        },
    )
    corpus: str = corpus_field()
    out: Path | None = field(
        default=None, metadata={"help": "artifact folder; none: artifacts/PRESET[-CORPUS] (artifacts/demo)"}
    )
    report: Path | None = field(
        default=None, metadata={"help": "report folder; none: reports/PRESET[-CORPUS] (reports/demo)"}
    )
    capture_tokens: int = field(
        default=DemoConfig.capture_tokens, metadata={"help": "tokens of activations to capture per hook"}
    )

    def config(self) -> DemoConfig:
        """The DemoConfig these options ask for (ValueError for a corpus that is not built in)."""
        if self.corpus not in BUILTIN_CORPORA:
            raise ValueError(
                f"--corpus {self.corpus!r}: the demo runs on a built-in corpus, one of {list(BUILTIN_CORPORA)}."
            )
        if self.capture_tokens <= 0:
            raise ValueError(f"--capture-tokens must be positive, got {self.capture_tokens}.")
        name = self.preset if self.corpus == "stdlib" else f"{self.preset}-{self.corpus}"
        out = self.out if self.out is not None else Path("artifacts") / name
        report = self.report if self.report is not None else Path("reports") / name
        return demo_config(self.preset, self.corpus, out=out, report=report, capture_tokens=self.capture_tokens)


def demo_config(preset: str = "demo", corpus: str = "stdlib", **fields) -> DemoConfig:
    """The DemoConfig of a preset (PRESETS) on a corpus; fields override the preset's (out, report, ...)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown demo preset {preset!r}; choose one of {list(PRESETS)}.")
    cfg = DemoConfig(**{**PRESETS[preset](), **fields})
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, corpus=corpus))


def _paper() -> dict:
    """An 80M-token model, 4096 latents (8x the neurons) on 50M tokens, and a second model for the scorecard."""
    return {
        "train": ModelTrainConfig(corpus="stdlib", tokens=80_000_000),
        "sae_fields": {"d_sae": 4096, "k": 64},
        "sae_tokens": 50_000_000,
        "sae_train": SAETrainConfig(batch_size=4096, lr=1e-3, device="cpu", checkpoint_every=1000),
        "widths": (1024, 2048),
        "ks": (16, 32),
        "universality_model": True,
    }


# preset name -> the DemoConfig fields it sets (the demo preset: DemoConfig's own defaults)
PRESETS: dict[str, Callable[[], dict]] = {"demo": dict, "paper": _paper}
