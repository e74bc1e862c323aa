"""`interp steer` and `interp serve`: the model run with features changed, from the terminal and from
the report's live panels."""

from __future__ import annotations

import argparse
import itertools
import shutil
import textwrap

from interp.cli.options import add_model
from sae.options import add_device, add_json, add_sae, emit_json


def feature_value(text: str) -> tuple[int, float]:
    """ID=VALUE -> (id, value), for --feature."""
    feature, sep, value = text.partition("=")
    try:
        if not sep:
            raise ValueError
        return int(feature), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ID=VALUE (e.g. 1689=8.0), got {text!r}") from None


def register(subparsers: argparse._SubParsersAction) -> None:
    steer = subparsers.add_parser(
        "steer",
        help="continue a prompt with features clamped, beside the clean continuation",
        description="Splices the SAE into the model with its error term (so that, with nothing changed, the model "
        "is exactly the clean one), sets each --feature ID to VALUE at every position, and prints the clean "
        "and the steered continuations side by side. VALUE 0 ablates the feature.",
    )
    add_model(steer)
    add_sae(steer)
    steer.add_argument("--prompt", required=True, help="text to continue (after BOS)")
    steer.add_argument(
        "--feature",
        type=feature_value,
        action="append",
        required=True,
        metavar="ID=VALUE",
        help="clamp feature ID to VALUE (SAE activation units) at every position; repeat for several",
    )
    steer.add_argument("--tokens", type=int, default=40, help="tokens to generate (default 40)")
    steer.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default 0)")
    steer.add_argument("--seed", type=int, default=0, help="sampling seed, the same for both runs (default 0)")
    add_device(steer)
    add_json(steer)
    steer.set_defaults(run=run_steer)

    serve = subparsers.add_parser(
        "serve",
        help="serve a report with live panels: a prompt view and feature steering",
        description="Serves the report folder unchanged over HTTP and answers its live panels from the model and "
        "the SAE: /api/activations (the top features of each token of a text) and /api/generate (a continuation "
        "with features clamped).",
    )
    serve.add_argument("--report", required=True, metavar="DIR", help="report folder written by `interp report`")
    add_model(serve)
    add_sae(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    add_device(serve)
    serve.set_defaults(run=run_serve)


def run_steer(args: argparse.Namespace) -> int:
    from interp.intervene import check_edits, clamp, clean_text, steered_text
    from interp.pipeline import open_model_and_sae

    if args.tokens <= 0:
        raise ValueError(f"--tokens must be positive, got {args.tokens}.")
    if args.temperature < 0:
        raise ValueError(f"--temperature must be >= 0, got {args.temperature}.")
    opened = open_model_and_sae(args.model, args.sae, device=args.device)
    edits = [clamp(i, v) for i, v in args.feature]
    check_edits(edits, int(opened.sae.cfg.d_sae))
    options = dict(temperature=args.temperature, seed=args.seed)
    clean = clean_text(opened, args.prompt, args.tokens, **options)
    steered = steered_text(opened, args.prompt, edits, args.tokens, **options)
    result = {"prompt": args.prompt, "steer": {str(i): v for i, v in args.feature}, "clean": clean, "steered": steered}
    if emit_json(args, result):
        return 0
    what = ", ".join(f"feature {i} = {v:g}" for i, v in args.feature)
    print(side_by_side(("clean", clean), (f"steered ({what})", steered), prompt=args.prompt))
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


def run_serve(args: argparse.Namespace) -> int:
    from interp.pipeline import open_model_and_sae
    from interp.serve import LiveModel, check_report, serve

    if not 0 <= args.port < 65536:
        raise ValueError(f"--port must be in 0..65535, got {args.port}.")
    report_meta = check_report(args.report)
    opened = open_model_and_sae(args.model, args.sae, device=args.device)
    live = LiveModel(opened)
    if report_meta.get("d_sae") != live.d_sae:
        raise ValueError(
            f"the report in {args.report} shows {report_meta.get('d_sae')} features but the SAE in {args.sae} has "
            f"{live.d_sae}; pass the SAE the report was built from ({report_meta.get('sae_path')})."
        )
    serve(args.report, live, host=args.host, port=args.port)
    return 0
