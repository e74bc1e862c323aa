"""The scorecard's configs (`interp scorecard`): what it reads, by spec (`ScorecardInputs`), and how it
scores (`ScorecardConfig`). Imports no torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from interp.features.scorecard.concepts import REGEX_SECONDS, concept_suite
from interp.model.config import SPLITS, Split, corpus_field, corpus_seed_field, model_field, split_field
from sae.schema import sae_dir_field, seed_field


@dataclass(kw_only=True)
class ScorecardInputs:
    """What a scorecard reads, by spec. Everything but model, sae and corpus is optional."""

    model: str = model_field()
    sae: str = sae_dir_field()
    corpus: str = corpus_field()
    control_model: str | None = field(
        default=None, metadata={"metavar": "SPEC", "help": "the model at initialisation (`interp model init`)"}
    )
    control_sae: str | None = field(
        default=None, metadata={"metavar": "DIR", "help": "an SAE trained like --sae on --control-model"}
    )
    second_model: str | None = field(
        default=None,
        metadata={
            "metavar": "SPEC",
            "help": "a model trained like --model with another seed (universality across models)",
        },
    )
    second_sae: str | None = field(
        default=None, metadata={"metavar": "DIR", "help": "an SAE trained like --sae on --second-model"}
    )
    sibling_saes: list[str] = field(
        default_factory=list,
        metadata={
            "option": "--sibling-sae",
            "repeat": True,
            "metavar": "DIR",
            "help": "an SAE on the same hook with another width or k (repeat): all join the frontier; those "
            "of --sae's k and other widths make the splitting families",
        },
    )

    def validate(self) -> None:
        if (self.control_model is None) != (self.control_sae is None):
            raise ValueError("--control-model and --control-sae go together; pass both or neither.")
        if self.second_sae is not None and self.second_model is None:
            raise ValueError("--second-sae needs --second-model, the model it was trained on.")
        saes = [("--sae", self.sae), ("--control-sae", self.control_sae), ("--second-sae", self.second_sae)]
        for flag, path in saes + [("--sibling-sae", p) for p in self.sibling_saes]:
            if path is not None and not (Path(path) / "cfg.json").is_file():
                raise ValueError(f"{flag} {path}: no SAE there (no cfg.json); pass a folder an SAE was saved to.")


@dataclass(kw_only=True)
class ScorecardConfig:
    """How the scorecard reads and scores; every field an `interp scorecard` option."""

    tokens: int = field(
        default=2**16,
        metadata={
            "help": "token positions read: whole windows evenly spaced over every document of the split "
            "(BOS positions are not scored)"
        },
    )
    split: Split = split_field("heldout")
    corpus_seed: int = corpus_seed_field()  # the corpus order, as `interp capture --corpus-seed`
    folds: int = field(default=2, metadata={"help": "folds of whole documents: choose on the others, score on one"})
    bootstrap: int = field(default=1000, metadata={"help": "document-bootstrap draws behind each interval"})
    seed: int = seed_field("the bootstrap draws (and the order of equal-sized documents in the folds)")
    suite: str = field(
        default="auto",
        metadata={
            "help": "built-in concepts: auto (python and text for Python source, text and shakespeare for the plays, "
            "mix and text for the mix corpus, text otherwise) or a comma-separated list of python, text, "
            "shakespeare, mix"
        },
    )
    concepts: list[str] = field(
        default_factory=list,
        metadata={
            "option": "--concept",
            "repeat": True,
            "metavar": "NAME=REGEX",
            "help": "a concept of your own: a token is positive when one of its characters lies in a match "
            "(repeatable)",
        },
    )
    regex_seconds: float = field(
        default=REGEX_SECONDS, metadata={"help": "seconds a --concept regex may take on one document"}
    )
    min_positives: int = field(
        default=10, metadata={"help": "visible positives each fold needs for a concept to be scored"}
    )
    examples: int = field(default=20, metadata={"help": "top examples per unit for logit consistency"})
    promoted: int = field(default=10, metadata={"help": "the unit's most promoted tokens for logit consistency"})
    batch_size: int = field(default=32, metadata={"help": "windows per forward pass"})

    def validate(self) -> None:
        """Check every setting, the suite and the user concepts included."""
        if self.tokens <= 0:
            raise ValueError(f"--tokens must be positive, got {self.tokens}.")
        if self.split not in SPLITS:
            raise ValueError(f"--split {self.split!r} is not one of {list(SPLITS)}.")
        if self.folds < 2:
            raise ValueError(
                f"--folds must be at least 2 (choose on some documents, score on others), got {self.folds}."
            )
        if not self.regex_seconds > 0:
            raise ValueError(f"--regex-seconds must be positive, got {self.regex_seconds}.")
        for name in ("min_positives", "examples", "promoted", "batch_size", "bootstrap"):
            if getattr(self, name) <= 0:
                raise ValueError(f"the scorecard's {name} must be positive, got {getattr(self, name)}.")
        concept_suite(self.suite, self.concepts, "stdlib")


@dataclass(kw_only=True)
class ScorecardRun:
    """`interp scorecard`: what it reads, how it scores, and the folder scorecard.json goes into."""

    inputs: ScorecardInputs = field(metadata={"help": "what the scorecard reads"})
    settings: ScorecardConfig = field(default_factory=ScorecardConfig, metadata={"help": "how it reads and scores"})
    out: str = field(metadata={"help": "folder to write scorecard.json into"})
