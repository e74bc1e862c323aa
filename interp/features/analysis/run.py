"""The analysis pass over a model: token windows through the model and the SAE, every batch into
`FeatureStatistics` (and the raw neurons into `NeuronPass`), then the decoder statistics."""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from interp.activations.hooks import ActivationHooks, mlp_neuron_layer, plan_capture
from interp.activations.sources import corpus_windows, model_corpus, open_model_and_sae
from interp.features.analysis.artifact import ANALYSIS_FORMAT, ANALYSIS_FORMAT_VERSION, Analysis
from interp.features.analysis.config import AnalysisConfig, AnalyzeConfig, ablation_batch_size, default_batch_size
from interp.features.analysis.decoder import decoder_statistics, logit_map
from interp.features.analysis.neuron_pass import NeuronPass
from interp.features.analysis.statistics import FeatureStatistics
from interp.interventions.ablation import ablation_effects
from interp.model.corpus import batched_windows, load_corpus
from interp.model.transformer import model_device, weights_fingerprint
from sae.files import check_output_folder
from sae.io import weights_fingerprint as sae_weights_fingerprint
from sae.progress import progress_bar


def resolve_ignored_tokens(names: Iterable[str], token_strings: list[str], bos_id: int | None) -> list[int]:
    """Token ids to leave out: BOS (when given) plus each name, a token string or a decimal id."""
    lookup = {s: i for i, s in enumerate(token_strings)}
    ids = [] if bos_id is None else [bos_id]
    for name in names:
        if name in lookup:
            ids.append(lookup[name])
        elif name.strip().isdigit() and int(name) < len(token_strings):
            ids.append(int(name))
        else:
            raise ValueError(
                f"--ignore-tokens: {name!r} is neither a token string of this tokenizer nor a token id "
                f"below {len(token_strings)}; give the exact token text (e.g. ' the') or its id."
            )
    return sorted(set(ids))


def analyze(
    model: Any,
    sae: Any,
    hook_name: str,
    sequences: Iterable[Tensor],
    cfg: AnalysisConfig,
    *,
    meta: dict[str, Any] | None = None,
    progress: bool = True,
) -> Analysis:
    """Run the pass: `model` a LoadedModel, `sae` anything with `encode(x [n, d_in]) -> [n, F]`
    and `W_dec` [F, d_in] (and `decode` for the ablation runs, which are skipped without it),
    `sequences` token windows [T] (BOS first). `meta` is merged into analysis.json (model spec, SAE
    path, corpus...)."""
    cfg.validate()
    bridge, T = model.bridge, model.context_length
    plan = plan_capture(bridge, [hook_name], T)
    d_in = plan.hooks[0].d_in
    W_dec = sae.W_dec.detach()
    F = W_dec.shape[0]
    if W_dec.shape[1] != d_in:
        raise ValueError(
            f"the SAE reads d_in={W_dec.shape[1]} but hook {hook_name!r} gives {d_in} values per token; "
            "pass the hook the SAE was trained on (--hook)."
        )
    token_strings = model.tokenizer.token_strings()
    vocab = max(len(token_strings), int(bridge.cfg.d_vocab))
    token_strings = token_strings + [f"<unused {i}>" for i in range(len(token_strings), vocab)]
    ignored = resolve_ignored_tokens(cfg.ignore_tokens, token_strings, model.bos_id if cfg.ignore_bos else None)
    n_seq = -(-cfg.tokens // T)
    stats = FeatureStatistics(F, vocab, T, cfg, ignored_ids=ignored, expected_sequences=n_seq)
    writes_neurons = mlp_neuron_layer(hook_name) is not None and d_in == int(bridge.cfg.d_mlp)
    neuron_pass = None
    if writes_neurons:  # the raw neurons, analysed as a second dictionary in the same pass
        neuron_pass = NeuronPass(W_dec, vocab, T, cfg, ignored_ids=ignored, expected_sequences=n_seq)
    batch_size = cfg.batch_size or default_batch_size(F, T)
    device = model_device(bridge)
    bar = progress_bar(
        total=n_seq * T, unit="tok", unit_scale=True, desc="analyse", disable=not progress, dynamic_ncols=True
    )
    windows = []  # every window, for the ablation runs on the top examples
    with ActivationHooks(bridge, [hook_name], plan.stop_at_layer) as hooks, torch.inference_mode():
        for batch in batched_windows(sequences, batch_size, max_windows=n_seq):
            windows.append(batch.to(torch.int32))
            acts = hooks.run(batch.to(device))[hook_name]
            x = plan.hooks[0].rows(acts).to(W_dec.device, W_dec.dtype)
            f = sae.encode(x).view(batch.shape[0], T, F)
            stats.update(f, batch)
            if neuron_pass is not None:
                neuron_pass.update(x.view(batch.shape[0], T, d_in), f, batch)
            bar.update(batch.numel())
    bar.close()
    if stats.sequences_seen == 0:
        raise ValueError("the corpus gave no token window to analyse; point --corpus at more text.")
    tensors = stats.result()
    ablates = bool(cfg.ablation_examples) and hasattr(sae, "decode")
    if ablates:
        tensors.update(
            ablation_effects(
                bridge,
                sae,
                hook_name,
                torch.cat(windows),
                tensors["top_seq"],
                tensors["top_pos"],
                examples=cfg.ablation_examples,
                drops=cfg.neighbours,
                batch_size=ablation_batch_size(T, vocab),
            )
        )
    logits, basis = logit_map(bridge, hook_name, d_in)
    tensors.update(decoder_statistics(W_dec, logits, cfg, neurons=writes_neurons, progress=progress))
    if logits is not None:  # for exact logit-effect queries on any token (interp.features.search)
        tensors["logit_directions"] = logits.residual(W_dec.float().cpu())  # [F, d_model]
        tensors["unembed"] = logits.W_U  # [d_model, V]
    sae_cfg = getattr(sae, "cfg", None)
    record = {
        "format": ANALYSIS_FORMAT,
        "format_version": ANALYSIS_FORMAT_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "hook_name": hook_name,
        "context_length": T,
        "vocab_size": vocab,
        "ignored_token_ids": ignored,
        "fragment_token_ids": model.tokenizer.fragment_ids(),
        "model": {
            "name": model.name,
            "d_model": int(bridge.cfg.d_model),
            "n_layers": int(bridge.cfg.n_layers),
            "d_mlp": int(bridge.cfg.d_mlp) if getattr(bridge.cfg, "d_mlp", None) else None,
        },
        "sae": {
            "d_in": d_in,
            "d_sae": F,
            "architecture": getattr(sae, "arch", type(sae).__name__),
            "config": sae_cfg.to_dict() if hasattr(sae_cfg, "to_dict") else None,
        },
        "config": dataclasses.asdict(cfg),
        "logit_effects": basis if logits is not None else None,
        "logit_effects_missing": None if logits is not None else basis,
        "neurons_written": writes_neurons,
        "ablation": {"examples": cfg.ablation_examples, "positions": "every position up to the peak"}
        if ablates
        else None,
        **stats.flags(),
    }
    for key, value in (meta or {}).items():
        record[key] = (
            {**record[key], **value} if isinstance(record.get(key), dict) and isinstance(value, dict) else value
        )
    analysis = Analysis(meta=record, tensors=tensors, token_strings=token_strings)
    if neuron_pass is not None:
        analysis.neurons = neuron_pass.analysis(record, token_strings, logits)
    return analysis


def run_analysis(cfg: AnalyzeConfig, *, progress: bool = True) -> Analysis:
    """Load model, SAE and corpus by spec (default corpus: the model's training corpus), analyse, save to
    `cfg.out` (with the model's training record)."""
    check_output_folder(cfg.out)
    opened = open_model_and_sae(cfg.model, cfg.sae, hook=cfg.hook, device=cfg.device)
    corpus = load_corpus(cfg.corpus or model_corpus(cfg.model), cfg.split)
    sequences = corpus_windows(corpus, opened.model, seed=cfg.analysis.seed)
    meta = {
        "model": {"spec": opened.model_spec, "weights": weights_fingerprint(opened.model.bridge)},
        "sae": {"path": str(opened.sae_path.resolve()), "weights": sae_weights_fingerprint(opened.sae_path)},
        "corpus": corpus.describe(),
    }
    analysis = analyze(opened.model, opened.sae, opened.hook, sequences, cfg.analysis, meta=meta, progress=progress)
    if analysis.meta["sequences"] * analysis.meta["context_length"] < cfg.analysis.tokens:
        print(
            f"note: the corpus held only {analysis.meta['sequences']} windows of {analysis.meta['context_length']} "
            "tokens; "
            "analysed all of them."
        )
    model_path = Path(cfg.model)
    analysis.save(cfg.out, training_from=model_path if model_path.is_dir() else None)
    return analysis
