"""`interp scorecard`: SAE features against the model's neurons on concepts with exact ground truth."""

from __future__ import annotations

import argparse

from interp.cli.options import add_corpus, add_model
from interp.config import ScorecardConfig
from interp.scorecard.concepts import SUITES
from sae.options import add_sae

DEFAULTS = ScorecardConfig()


def register(subparsers: argparse._SubParsersAction) -> None:
    card = subparsers.add_parser(
        "scorecard",
        help="score SAE features against neurons on concepts with exact ground truth, with a random-init control",
        description="Reads the token windows `interp capture` writes for the same corpus, split, seed and token "
        "count, marks every token with concepts computed from the text alone (Python's tokenize, regular "
        "expressions), and scores every feature and neuron as a detector of every concept: AUROC, F1 at the best "
        "threshold, precision and recall when it fires, and sparse probes. Units and thresholds are chosen on the "
        "first half of the windows and scored on the second. Writes OUT/scorecard.json.",
    )
    add_model(card)
    add_sae(card)
    add_corpus(card)
    card.add_argument("--split", default=DEFAULTS.split, help=f"corpus split to read (default {DEFAULTS.split})")
    card.add_argument(
        "--seed", type=int, default=DEFAULTS.seed, help="corpus order, as `interp capture --seed` (default 0)"
    )
    card.add_argument(
        "--tokens", type=int, default=DEFAULTS.tokens, help=f"token positions to read (default {DEFAULTS.tokens})"
    )
    card.add_argument(
        "--suite",
        default=DEFAULTS.suite,
        help=f"built-in concepts: auto (python and text for Python source, text and shakespeare for the plays, text "
        f"otherwise) or a comma-separated list of {list(SUITES[1:])} (default auto)",
    )
    card.add_argument(
        "--concept",
        action="append",
        default=[],
        metavar="NAME=REGEX",
        help="a concept of your own: a token is positive when one of its characters lies in a match (repeatable)",
    )
    card.add_argument("--control-model", metavar="SPEC", help="the model at initialisation (`interp model init`)")
    card.add_argument("--control-sae", metavar="DIR", help="an SAE trained like --sae on --control-model")
    card.add_argument("--universality-sae", metavar="DIR", help="an SAE trained like --sae with another seed")
    card.add_argument("--universality-model", metavar="SPEC", help="a model trained like --model with another seed")
    card.add_argument(
        "--width-sae",
        action="append",
        default=[],
        metavar="DIR",
        help="an SAE of another width on the same hook; repeat",
    )
    card.add_argument(
        "--min-positives",
        type=int,
        default=DEFAULTS.min_positives,
        help=f"positives each half needs for a concept to be scored (default {DEFAULTS.min_positives})",
    )
    card.add_argument("--out", required=True, help="folder to write scorecard.json into")
    card.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from interp.scorecard.run import ScorecardInputs, run_scorecard

    cfg = ScorecardConfig(
        tokens=args.tokens,
        split=args.split,
        seed=args.seed,
        suite=args.suite,
        concepts=tuple(args.concept),
        min_positives=args.min_positives,
    )
    inputs = ScorecardInputs(
        model=args.model,
        sae=args.sae,
        corpus=args.corpus,
        control_model=args.control_model,
        control_sae=args.control_sae,
        universality_sae=args.universality_sae,
        universality_model=args.universality_model,
        width_saes=list(args.width_sae),
    )
    record = run_scorecard(inputs, cfg, args.out)
    print_summary(record)
    return 0


def print_summary(record: dict) -> None:
    """The concept table and the medians, as the terminal shows them."""
    control = {c["name"]: c for c in (record["control"] or {}).get("concepts", [])}
    print(f"{'concept':34} {'pos':>6}  {'feature F1':>10} {'neuron F1':>9} {'ctl feat':>8} {'ctl neur':>8}  winner")
    for c in record["concepts"]:
        if not c["scored"]:
            continue
        f, n = c["best_feature"]["f1"], c["best_neuron"]["f1"]
        ctl = control.get(c["name"]) or {}

        def show(unit: dict | None) -> str:
            return "–" if not unit or unit["f1"] is None else f"{unit['f1']:.2f}"

        winner = "features" if f > n else "neurons" if n > f else "tie"
        print(
            f"{c['name'][:34]:34} {c['positives']:>6}  {f:>10.2f} {n:>9.2f} "
            f"{show(ctl.get('best_feature')):>8} {show(ctl.get('best_neuron')):>8}  {winner}"
        )
    median = record["summary"]["median"]
    print("median best F1: " + ", ".join(f"{side} {m['f1']:.3f}" for side, m in median.items() if m["f1"] is not None))
