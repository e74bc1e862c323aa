"""`interp scorecard`: is the SAE more monosemantic than the neurons, against ground truth and a control?

    interp scorecard --model SPEC --sae DIR --corpus C [--split heldout] [--seed S] --tokens N
                     [--concept NAME=REGEX ...] [--control-model SPEC --control-sae DIR]
                     [--universality-sae DIR] [--universality-model SPEC] [--width-sae DIR ...] --out DIR

One pass of each model over the windows `interp capture` writes for the same corpus, split, seed and
token count serves every concept and unit. The result is OUT/scorecard.json (format in interp.features.scorecard).
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import itertools
import time
from pathlib import Path

import numpy as np
import torch

from interp.activations.hooks import mlp_neuron_layer
from interp.activations.sources import model_spec_id, open_model_and_sae
from interp.features.scorecard import FORMAT, FORMAT_VERSION, SCORECARD_FILE
from interp.features.scorecard.concepts import ConceptSuite, concept_suite
from interp.features.scorecard.config import ScorecardConfig, ScorecardInputs
from interp.features.scorecard.measures import logit_consistency, max_correlation, median, value_histogram
from interp.features.scorecard.score import HEADLINE, HEADLINE_WHY, compare, score_dictionary
from interp.features.scorecard.splitting import feature_splitting
from interp.features.scorecard.units import ScoredTokens, promoted_tokens, unit_activations
from interp.model.corpus import labelled_token_sequences, load_corpus
from interp.model.transformer import load_model, weights_fingerprint
from sae.files import check_output_folder, write_json
from sae.io import load_sae


def scored_tokens(opened_model, suite: ConceptSuite, corpus: str, cfg: ScorecardConfig) -> ScoredTokens:
    """The labelled windows a scorecard reads: those `interp capture` writes for the same corpus,
    split, seed and token count (whole windows: tokens rounded up to the context length)."""
    T = opened_model.context_length
    sequences = labelled_token_sequences(
        load_corpus(corpus, cfg.split), opened_model.tokenizer, T, suite.token_labels, seed=cfg.seed
    )
    pairs = list(itertools.islice(sequences, -(-cfg.tokens // T)))
    if len(pairs) < 2:
        raise ValueError(f"corpus {corpus!r} ({cfg.split}) gave {len(pairs)} window(s); a scorecard needs two or more.")
    windows = torch.stack([w for w, _ in pairs])
    labels = np.stack([lab for _, lab in pairs])
    return ScoredTokens.from_windows(windows, labels, opened_model.bos_id)


def _same_tokenizer(a, b, flag: str, spec: str) -> None:
    if a.tokenizer.token_strings() != b.tokenizer.token_strings():
        raise ValueError(
            f"{flag} {spec} has another tokenizer than --model; the scorecard reads the same tokens in both, so "
            "build it with the model's tokenizer (`interp model init --like MODEL`)."
        )


def _activations(model, hook, saes, tokens: ScoredTokens, cfg: ScorecardConfig) -> tuple[torch.Tensor, list]:
    """The neurons [N, d_in] and each SAE's features [N, F] on the scored (non-BOS) tokens: one pass."""
    neurons, features = unit_activations(model, hook, saes, tokens.windows, batch_size=cfg.batch_size)
    return neurons[tokens.kept], [f[tokens.kept] for f in features]


def _side_rows(model, hook, sae, neurons, features, tokens: ScoredTokens, cfg: ScorecardConfig) -> tuple[dict, dict]:
    """Concept rows and logit consistency of a model's neurons and an SAE's features."""
    select, test = tokens.halves()
    rows = {
        name: score_dictionary(acts, tokens.labels, select, test, min_positives=cfg.min_positives)
        for name, acts in (("features", features), ("neurons", neurons))
    }
    consistency = {}
    for name, acts, directions in (
        ("features", features, sae.W_dec),
        ("neurons", neurons, torch.eye(neurons.shape[1])),
    ):
        promoted = promoted_tokens(model, hook, directions, cfg.promoted)
        share = None if promoted is None else logit_consistency(acts, tokens.next_ids, promoted, examples=cfg.examples)
        consistency[name] = None if share is None else {"median": median(share), "mean": _mean(share)}
    return rows, consistency


def _mean(x: torch.Tensor) -> float | None:
    finite = x[torch.isfinite(x)].double()
    return round(float(finite.mean()), 6) if finite.numel() else None


def run_scorecard(inputs: ScorecardInputs, cfg: ScorecardConfig, out: str | Path, *, progress: bool = True) -> dict:
    """Build the scorecard and write OUT/scorecard.json; return it."""
    inputs.validate()
    cfg.validate()
    suite = concept_suite(cfg.suite, cfg.concepts, inputs.corpus)
    out = check_output_folder(out, holds=(SCORECARD_FILE,), what="scorecard", overwrite=True)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    opened = open_model_and_sae(inputs.model, inputs.sae)
    model, hook = opened.model, opened.hook
    tokens = scored_tokens(model, suite, inputs.corpus, cfg)
    say = print if progress else (lambda *a, **k: None)
    say(f"scorecard: {len(tokens.ids):,} tokens, {len(suite.names)} concepts", flush=True)
    extra_saes = [
        load_sae(p, device=opened.sae.W_dec.device) for p in [inputs.universality_sae, *inputs.width_saes] if p
    ]
    neurons, (features, *extra_acts) = _activations(model, hook, [opened.sae, *extra_saes], tokens, cfg)
    rows, consistency = _side_rows(model, hook, opened.sae, neurons, features, tokens, cfg)
    unit_kind = "MLP neurons" if mlp_neuron_layer(hook) is not None else f"the {hook} basis dimensions"

    control = None
    if inputs.control_model is not None:
        control_opened = open_model_and_sae(inputs.control_model, inputs.control_sae, hook=hook)
        _same_tokenizer(model, control_opened.model, "--control-model", inputs.control_model)
        c_model, c_sae = control_opened.model, control_opened.sae
        c_neurons, (c_features,) = _activations(c_model, hook, [c_sae], tokens, cfg)
        control_rows, control_consistency = _side_rows(c_model, hook, c_sae, c_neurons, c_features, tokens, cfg)
        rows["control_features"], rows["control_neurons"] = control_rows["features"], control_rows["neurons"]
        consistency["control_features"] = control_consistency["features"]
        consistency["control_neurons"] = control_consistency["neurons"]
        control = {
            "model": "random init",
            "model_spec": model_spec_id(inputs.control_model),
            "sae": str(Path(inputs.control_sae).resolve()),
            "concepts": _concept_rows(suite, control_rows, tokens),
        }
    say(f"scorecard: concepts scored in {time.perf_counter() - started:.0f} s", flush=True)
    _, test = tokens.halves()
    universality = _universality(inputs, cfg, model, hook, tokens, test, neurons, features, extra_acts)
    splitting = None
    if inputs.width_saes:
        offset = 1 if inputs.universality_sae else 0
        splitting = feature_splitting(
            [opened.sae.W_dec.detach(), *[s.W_dec.detach() for s in extra_saes[offset:]]],
            [features[test], *[a[test] for a in extra_acts[offset:]]],
            tokens.ids[test],
            model.tokenizer.token_strings(),
            [str(opened.sae_path.resolve()), *[str(Path(p).resolve()) for p in inputs.width_saes]],
        )
        splitting["main_width"] = int(opened.sae.W_dec.shape[0])
    record = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "tokens": int(tokens.windows.numel()),
        "scored_tokens": len(tokens.ids),
        "token_ids_sha256": hashlib.sha256(tokens.windows.to(torch.int64).numpy().tobytes()).hexdigest(),
        "selection_tokens": int((~test).sum()),
        "test_tokens": int(test.sum()),
        "split": cfg.split,
        "seed": cfg.seed,
        "corpus": inputs.corpus,
        "model": {"spec": opened.model_spec, "weights": weights_fingerprint(model.bridge)},
        "sae": {"path": str(opened.sae_path.resolve()), "d_sae": int(opened.sae.W_dec.shape[0]), "hook": hook},
        "neurons": unit_kind,
        "config": dataclasses.asdict(cfg),
        "headline": {"measure": HEADLINE, "why": HEADLINE_WHY},
        "rules": {
            "positive token": "a token is positive when any of its characters lies in the concept's marks",
            "firing": "a unit fires on a token when its activation is > 0 (a neuron: its GELU input is positive)",
            "selection": "best units, thresholds and probe units/weights are chosen on the first half of the "
            "windows and scored on the second",
            "probe": "logistic regression with class-balanced weights on the top-k units by |mean difference|",
        },
        "concepts": _concept_rows(suite, rows, tokens),
        "python_documents_not_tokenized": suite.python_failures,
        "summary": compare(rows),
        "control": control,
        "universality": universality,
        "splitting": splitting,
        "logit_consistency": {"examples": cfg.examples, "promoted": cfg.promoted, **consistency},
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_json(out / SCORECARD_FILE, record)
    say(f"scorecard: {out / SCORECARD_FILE} in {record['seconds']:.0f} s", flush=True)
    return record


def _concept_rows(suite: ConceptSuite, rows: dict[str, list[dict | None]], tokens: ScoredTokens) -> list[dict]:
    select, test = tokens.halves()
    out = []
    n_test = int(test.sum())
    for c, concept in enumerate(suite.concepts):
        positives = int(tokens.labels[test, c].sum())
        row = {
            "name": concept.name,
            "source": concept.source,
            "description": concept.description,
            "positives": positives,
            "tokens": n_test,
            "selection_positives": int(tokens.labels[select, c].sum()),
            "all_tokens_f1": round(2 * positives / (positives + n_test), 6),  # F1 of marking every token
            "scored": rows["features"][c] is not None,
        }
        for side in ("features", "neurons"):
            found = rows[side][c]
            singular = side[:-1]
            row[f"best_{singular}"] = None if found is None else found["best"]
            row[f"best_{singular}_by_auroc"] = None if found is None else found["best_by_auroc"]
            row[f"{singular}_histogram"] = None if found is None else found["histogram"]
        row["probe"] = None
        if rows["features"][c] is not None:
            row["probe"] = {side: rows[side][c]["probe"] for side in ("features", "neurons")}
        out.append(row)
    return out


def _universality(inputs, cfg, model, hook, tokens, test, neurons, features, extra_acts) -> dict:
    """Max correlation with the other seed's units, over the test tokens."""
    out: dict = {"tokens": int(test.sum()), "features": None, "neurons": None}
    if inputs.universality_sae:
        best = max_correlation(features[test], extra_acts[0][test])
        out["features"] = {
            "other": str(Path(inputs.universality_sae).resolve()),
            "median": median(best),
            "alive": int(torch.isfinite(best).sum()),
            "histogram": value_histogram(best),
        }
    if inputs.universality_model:
        other = load_model(inputs.universality_model)
        _same_tokenizer(model, other, "--universality-model", inputs.universality_model)
        other_neurons, _ = _activations(other, hook, [], tokens, cfg)
        best = max_correlation(neurons[test], other_neurons[test])
        out["neurons"] = {
            "other": model_spec_id(inputs.universality_model),
            "median": median(best),
            "alive": int(torch.isfinite(best).sum()),
            "histogram": value_histogram(best),
        }
    else:
        out["neurons_missing"] = "no second model (--universality-model); the paper preset trains one"
    return out
