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
        description="Reads windows spread over every document of the split, marks every token with concepts "
        "computed from the text alone (Python's tokenize, regular expressions), and scores every feature and neuron "
        "as a detector of every concept beside trivial baselines (token identity, previous + current token, every "
        "token): the best unit, greedy ORs of up to 8 units and sparse probes, chosen on some documents and scored "
        "on others over rotating folds, every figure with a document-bootstrap 95%% interval. Adds unit purity, "
        "absorption, universality across models, feature splitting and logit consistency. Writes "
        "OUT/scorecard.json.",
    )


def run(cfg: ScorecardRun) -> int:
    from interp.features.scorecard.run import run_scorecard

    record = run_scorecard(cfg.inputs, cfg.settings, cfg.out)
    print_summary(record)
    return 0


def _show(figure: dict | None) -> str:
    if not figure or figure["value"] is None:
        return "–"
    return f"{figure['value']:.2f} [{figure['low']:.2f}, {figure['high']:.2f}]"


def print_summary(record: dict) -> None:
    """The concept table (the k=1 unit's F1 with its interval) and the headline verdicts, as the terminal shows them."""
    sides = [
        s for s in ("features", "neurons", "control_features", "control_neurons") if s in record["logit_consistency"]
    ]
    print(f"{'concept':30} {'kind':8} {'best baseline':>18} " + " ".join(f"{s:>18}" for s in sides))
    for c in record["concepts"]:
        if not c["scored"]:
            continue
        kind = "token" if c["kind"] == "token identity" else "context"
        cells = " ".join(f"{_show(c['sides'][s]['k1']):>18}" for s in sides)
        print(f"{c['name'][:30]:30} {kind:8} {_show(c['best_baseline']):>18} {cells}")
    context = record["summary"]["kinds"]["context"]
    solved = record["summary"]["token_solved_at"]
    print(f"context concepts: {context['concepts']} (a lookup of token ids stays below F1 {solved} on each)")
    for found in context["comparisons"]:
        print(
            f"  {found['scorer']:>6}: median skill {found['a']} {_show(found['median_skill_a'])} vs {found['b']} "
            f"{_show(found['median_skill_b'])}; difference {_show(found['difference'])}: {found['verdict']}"
        )
