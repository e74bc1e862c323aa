"""Query latency of `interp.features.search.FeatureIndex` on a 16k-feature index.

Builds, in a temporary folder, an analysis artifact of realistic shape: a 16,384-feature TopK SAE on
the model's `blocks.0.mlp.hook_post`, its statistics from the analysis pass over planted token-detector
activations (every tensor an `interp analyze` artifact has, at default settings), the model's real logit
map, and a label for every feature. The model is the demo's (artifacts/demo/model) when it exists,
else a freshly initialised one of the demo's shape with a tokenizer trained on a slice of the standard
library. Then it loads the index once and times each query kind (after one warm-up call); the text
query is timed beside a bare forward pass + SAE encode of the same prompt.

    .venv/bin/python scripts/bench_search.py [--features 16384] [--repeats 30] [--model DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from interp.features.analysis.config import AnalysisConfig
from interp.features.analysis.decoder import logit_map
from interp.features.labels.config import LabelConfig
from interp.features.labels.files import save_labels
from interp.features.labels.labeller import Label
from interp.features.labels.rules import show_token
from interp.features.search import FeatureIndex

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the planted analysis is a test fixture
from planted import planted_analysis, token_detector_batches, zipf_tokens  # noqa: E402

HOOK = "blocks.0.mlp.hook_post"
TARGET_MS = 50.0


def demo_or_fresh_model(model_dir: Path | None, scratch: Path) -> Path:
    from interp.model.builtin import stdlib_files
    from interp.model.config import ModelConfig
    from interp.model.tokenizer import train_tokenizer
    from interp.model.transformer import build_native_model, save_model

    if model_dir is not None and (model_dir / "config.json").is_file():
        return model_dir
    texts = [p.read_text(errors="replace") for p in stdlib_files()[:300]]
    cfg = ModelConfig()
    tokenizer = train_tokenizer(texts, vocab_size=cfg.d_vocab, show_progress=False)
    return save_model(build_native_model(cfg), cfg, tokenizer, scratch / "model")


def build_index(folder: Path, model_dir: Path, features: int, seed: int) -> None:
    from interp.model.transformer import load_model
    from sae.architectures import build_sae
    from sae.io import load_sae, save_sae

    model = load_model(model_dir)
    d_mlp, V = int(model.bridge.cfg.d_mlp), int(model.bridge.cfg.d_vocab)
    torch.manual_seed(seed)
    save_sae(build_sae("topk", d_in=d_mlp, d_sae=features, k=32), folder / "sae", metadata={"hook_name": HOOK})
    sae = load_sae(folder / "sae")
    g = torch.Generator().manual_seed(seed)
    vocab = model.tokenizer.token_strings() + [f"<unused {i}>" for i in range(model.tokenizer.vocab_size, V)]
    feature_tokens = [
        torch.randint(1, V, (int(torch.randint(1, 4, (1,), generator=g)),), generator=g).tolist()
        for _ in range(features)
    ]
    n_seq, T = 64, model.context_length
    tokens = zipf_tokens(n_seq, T, V, seed=seed)
    cfg = AnalysisConfig()
    batches = token_detector_batches(tokens, feature_tokens, seed=seed, batch=4, fire_probability=0.8)
    analysis = planted_analysis(
        batches,
        vocab,
        cfg,
        W_dec=sae.W_dec.detach(),
        expected_sequences=n_seq,
        meta={
            "hook_name": HOOK,
            "model": {"name": model.name, "spec": str(model_dir.resolve())},
            "sae": {"d_in": d_mlp, "d_sae": features, "architecture": "topk", "path": str((folder / "sae").resolve())},
            "neurons_written": True,
        },
    )
    logits, basis = logit_map(model.bridge, HOOK, d_mlp)
    analysis.tensors["logit_directions"] = logits.residual(sae.W_dec.detach().float())
    analysis.tensors["unembed"] = logits.W_U
    analysis.meta["logit_effects"] = basis
    analysis.save(folder / "analysis")
    labels = []
    for i in range(features):  # a label of the labeller's form on every feature, with a score
        named = ", ".join(show_token(vocab[t]) for t in feature_tokens[i])
        labels.append(Label(i, f"fires on {named}", float(torch.rand(1, generator=g)), None, None, None, {}, {}))
    save_labels([label.to_dict() for label in labels], folder / "analysis", dataclasses.asdict(LabelConfig()))


def timed(call, repeats: int) -> list[float]:
    call(0)  # warm-up
    times = []
    for r in range(repeats):
        start = time.perf_counter()
        call(r + 1)
        times.append((time.perf_counter() - start) * 1000)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=16_384)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument(
        "--model", type=Path, default=Path("artifacts/demo/model"), help="model folder (default: the demo's, if built)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        start = time.perf_counter()
        model_dir = demo_or_fresh_model(args.model, scratch)
        build_index(scratch, model_dir, args.features, args.seed)
        print(f"built a {args.features}-feature index in {time.perf_counter() - start:.0f} s (model {model_dir})")

        start = time.perf_counter()
        index = FeatureIndex.load(scratch / "analysis")
        load_s = time.perf_counter() - start
        vocab = index.vocab
        common = [vocab[int(t)] for t in torch.argsort(index.token_counts, descending=True)[: args.repeats + 1]]
        prompts = [f"def function_{r}(self, value):\n    return value + {r}" for r in range(args.repeats + 1)]
        queries = {
            "token": lambda r: index.by_token(common[r], top=10),
            "label": lambda r: index.by_label(r"fires on .*" + str(r % 10), top=10),
            "logit": lambda r: index.by_logit(common[r], top=10),
            "nearest (id)": lambda r: index.nearest(r * 97 % index.F, top=10),
            "nearest (vector)": lambda r: index.nearest(torch.randn(index.unit_decoder.shape[1]), top=10),
            "token + filters": lambda r: index.by_token(
                common[r], top=10, min_density=1e-5, max_density=0.1, min_label_score=0.5
            ),
        }
        start = time.perf_counter()
        index.by_text(prompts[0])
        first_text_s = time.perf_counter() - start
        runner, model_seconds = index._runner, []
        run_model = runner.features

        def timed_model(prompt: str):  # the forward pass + SAE encode inside each text query, timed apart
            start = time.perf_counter()
            result = run_model(prompt)
            model_seconds.append(time.perf_counter() - start)
            return result

        runner.features = timed_model
        queries["text (whole prompt)"] = lambda r: index.by_text(prompts[r], top=5)

        print(
            f"index load: {load_s * 1000:.0f} ms ({index.F} features, vocabulary {len(vocab)}); "
            f"first text query (loads model and SAE): {first_text_s * 1000:.0f} ms"
        )
        print(f"{'query':<32}{'median ms':>10}{'p95 ms':>9}{'max ms':>9}")
        worst, text_times = 0.0, []
        for name, call in queries.items():
            model_seconds.clear()
            times = timed(call, args.repeats)
            if name.startswith("text"):
                text_times = [t - 1000 * m for t, m in zip(times, model_seconds[1:])]  # without the warm-up call
                model_ms = sorted(1000 * m for m in model_seconds[1:])
            times = sorted(times)
            median, p95 = statistics.median(times), times[int(0.95 * (len(times) - 1))]
            print(f"{name:<32}{median:>10.2f}{p95:>9.2f}{times[-1]:>9.2f}")
            if not name.startswith("text"):
                worst = max(worst, median)
        text_times.sort()
        model_p95 = model_ms[int(0.95 * (len(model_ms) - 1))]
        label = "  of which forward pass + encode"
        print(f"{label:<32}{statistics.median(model_ms):>10.2f}{model_p95:>9.2f}{model_ms[-1]:>9.2f}")
        print(
            f"{'  of which the query itself':<32}{statistics.median(text_times):>10.2f}"
            f"{text_times[int(0.95 * (len(text_times) - 1))]:>9.2f}{text_times[-1]:>9.2f}"
        )
        worst = max(worst, statistics.median(text_times))
        print(f"slowest query median, forward pass excluded: {worst:.2f} ms (target < {TARGET_MS:.0f} ms)")
        print(f"torch threads {torch.get_num_threads()}")
    return 0 if worst < TARGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
