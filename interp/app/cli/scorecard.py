"""`interp scorecard`: SAE features against the model's neurons on concepts with exact ground truth."""

from __future__ import annotations

import argparse

from interp.features.scorecard.config import ScorecardRun
from sae.command import add_command


def register(subparsers: argparse._SubParsersAction) -> None:
    add_command(
        subparsers,
        "scorecard",
        ScorecardRun,
        run,
        help="score SAE features against neurons on concepts with exact ground truth, with a random-init control",
        description="Reads the token windows `interp capture` writes for the same corpus, split, seed and token "
        "count, marks every token with concepts computed from the text alone (Python's tokenize, regular "
        "expressions), and scores every feature and neuron as a detector of every concept: AUROC, F1 at the best "
        "threshold, precision and recall when it fires, and sparse probes. Units and thresholds are chosen on the "
        "first half of the windows and scored on the second. Writes OUT/scorecard.json.",
    )


def run(cfg: ScorecardRun) -> int:
    from interp.features.scorecard.run import run_scorecard

    record = run_scorecard(cfg.inputs, cfg.settings, cfg.out)
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
