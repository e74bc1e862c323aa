"""`interp scorecard`: is the SAE more monosemantic than the neurons, against ground truth, trivial
baselines and a control, with intervals?

    interp scorecard --model SPEC --sae DIR --corpus C [--split heldout] [--corpus-seed S] --tokens N
                     [--folds K] [--bootstrap B] [--seed S] [--concept NAME=REGEX ...]
                     [--control-model SPEC --control-sae DIR] [--second-model SPEC [--second-sae DIR]]
                     [--sibling-sae DIR ...] --out DIR

One pass of each model over windows spread across every document of the split serves every concept
and unit. Choices are cross-fitted over folds of whole documents (`crossfit`), every figure carries a
paired document-bootstrap interval (`intervals`), and a verdict is stated only where its interval
excludes a tie (`verdicts`). The result is OUT/scorecard.json (format in interp.features.scorecard).
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import time
from pathlib import Path

import torch

from interp.activations.hooks import mlp_neuron_layer
from interp.activations.sources import model_spec_id, open_model_and_sae
from interp.features.scorecard import FORMAT, FORMAT_VERSION, SCORECARD_FILE
from interp.features.scorecard.absorption import absorption
from interp.features.scorecard.concepts import ConceptSuite, concept_suite
from interp.features.scorecard.config import ScorecardConfig, ScorecardInputs
from interp.features.scorecard.crossfit import baseline_counts, score_side
from interp.features.scorecard.intervals import Resampler
from interp.features.scorecard.measures import histogram, logit_consistency, max_correlation, median, value_histogram
from interp.features.scorecard.purity import summarise, unit_measures
from interp.features.scorecard.splitting import feature_splitting
from interp.features.scorecard.tokens import ScoredTokens, read_windows, scored_tokens
from interp.features.scorecard.units import promoted_tokens, unit_activations
from interp.features.scorecard.verdicts import Scored, concept_rows, summary
from interp.interventions.evaluate import evaluate_splice
from interp.model.corpus import load_corpus
from interp.model.transformer import load_model, weights_fingerprint
from sae.files import check_output_folder, write_json
from sae.io import load_sae

FRONTIER_TOKENS = 2**13  # tokens each dictionary is spliced into for the frontier's fidelity
RULES = {
    "positive token": "a token is positive when any of its characters lies in the concept's marks",
    "masking": "a positive in a run that began at the first token of a window continuing a document is not "
    "scored for that concept: its span opened before the window, out of the model's sight",
    "folds": "documents are split into folds balanced by tokens; units, thresholds, families and probes are "
    "chosen on the other folds' documents and scored on the fold's own, so every document is scored once",
    "firing": "a unit fires on a token when its activation is >= the threshold chosen for the concept",
    "intervals": "95% percentile intervals of a paired bootstrap over documents (every side resampled with "
    "the same draw); a verdict is stated only where the difference's interval excludes 0",
    "skill": "against the best baseline F1 b (the best of token identity, previous + current token and marking "
    "every token): (F1 - b) / (1 - b) at or above it, (F1 - b) / b below it; 1 perfect, 0 the baseline, -1 no "
    "true positive. A win needs the larger F1 and an F1 above the best baseline",
    "probe": "logistic regression (class-balanced weights) on the k units of largest |standardised mean "
    "difference| on the selection documents, its threshold tuned there for F1. SAEBench's k-sparse probing "
    "ranks by mean difference (scale-dependent), trains on balanced samples and reports accuracy; ours "
    "ranks scale-free and reports F1 on held-out documents",
    "family": "a greedy OR of up to k units, each at its own best threshold (k = 1, 2, 4, 8); 'family' "
    "takes the k with the best selection F1",
}


def _scored_tokens(opened_model, suite: ConceptSuite, corpus: str, cfg: ScorecardConfig) -> ScoredTokens:
    windows, labels, starts = read_windows(
        load_corpus(corpus, cfg.split),
        opened_model.tokenizer,
        opened_model.context_length,
        suite.token_labels,
        cfg.corpus_seed,
    )
    return scored_tokens(
        windows, labels, starts, opened_model.bos_id, tokens=cfg.tokens, folds=cfg.folds, fold_seed=cfg.seed
    )


def _scored_concepts(tokens: ScoredTokens, min_positives: int) -> torch.Tensor:
    """[C] bool: concepts with at least min_positives visible positives and some negative in every fold."""
    truth = tokens.labels & tokens.visible
    ok = torch.ones(truth.shape[1], dtype=torch.bool)
    for _, test in tokens.fold_masks():
        positives = truth[test].sum(0)
        ok &= (positives >= min_positives) & (positives < tokens.visible[test].sum(0))
    return ok


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


def _consistency(model, hook, acts, directions, tokens: ScoredTokens, cfg: ScorecardConfig) -> dict | None:
    """Median and mean share of a side's top examples whose next token the unit promotes most."""
    promoted = promoted_tokens(model, hook, directions, cfg.promoted)
    if promoted is None:
        return None
    share = logit_consistency(acts, tokens.next_ids, promoted, examples=cfg.examples)
    finite = share[torch.isfinite(share)].double()
    return {"median": median(share), "mean": round(float(finite.mean()), 6) if finite.numel() else None}


def _fold0_histograms(acts: torch.Tensor, found, tokens: ScoredTokens, scored: torch.Tensor) -> list[dict | None]:
    """Per concept: fold 0's k=1 unit's activations on fold 0's test tokens, split by the concept."""
    _, test = tokens.fold_masks()[0]
    out: list[dict | None] = []
    for c in range(tokens.labels.shape[1]):
        pick = found.chosen[0][c]
        if not bool(scored[c]) or pick is None:
            out.append(None)
            continue
        keep = test & tokens.visible[:, c]
        unit = pick["units"][0]
        out.append({"unit": unit, **histogram(acts[keep, unit], tokens.labels[keep, c])})
    return out


def run_scorecard(inputs: ScorecardInputs, cfg: ScorecardConfig, out: str | Path, *, progress: bool = True) -> dict:
    """Build the scorecard and write OUT/scorecard.json; return it."""
    inputs.validate()
    cfg.validate()
    suite = concept_suite(cfg.suite, cfg.concepts, inputs.corpus, regex_seconds=cfg.regex_seconds)
    out = check_output_folder(out, holds=(SCORECARD_FILE,), what="scorecard", overwrite=True)
    started = time.perf_counter()
    say = print if progress else (lambda *a, **k: None)
    opened = open_model_and_sae(inputs.model, inputs.sae)
    model, hook = opened.model, opened.hook
    tokens = _scored_tokens(model, suite, inputs.corpus, cfg)
    names = suite.names
    scored = _scored_concepts(tokens, cfg.min_positives)
    vocab = len(model.tokenizer.token_strings())
    say(
        f"scorecard: {len(tokens.ids):,} tokens from {tokens.documents} documents in {tokens.folds} folds, "
        f"{int(scored.sum())} of {len(names)} concepts scored",
        flush=True,
    )
    siblings = [load_sae(p, device=opened.sae.W_dec.device) for p in inputs.sibling_saes]
    neurons, (features, *sibling_acts) = _activations(model, hook, [opened.sae, *siblings], tokens, cfg)
    acts = {"features": features, "neurons": neurons}
    directions = {"features": opened.sae.W_dec, "neurons": torch.eye(neurons.shape[1])}
    consistency = {side: _consistency(model, hook, acts[side], directions[side], tokens, cfg) for side in acts}
    control = None
    if inputs.control_model is not None:
        control_opened = open_model_and_sae(inputs.control_model, inputs.control_sae, hook=hook)
        _same_tokenizer(model, control_opened.model, "--control-model", inputs.control_model)
        c_model, c_sae = control_opened.model, control_opened.sae
        c_neurons, (c_features,) = _activations(c_model, hook, [c_sae], tokens, cfg)
        acts["control_features"], acts["control_neurons"] = c_features, c_neurons
        consistency["control_features"] = _consistency(c_model, hook, c_features, c_sae.W_dec, tokens, cfg)
        consistency["control_neurons"] = _consistency(c_model, hook, c_neurons, directions["neurons"], tokens, cfg)
        control = {
            "model": "random init",
            "model_spec": model_spec_id(inputs.control_model),
            "sae": str(Path(inputs.control_sae).resolve()),
        }
    say(f"scorecard: activations read in {time.perf_counter() - started:.0f} s", flush=True)

    resampler = Resampler(tokens.documents, draws=cfg.bootstrap, seed=cfg.seed)
    sides = {side: score_side(values, tokens, scored) for side, values in acts.items()}
    baselines = baseline_counts(tokens, scored, vocab)
    table = Scored(sides, baselines, resampler, scored)
    say(f"scorecard: concepts scored in {time.perf_counter() - started:.0f} s", flush=True)
    truth = tokens.labels & tokens.visible
    rows = concept_rows(suite.concepts, table, tokens, sides)
    for side in ("features", "neurons"):
        for row, hist in zip(rows, _fold0_histograms(acts[side], sides[side], tokens, scored), strict=True):
            row[f"{side[:-1]}_histogram"] = hist
    units = {
        side: summarise(unit_measures(values, truth, tokens.ids, vocab, table.context)) for side, values in acts.items()
    }
    absorbed = {
        side: absorption(found.fired, truth, tokens.document, names, scored, resampler) for side, found in sides.items()
    }
    universality = _universality(inputs, cfg, model, hook, tokens, neurons, features)
    dictionaries = [opened.sae, *siblings]
    dictionary_paths = [opened.sae_path, *[Path(p) for p in inputs.sibling_saes]]
    frontier = _frontier(
        model,
        hook,
        dictionaries,
        dictionary_paths,
        [features, *sibling_acts],
        sides["features"],
        tokens,
        scored,
        baselines,
        resampler,
        cfg,
    )
    splitting = _splitting(model, opened, dictionaries, dictionary_paths, [features, *sibling_acts], tokens)
    unit_kind = "MLP neurons" if mlp_neuron_layer(hook) is not None else f"the {hook} basis dimensions"
    record = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "tokens": int(tokens.windows.numel()),
        "scored_tokens": len(tokens.ids),
        "documents": tokens.documents,
        "folds": tokens.folds,
        "fold_tokens": torch.bincount(tokens.fold, minlength=tokens.folds).tolist(),
        "token_ids_sha256": hashlib.sha256(tokens.windows.to(torch.int64).numpy().tobytes()).hexdigest(),
        "split": cfg.split,
        "corpus": inputs.corpus,
        "model": {"spec": opened.model_spec, "weights": weights_fingerprint(model.bridge)},
        "sae": {"path": str(opened.sae_path.resolve()), "d_sae": int(opened.sae.W_dec.shape[0]), "hook": hook},
        "neurons": unit_kind,
        "config": dataclasses.asdict(cfg),
        "rules": RULES,
        "concepts": rows,
        "python_documents_not_tokenized": suite.python_failures,
        "summary": summary(table),
        "control": control,
        "units": units,
        "absorption": absorbed,
        "universality": universality,
        "frontier": frontier,
        "splitting": splitting,
        "logit_consistency": {"examples": cfg.examples, "promoted": cfg.promoted, **consistency},
        "seconds": round(time.perf_counter() - started, 1),
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / SCORECARD_FILE, record)
    say(f"scorecard: {out / SCORECARD_FILE} in {record['seconds']:.0f} s", flush=True)
    return record


def _splitting(model, opened, saes, paths, acts, tokens: ScoredTokens) -> dict | None:
    """Feature splitting over the SAEs of the main SAE's k (one per width), when there are two widths or more."""
    main_k = getattr(opened.sae.cfg, "k", None)
    widths: dict[int, int] = {}
    for i, sae in enumerate(saes):
        if getattr(sae.cfg, "k", None) == main_k:
            widths.setdefault(int(sae.W_dec.shape[0]), i)
    if len(widths) < 2:
        return None
    chosen = list(widths.values())
    splitting = feature_splitting(
        [saes[i].W_dec.detach() for i in chosen],
        [acts[i] for i in chosen],
        tokens.ids,
        model.tokenizer.token_strings(),
        [str(paths[i].resolve()) for i in chosen],
    )
    splitting["main_width"] = int(opened.sae.W_dec.shape[0])
    return splitting


def _frontier(model, hook, saes, paths, acts, main_found, tokens, scored, baselines, resampler, cfg) -> list[dict]:
    """Per dictionary on the hook (the SAE and its siblings): its width and k, CE loss recovered, FVU and L0
    spliced into the first FRONTIER_TOKENS of the scored windows, and the headline medians on context
    concepts (k=1 and family skill)."""
    rows = []
    windows = tokens.windows[: max(1, FRONTIER_TOKENS // tokens.windows.shape[1])]
    batches = [windows[i : i + cfg.batch_size] for i in range(0, len(windows), cfg.batch_size)]
    for i, (sae, path, values) in enumerate(zip(saes, paths, acts, strict=True)):
        found = main_found if i == 0 else score_side(values, tokens, scored, probes=False)
        fidelity = evaluate_splice(model.bridge, sae, hook, batches, progress=False)
        row = {
            "path": str(path.resolve()),
            "d_sae": int(sae.W_dec.shape[0]),
            "k": getattr(sae.cfg, "k", None),
            "ce_loss_recovered": round(fidelity["ce_loss_recovered"], 6),
            "fvu": round(fidelity["fvu"], 6),
            "l0": round(fidelity["l0"], 3),
        }
        context = summary(Scored({"features": found}, baselines, resampler, scored))["kinds"]["context"]["medians"]
        if "features" in context:
            row.update({f"{s}_skill": context["features"][s]["skill"] for s in ("k1", "family")})
        rows.append(row)
    return rows


def _universality(inputs, cfg, model, hook, tokens, neurons, features) -> dict:
    """Max correlation of each unit with any unit of a second model trained with another seed (the
    paper's pairing: two models, and for features an SAE on each), over the scored tokens."""
    out: dict = {"tokens": len(tokens.ids), "features": None, "neurons": None}
    if not inputs.second_model:
        out["missing"] = "no second model (--second-model); the paper preset trains one"
        return out
    second = open_model_and_sae(inputs.second_model, inputs.second_sae, hook=hook) if inputs.second_sae else None
    other = second.model if second else load_model(inputs.second_model)
    _same_tokenizer(model, other, "--second-model", inputs.second_model)
    other_neurons, other_features = _activations(other, hook, [second.sae] if second else [], tokens, cfg)
    pairs = [("neurons", neurons, other_neurons)]
    if second:
        pairs.append(("features", features, other_features[0]))
    for name, mine, theirs in pairs:
        best = max_correlation(mine, theirs)
        out[name] = {
            "other": model_spec_id(inputs.second_model)
            if name == "neurons"
            else str(Path(inputs.second_sae).resolve()),
            "median": median(best),
            "alive": int(torch.isfinite(best).sum()),
            "histogram": value_histogram(best),
        }
    return out
