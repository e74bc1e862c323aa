"""The sparsity-fidelity frontier: a sweep of TopK SAEs over k, each measured by FVU and delta CE against L0.

    .venv/bin/python scripts/frontier.py [--model artifacts/demo/model] [--acts artifacts/demo/activations]
        [--k 4,8,16,32,64] [--d-sae 2048] [--steps N] [--out reports/frontier]

Steps:
1. train one SAE per k on the activation dataset (`sae.train.train_sae`, one pass over the data
   by default; every SAE sees the same batches), saved to OUT/saes/k<k>/;
2. `sae eval` on the activation dataset: FVU, L0 (the README's "Metrics" definitions; `sae.metrics.evaluate_sae`);
3. `interp eval` on held-out text of the model's corpus: delta CE = CE_sae - CE_clean, CE loss
   recovered, KL score (`interp.interventions.evaluate.evaluate_splice`);
4. OUT/frontier.json (one row per SAE), OUT/frontier.html (plotly, its JS inlined: opens offline),
   and OUT/frontier.png when the kaleido image exporter is importable.

--acts may be one dataset folder (manifest.json) or a capture folder holding one dataset per hook
(OUT/<hook_name>/manifest.json); then --hook picks one (default: the only one, else
blocks.0.mlp.hook_post).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import math
import sys
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from interp.activations.sources import model_corpus
from interp.interventions.evaluate import evaluate_splice
from interp.model.corpus import batched_windows, load_corpus, token_sequences
from interp.model.transformer import load_model
from sae.architectures import get_architecture
from sae.config import TrainConfig
from sae.data import ActivationDataset
from sae.metrics import evaluate_sae
from sae.train import train_sae

DEMO_MODEL = Path("artifacts/demo/model")
DEMO_ACTS = Path("artifacts/demo/activations")
DEFAULT_HOOK = "blocks.0.mlp.hook_post"


def find_dataset(acts: Path, hook: str | None) -> Path:
    """The activation dataset folder: `acts` itself, or its `hook` subfolder (or its only one)."""
    if (acts / "manifest.json").is_file():
        return acts
    if not acts.is_dir():
        raise FileNotFoundError(
            f"activation folder {acts} does not exist; capture one with `interp capture` "
            "(or run `interp demo`) and pass it with --acts."
        )
    hooks = sorted(p.name for p in acts.iterdir() if (p / "manifest.json").is_file())
    if not hooks:
        raise FileNotFoundError(f"{acts} holds no activation dataset (no manifest.json in it or its subfolders).")
    chosen = hook or (hooks[0] if len(hooks) == 1 else DEFAULT_HOOK)
    if chosen not in hooks:
        raise ValueError(f"{acts} has no dataset for hook {chosen!r}; it has {hooks}. Pass --hook NAME.")
    return acts / chosen


def train_sweep(
    dataset: ActivationDataset, arch: str, d_sae: int, ks: list[int], cfg: TrainConfig, out: Path
) -> list[tuple[int, Path]]:
    """Train one SAE per k on one stream of batches; returns (k, folder) pairs."""
    config_class = get_architecture(arch).config_class
    configs = [(arch, config_class.from_dict({"d_in": dataset.d_in, "d_sae": d_sae, "k": k})) for k in ks]
    names = [f"k{k}" for k in ks]
    train_sae(
        configs,
        dataset,
        cfg,
        out,
        names=names,
        run_info={"acts": str(dataset.path), "arch": arch, "sae": {"d_sae": d_sae, "k": ks}},
    )
    return [(k, out / name) for k, name in zip(ks, names)]


def measure(
    sae_dir: Path,
    dataset: ActivationDataset,
    loaded: Any,
    corpus: str,
    *,
    eval_tokens: int,
    acts_tokens: int,
    batch_size: int,
) -> dict[str, Any]:
    """sae eval metrics on the activation dataset and interp eval metrics on held-out text."""
    from sae.io import load_sae

    device = next(loaded.bridge.parameters()).device
    sae = load_sae(sae_dir, device=device).eval()
    tokens = min(acts_tokens, dataset.num_tokens)
    recon = evaluate_sae(sae, dataset.sequential(4096, max_tokens=tokens), max_tokens=tokens, progress=False)
    windows = math.ceil(eval_tokens / loaded.context_length)
    sequences = token_sequences(load_corpus(corpus, "heldout"), loaded.tokenizer, loaded.context_length, seed=0)
    spliced = evaluate_splice(
        loaded.bridge, sae, dataset.hook_name, batched_windows(sequences, batch_size, windows), progress=False
    )
    return {
        "sae": str(sae_dir),
        "k": int(sae.cfg.k) if hasattr(sae.cfg, "k") else None,
        "arch": sae.arch,
        "l0": recon["l0"],
        "fvu": recon["fvu"],
        "explained_variance": recon["explained_variance"],
        "dead_fraction": recon["dead_fraction"],
        "acts_tokens": int(recon["num_tokens"]),
        "l0_heldout": spliced["l0"],
        "fvu_heldout": spliced["fvu"],
        "delta_ce": spliced["delta_ce"],
        "ce_clean": spliced["ce_clean"],
        "ce_sae": spliced["ce_sae"],
        "ce_zero_ablation": spliced["ce_zero_ablation"],
        "ce_loss_recovered": spliced["ce_loss_recovered"],
        "kl_score": spliced["kl_score"],
        "heldout_tokens": int(spliced["num_tokens"]),
    }


def frontier_figure(rows: list[dict[str, Any]], title: str) -> go.Figure:
    """Two panels against L0 (log axis): FVU (sae eval) and delta CE (interp eval), one point per SAE."""
    rows = sorted(rows, key=lambda r: r["l0"])
    l0 = [r["l0"] for r in rows]
    labels = [f"k={r['k']}" for r in rows]
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=("FVU (activation dataset)", "ΔCE = CE_sae − CE_clean (held-out text, nats)")
    )
    for col, key in ((1, "fvu"), (2, "delta_ce")):
        fig.add_trace(
            go.Scatter(
                x=l0,
                y=[r[key] for r in rows],
                mode="lines+markers+text",
                text=labels,
                textposition="top center",
                name=key,
                showlegend=False,
                hovertemplate="L0 %{x:.2f}<br>" + key + " %{y:.4g}<br>%{text}<extra></extra>",
            ),
            row=1,
            col=col,
        )
        fig.update_xaxes(title_text="L0 (mean active latents per token)", type="log", row=1, col=col)
    fig.update_yaxes(title_text="FVU", row=1, col=1)
    fig.update_yaxes(title_text="ΔCE (nats/token)", row=1, col=2)
    fig.update_layout(title=title, width=1100, height=480, template="plotly_white")
    return fig


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=DEMO_MODEL, help=f"model folder (default {DEMO_MODEL})")
    p.add_argument(
        "--acts", type=Path, default=DEMO_ACTS, help=f"activation dataset or capture folder (default {DEMO_ACTS})"
    )
    p.add_argument("--hook", default=None, help="hook subfolder of --acts when it holds several")
    p.add_argument(
        "--arch",
        default="topk",
        choices=("topk", "batchtopk", "matryoshka"),
        help="a k-sparse architecture (default topk)",
    )
    p.add_argument("--k", default="4,8,16,32,64", help="comma list of k (default 4,8,16,32,64)")
    p.add_argument("--d-sae", type=int, default=2048, help="latents per SAE (default 2048)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (default: one pass over the dataset)")
    p.add_argument("--batch-size", type=int, default=1024, help="training batch in tokens (default 1024)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the trainer's width rule)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--corpus", default=None, help="corpus of the held-out text (default: the model's)")
    p.add_argument("--eval-tokens", type=int, default=16384, help="held-out tokens for interp eval (default 16384)")
    p.add_argument("--acts-tokens", type=int, default=65536, help="activation rows for sae eval (default 65536)")
    p.add_argument("--eval-batch-size", type=int, default=16, help="windows per forward pass in interp eval")
    p.add_argument(
        "--out", type=Path, default=Path("reports/frontier"), help="output folder (default reports/frontier)"
    )
    p.add_argument("--reuse", action="store_true", help="skip training when OUT/saes holds the trained SAEs")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    ks = [int(k) for k in args.k.split(",") if k.strip()]
    if not ks or min(ks) <= 0 or max(ks) > args.d_sae:
        raise ValueError(f"--k must list values in 1..d_sae={args.d_sae}, got {args.k!r}")
    if not args.model.is_dir():
        raise FileNotFoundError(f"model folder {args.model} does not exist; run `interp demo` or pass --model DIR.")
    dataset = ActivationDataset(find_dataset(args.acts, args.hook))
    cfg = TrainConfig(batch_size=args.batch_size, steps=args.steps, lr=args.lr, checkpoint_every=0, log_every=50)
    saes = args.out / "saes"
    if args.reuse and all((saes / f"k{k}" / "cfg.json").is_file() for k in ks):
        trained = [(k, saes / f"k{k}") for k in ks]
    else:
        trained = train_sweep(dataset, args.arch, args.d_sae, ks, cfg, saes)
    loaded = load_model(args.model)
    corpus = args.corpus or model_corpus(str(args.model))
    rows = []
    for k, folder in trained:
        row = measure(
            folder,
            dataset,
            loaded,
            corpus,
            eval_tokens=args.eval_tokens,
            acts_tokens=args.acts_tokens,
            batch_size=args.eval_batch_size,
        )
        rows.append(row)
        print(
            f"k={k:<4} L0 {row['l0']:7.2f}  FVU {row['fvu']:.4f}  ΔCE {row['delta_ce']:+.4f}  "
            f"CE recovered {row['ce_loss_recovered']:.4f}  KL score {row['kl_score']:.4f}"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {
        "model": str(args.model),
        "acts": str(dataset.path),
        "hook_name": dataset.hook_name,
        "corpus": corpus,
        "train": dataclasses.asdict(cfg),
        "d_sae": args.d_sae,
        "rows": rows,
    }
    (args.out / "frontier.json").write_text(json.dumps(summary, indent=1) + "\n")
    fig = frontier_figure(rows, f"{args.arch} SAEs on {dataset.hook_name} of {args.model} (d_sae {args.d_sae})")
    fig.write_html(args.out / "frontier.html", include_plotlyjs=True, full_html=True)
    written = [args.out / "frontier.json", args.out / "frontier.html"]
    if importlib.util.find_spec("kaleido") is not None:
        try:
            fig.write_image(args.out / "frontier.png", scale=2)
            written.append(args.out / "frontier.png")
        except (RuntimeError, ValueError, OSError) as err:  # kaleido present but its browser is not
            print(f"frontier: no PNG ({err})", file=sys.stderr)
    print("wrote " + ", ".join(map(str, written)))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ValueError, FileNotFoundError) as err:
        print(f"frontier: error: {err}", file=sys.stderr)
        sys.exit(2)
