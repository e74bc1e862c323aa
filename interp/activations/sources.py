"""What a step of the pipeline opens by spec, opened one way for every command: the model, the SAE
with the hook it reads, and token windows of a corpus split.

    opened = open_model_and_sae("artifacts/demo/model", "artifacts/demo/sae")
    windows = corpus_windows(load_corpus("stdlib", "heldout"), opened.model, seed=0)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from interp.activations.hooks import check_hook_names, sae_hook_name
from interp.model.corpus import Corpus, token_sequences
from interp.model.transformer import CONFIG_FILE, LoadedModel, load_model, model_device, weights_fingerprint
from sae.files import read_json
from sae.io import load_sae


def model_spec_id(spec: str | Path) -> str:
    """How artifacts record a model spec: the absolute path of a folder, else the name as given."""
    path = Path(spec)
    return str(path.resolve()) if path.is_dir() else str(spec)


@dataclass
class ModelAndSAE:
    """A model and an SAE on the model's device, and the hook the SAE reads (checked against the model)."""

    model: LoadedModel
    model_spec: str  # as `model_spec_id` records it
    sae: Any
    sae_path: Path
    hook: str


def open_model_and_sae(
    model_spec: str | Path, sae_path: str | Path, *, hook: str | None = None, device: str | None = None
) -> ModelAndSAE:
    """Load the model (on `device`, default the loader's), then the SAE on the model's device; the
    hook is `hook` or the one the SAE was trained on."""
    model = load_model(model_spec, device=device)
    sae = load_sae(sae_path, device=model_device(model.bridge))
    trained_on = (getattr(sae, "metadata", None) or {}).get("model_weights")
    if trained_on is not None and trained_on != weights_fingerprint(model.bridge):
        raise ValueError(
            f"the SAE in {sae_path} was trained on the activations of other weights (fingerprint {trained_on}) "
            f"than those of {model_spec} ({weights_fingerprint(model.bridge)}): the model was re-trained or "
            "replaced since; re-train the SAE on this model, or pass the model it was trained on."
        )
    hook_name = sae_hook_name(sae, hook)
    check_hook_names(list(model.bridge.hook_dict), [hook_name])
    return ModelAndSAE(model, model_spec_id(model_spec), sae, Path(sae_path), hook_name)


def corpus_windows(
    corpus: Corpus, model: LoadedModel, *, seed: int = 0, context_length: int | None = None, epochs: int | None = 1
) -> Iterator[Tensor]:
    """Packed token windows [context_length] (BOS first; default the model's context) of a corpus in
    the document order of `seed`, tokenized by the model's tokenizer: a deterministic function of
    its arguments."""
    return token_sequences(corpus, model.tokenizer, context_length or model.context_length, seed, epochs=epochs)


def model_corpus(model_spec: str | Path) -> str:
    """The corpus a model folder records it was trained on (config.json training.corpus), else stdlib."""
    config = Path(model_spec) / CONFIG_FILE
    if config.is_file():
        try:
            training = read_json(config).get("training")
        except ValueError:
            training = None
        corpus = training.get("corpus") if isinstance(training, dict) else None
        if isinstance(corpus, str) and corpus:
            return corpus
    return "stdlib"
