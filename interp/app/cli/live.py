"""`interp steer` and `interp serve`: the model run with features changed, from the terminal and from
the report's live panels."""

from __future__ import annotations

import argparse
import itertools
import shutil
import textwrap

from interp.app.config import ServeConfig
from interp.interventions.config import SteerConfig
from sae.command import JsonOutput, add_command, emit_json


def register(subparsers: argparse._SubParsersAction) -> None:
    add_command(
        subparsers,
        "steer",
        SteerConfig,
        run_steer,
        help="continue a prompt with features clamped, beside the clean continuation",
        description="Splices the SAE into the model with its error term (so that, with nothing changed, the model "
        "is exactly the clean one), sets each --feature ID to VALUE at every position, and prints the clean "
        "and the steered continuations side by side. VALUE 0 ablates the feature.",
        json=True,
    )
    add_command(
        subparsers,
        "serve",
        ServeConfig,
        run_serve,
        help="serve a report with live panels: a prompt view and feature steering",
        description="Serves the report folder unchanged over HTTP and answers its live panels from the model and "
        "the SAE: /api/activations (the top features of each token of a text) and /api/generate (a continuation "
        "with features clamped).",
    )


def run_steer(cfg: SteerConfig, output: JsonOutput) -> int:
    from interp.activations.sources import open_model_and_sae
    from interp.interventions.intervene import check_edits, clamp, clean_text, steered_text

    cfg.validate()
    opened = open_model_and_sae(cfg.model, cfg.sae, device=cfg.device)
    edits = [clamp(i, v) for i, v in cfg.clamps]
    check_edits(edits, int(opened.sae.cfg.d_sae))
    options = dict(temperature=cfg.temperature, seed=cfg.seed)
    clean = clean_text(opened, cfg.prompt, cfg.tokens, **options)
    steered = steered_text(opened, cfg.prompt, edits, cfg.tokens, **options)
    result = {"prompt": cfg.prompt, "steer": {str(i): v for i, v in cfg.clamps}, "clean": clean, "steered": steered}
    if emit_json(output, result):
        return 0
    what = ", ".join(f"feature {i} = {v:g}" for i, v in cfg.clamps)
    print(side_by_side(("clean", clean), (f"steered ({what})", steered), prompt=cfg.prompt))
    return 0


def side_by_side(left: tuple[str, str], right: tuple[str, str], *, prompt: str) -> str:
    """Two continuations in two columns, the prompt above; line breaks kept, long lines wrapped,
    tabs shown as ⇥."""
    width = max(30, (shutil.get_terminal_size((120, 24)).columns - 3) // 2)

    def lines(text: str) -> list[str]:
        out = []
        for line in text.replace("\t", "⇥").split("\n"):
            out.extend(textwrap.wrap(line, width, drop_whitespace=False, replace_whitespace=False) or [""])
        return out

    rows = [f"prompt: {prompt!r}", "", f"{left[0]:<{width}} | {right[0]}", f"{'-' * width}-+-{'-' * width}"]
    for a, b in itertools.zip_longest(lines(left[1]), lines(right[1]), fillvalue=""):
        rows.append(f"{a:<{width}} | {b}")
    return "\n".join(rows)


def run_serve(cfg: ServeConfig) -> int:
    from interp.activations.sources import open_model_and_sae
    from interp.app.serve import LiveModel, check_report, serve
    from sae.io import weights_fingerprint as sae_weights_fingerprint

    cfg.validate()
    report_meta = check_report(cfg.report)
    opened = open_model_and_sae(cfg.model, cfg.sae, device=cfg.device)
    live = LiveModel(opened)
    if report_meta.get("d_sae") != live.d_sae:
        raise ValueError(
            f"the report in {cfg.report} shows {report_meta.get('d_sae')} features but the SAE in {cfg.sae} has "
            f"{live.d_sae}; pass the SAE the report was built from ({report_meta.get('sae_path')})."
        )
    recorded = report_meta.get("sae_weights")
    if recorded is None or recorded != sae_weights_fingerprint(cfg.sae):
        raise ValueError(
            f"the report in {cfg.report} was built from another SAE (weights {recorded}) than the one in {cfg.sae} "
            f"(weights {sae_weights_fingerprint(cfg.sae)}); pass the SAE it was built from "
            f"({report_meta.get('sae_path')}) or rebuild the report."
        )
    serve(cfg.report, live, host=cfg.host, port=cfg.port)
    return 0
