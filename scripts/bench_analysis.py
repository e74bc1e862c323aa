"""Benchmark of `interp analyze` and `interp report`: speed, memory, and SAEDashboard on the same
SAE and tokens.

    .venv/bin/python scripts/bench_analysis.py --model artifacts/demo/model --sae artifacts/demo/sae \
        --tokens 32768,131072 [--d-sae 16384] [--dashboard-python /work/dashboard-venv/bin/python]

Each token count runs in a fresh process that loads the model and SAE, takes the first N held-out
tokens, runs the analysis pass, saves the artifact and writes the report. It prints
- analysis: tokens/s of the pass (model forward + SAE encode + every statistic) and feature-token
  updates/s (tokens x d_sae / s), decoder statistics time, save time;
- report: features/s;
- memory: peak RSS, and its growth over the RSS after loading (which must not grow with N).
`--d-sae` swaps in a random TopK SAE of that width on the SAE's hook (a scale test).

With `--dashboard-python` (a venv with `sae-dashboard` installed; it pins transformer-lens < 3, so it
cannot share this venv), the same model (converted to a TransformerLens 2 HookedTransformer and
checked logit for logit), SAE and token windows go through SAEDashboard's SaeVisRunner and
feature-centric HTML, timed end to end beside ours.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def rss_mb() -> float:
    """Current resident set size of this process, MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_inputs(args: argparse.Namespace):
    """(LoadedModel, SAE, hook name, token windows [n, T] of the first `tokens` held-out tokens)."""
    import itertools

    import torch

    from interp.model.corpus import load_corpus, token_sequences
    from interp.model.transformer import load_model
    from sae.io import load_sae

    model = load_model(args.model)
    sae = load_sae(args.sae)
    hook = args.hook or sae.metadata.get("hook_name")
    if args.d_sae:
        from sae.architectures import build_sae

        torch.manual_seed(0)
        sae = build_sae("topk", d_in=sae.cfg.d_in, d_sae=args.d_sae, k=args.k)
    T = model.context_length
    corpus = load_corpus(args.corpus, "heldout")
    windows = torch.stack(
        list(itertools.islice(token_sequences(corpus, model.tokenizer, T, seed=0), -(-args.tokens // T)))
    )
    return model, sae, hook, windows


def child(args: argparse.Namespace) -> None:
    """One measured run; prints one JSON line."""
    import torch

    from interp.app.config import ReportConfig
    from interp.app.report.write import write_report
    from interp.features.analysis.config import AnalysisConfig
    from interp.features.analysis.decoder import decoder_statistics, logit_map
    from interp.features.analysis.run import analyze
    from sae.hardware import tune_allocator

    torch.set_num_threads(args.threads or torch.get_num_threads())
    tune_allocator("release")  # as `interp analyze` runs
    start = time.perf_counter()
    model, sae, hook, windows = load_inputs(args)
    loaded = time.perf_counter()
    baseline = rss_mb()
    cfg = AnalysisConfig(tokens=windows.numel())
    analysis = analyze(model, sae, hook, iter(windows), cfg, progress=False)
    analysed = time.perf_counter()
    logits, _ = logit_map(model.bridge, hook, sae.W_dec.shape[1])
    t = time.perf_counter()
    decoder_statistics(sae.W_dec, logits, cfg, neurons=False)
    decoder_s = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        analysis.save(Path(tmp) / "analysis")
        saved = time.perf_counter()
        report_cfg = ReportConfig(analysis=str(Path(tmp) / "analysis"), out=str(Path(tmp) / "report"))
        report = write_report(report_cfg, progress=False)
        reported = time.perf_counter()
        size = sum(p.stat().st_size for p in (Path(tmp) / "report").rglob("*") if p.is_file())
    print(
        json.dumps(
            {
                "tokens": windows.numel(),
                "d_sae": int(sae.W_dec.shape[0]),
                "hook": hook,
                "threads": torch.get_num_threads(),
                "load_s": loaded - start,
                "analyze_s": analysed - loaded,
                "decoder_s": decoder_s,
                "save_s": saved - t,
                "report_s": reported - saved,
                "report_load_s": report["load_s"],
                "report_mb": size / 2**20,
                "baseline_rss_mb": baseline,
                "peak_rss_mb": peak_rss_mb(),
            }
        )
    )


# ---- SAEDashboard -------------------------------------------------------------------------------

DASHBOARD_RUNNER = r"""
import json, sys, time
import torch
from safetensors.torch import load_file
args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
start = time.perf_counter()
from transformer_lens import HookedTransformerConfig
from sae_lens import SAE, HookedSAETransformer
from sae_dashboard.sae_vis_data import SaeVisConfig
from sae_dashboard.sae_vis_runner import SaeVisRunner
from sae_dashboard.data_writing_fns import save_feature_centric_vis
cfg = HookedTransformerConfig(**json.load(open(args["model_cfg"])))
model = HookedSAETransformer(cfg)
state = load_file(args["model_weights"])
missing = [k for k in model.load_state_dict(state, strict=False).missing_keys if not k.endswith(("IGNORE", ".mask"))]
assert not missing, f"weights missing from the converted model: {missing}"
from transformers import AutoTokenizer, PreTrainedTokenizerFast
special = "<|endoftext|>"
PreTrainedTokenizerFast(tokenizer_file=args["tokenizer"], bos_token=special, eos_token=special,
                        pad_token=special).save_pretrained(args["tokenizer"] + ".hf")
model.set_tokenizer(AutoTokenizer.from_pretrained(args["tokenizer"] + ".hf"))
model.eval()
data = load_file(args["tokens"])
tokens, expected = data["tokens"], data["logits"]
with torch.no_grad():
    got = model(tokens[:2])
logit_error = float((got - expected).abs().max())
sae = SAE.load_from_disk(args["sae"], device="cpu")
# SaeVisRunner folds decoder norms into the encoder, which sae-lens refuses for TopK SAEs whose decoder
# rows are not unit norm (ours carry the folded activation scale); without the fold it sees the same
# feature activations as our analysis.
sae.fold_W_dec_norm = lambda: None
loaded = time.perf_counter()
features = list(range(args["features"]))
vis_cfg = SaeVisConfig(hook_point=args["hook"], features=features, minibatch_size_features=args["feature_batch"],
                       minibatch_size_tokens=args["token_batch"], device="cpu", dtype="float32", verbose=False)
vis = SaeVisRunner(vis_cfg).run(encoder=sae, model=model, tokens=tokens)
ran = time.perf_counter()
save_feature_centric_vis(sae_vis_data=vis, filename=args["html"])
saved = time.perf_counter()
print(json.dumps({"load_s": loaded - start, "run_s": ran - loaded, "html_s": saved - ran, "logit_error": logit_error,
                  "features": len(features)}))
"""


def export_for_dashboard(args: argparse.Namespace, folder: Path) -> dict:
    """The model as TransformerLens 2 HookedTransformer weights + config, the token windows with
    reference logits, and the SAE folder: what the dashboard runner reads."""
    import torch
    from safetensors.torch import save_file

    model, sae, hook, windows = load_inputs(args)
    b, c = model.bridge, model.bridge.cfg
    state = {
        "embed.W_E": b.W_E,
        "pos_embed.W_pos": b.W_pos,
        "unembed.W_U": b.W_U,
        "unembed.b_U": b.b_U,
        "ln_final.w": b.ln_final.weight,
        "ln_final.b": b.ln_final.bias,
    }
    for i, block in enumerate(b.blocks):
        for name in ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "W_in", "b_in", "W_out", "b_out"):
            state[f"blocks.{i}.{'mlp' if name[2:] in ('in', 'out') else 'attn'}.{name}"] = getattr(b, name)[i]
        state[f"blocks.{i}.attn.b_O"] = b.b_O[i]
        state[f"blocks.{i}.ln1.w"], state[f"blocks.{i}.ln1.b"] = block.ln1.weight, block.ln1.bias
        state[f"blocks.{i}.ln2.w"], state[f"blocks.{i}.ln2.b"] = block.ln2.weight, block.ln2.bias
    save_file({k: v.detach().float().contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    tl_cfg = dict(
        n_layers=c.n_layers,
        d_model=c.d_model,
        n_heads=c.n_heads,
        d_head=c.d_head,
        d_mlp=c.d_mlp,
        n_ctx=c.n_ctx,
        d_vocab=c.d_vocab,
        act_fn=c.act_fn,
        normalization_type=c.normalization_type,
        positional_embedding_type="standard",
        default_prepend_bos=False,
    )
    (folder / "model.json").write_text(json.dumps(tl_cfg))
    with torch.no_grad():
        logits = b(windows[:2])
    save_file(
        {"tokens": windows.contiguous(), "logits": logits.float().contiguous()}, str(folder / "tokens.safetensors")
    )
    sae_dir = Path(args.sae)
    if args.d_sae:
        from sae.io import save_sae

        sae_dir = folder / "sae"
        save_sae(sae, sae_dir, metadata={"hook_name": hook})
    model.tokenizer.save(folder)
    return {
        "model_cfg": str(folder / "model.json"),
        "tokenizer": str(folder / "tokenizer.json"),
        "model_weights": str(folder / "model.safetensors"),
        "tokens": str(folder / "tokens.safetensors"),
        "sae": str(sae_dir),
        "hook": hook,
        "features": args.dashboard_features or int(sae.W_dec.shape[0]),
        "feature_batch": 64,
        "token_batch": 4096,
        "html": str(folder / "dashboard.html"),
        "threads": args.threads or os.cpu_count(),
        "d_sae": int(sae.W_dec.shape[0]),
    }


def run_dashboard(args: argparse.Namespace) -> dict | None:
    with tempfile.TemporaryDirectory() as tmp:
        job = export_for_dashboard(args, Path(tmp))
        script = Path(tmp) / "runner.py"
        script.write_text(DASHBOARD_RUNNER)
        try:
            done = subprocess.run(
                [args.dashboard_python, str(script), json.dumps(job)],
                capture_output=True,
                text=True,
                timeout=args.dashboard_timeout,
            )
        except subprocess.TimeoutExpired:
            return {"error": f"did not finish within {args.dashboard_timeout} s", **job}
        if done.returncode != 0:
            return {
                "error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}",
                "stderr_tail": done.stderr[-3000:],
            }
        result = json.loads(done.stdout.strip().splitlines()[-1])
        return {**result, "d_sae": job["d_sae"], "tokens": None}


# ---- driver -------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(ROOT / "artifacts/demo/model"), help="model folder")
    parser.add_argument("--sae", default=str(ROOT / "artifacts/demo/sae"), help="SAE folder")
    parser.add_argument("--hook", default=None, help="hook (default: the SAE's)")
    parser.add_argument("--corpus", default="stdlib", help="corpus spec (its held-out split is analysed)")
    parser.add_argument("--tokens", default="32768,131072", help="token counts, comma separated")
    parser.add_argument("--d-sae", type=int, default=None, help="use a random TopK SAE of this width instead")
    parser.add_argument("--k", type=int, default=32, help="k of the random TopK SAE")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--dashboard-python", default=None, help="python of a venv with sae-dashboard installed")
    parser.add_argument(
        "--dashboard-features", type=int, default=None, help="features SAEDashboard renders (default all)"
    )
    parser.add_argument("--dashboard-timeout", type=int, default=3600, help="seconds before SAEDashboard is given up")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.tokens = int(args.tokens)
        child(args)
        return

    counts = [int(n) for n in args.tokens.split(",")]
    rows = []
    for n in counts:
        command = [
            sys.executable,
            __file__,
            "--child",
            "--tokens",
            str(n),
            "--model",
            args.model,
            "--sae",
            args.sae,
            "--corpus",
            args.corpus,
            "--k",
            str(args.k),
        ]
        for flag, value in (("--hook", args.hook), ("--d-sae", args.d_sae), ("--threads", args.threads)):
            if value:
                command += [flag, str(value)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"analysis run with {n} tokens failed:\n{done.stderr[-3000:]}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))

    print(
        f"# analysis of {args.sae if not args.d_sae else f'a random TopK SAE (d_sae {args.d_sae}, k {args.k})'} "
        f"on {rows[0]['hook']}, {rows[0]['threads']} threads"
    )
    print(
        f"{'tokens':>8} {'d_sae':>6} {'pass s':>7} {'tok/s':>8} {'feat·tok/s':>11} {'decoder s':>9} {'report s':>8} "
        f"{'feat/s':>7} {'report MB':>9} {'RSS base':>8} {'RSS peak':>8} {'growth':>7}"
    )
    for r in rows:
        pass_s = r["analyze_s"] - r["decoder_s"]
        print(
            f"{r['tokens']:>8} {r['d_sae']:>6} {pass_s:>7.1f} {r['tokens'] / pass_s:>8.0f} "
            f"{r['tokens'] * r['d_sae'] / pass_s:>11.3g} "
            f"{r['decoder_s']:>9.1f} {r['report_s']:>8.1f} {r['d_sae'] / r['report_s']:>7.0f} {r['report_mb']:>9.1f} "
            f"{r['baseline_rss_mb']:>8.0f} {r['peak_rss_mb']:>8.0f} {r['peak_rss_mb'] - r['baseline_rss_mb']:>7.0f}"
        )
    if len(rows) > 1:
        growth = [r["peak_rss_mb"] - r["baseline_rss_mb"] for r in rows]
        print(
            f"memory: peak growth over the loaded process {growth[0]:.0f} MiB at {rows[0]['tokens']} tokens, "
            f"{growth[-1]:.0f} MiB at {rows[-1]['tokens']} tokens ({rows[-1]['tokens'] / rows[0]['tokens']:.0f}x the "
            "tokens)"
        )

    if args.dashboard_python:
        args.tokens = counts[-1]
        ours = rows[-1]
        ours_s = ours["load_s"] + ours["analyze_s"] + ours["save_s"] + ours["report_s"]
        theirs = run_dashboard(args)
        print(f"# SAEDashboard on the same model, SAE and {ours['tokens']} tokens")
        if theirs is None or "error" in theirs:
            print(f"SAEDashboard failed: {json.dumps(theirs)}")
            return
        theirs_s = theirs["load_s"] + theirs["run_s"] + theirs["html_s"]
        scale = theirs["d_sae"] / theirs["features"]
        print(
            f"SAEDashboard: load {theirs['load_s']:.1f} s, run {theirs['run_s']:.1f} s, html {theirs['html_s']:.1f} s "
            f"for {theirs['features']} features (converted model's max logit error {theirs['logit_error']:.2e})"
        )
        print(
            f"ours: load {ours['load_s']:.1f} s + analyse {ours['analyze_s']:.1f} s + save {ours['save_s']:.1f} s "
            f"+ report {ours['report_s']:.1f} s = {ours_s:.1f} s for all {ours['d_sae']} features"
        )
        if scale > 1:
            projected = theirs["load_s"] + (theirs["run_s"] + theirs["html_s"]) * scale
            print(
                f"SAEDashboard projected to all {theirs['d_sae']} features (run and html scaled by {scale:.1f}): "
                f"{projected:.0f} s"
            )
            theirs_s = projected
        print(f"end to end: ours {ours_s:.1f} s, SAEDashboard {theirs_s:.1f} s: {theirs_s / ours_s:.1f}x faster")


if __name__ == "__main__":
    main()
