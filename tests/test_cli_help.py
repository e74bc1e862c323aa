"""`--help` of every command of both command lines answers without importing torch (or TransformerLens):
the parsers are built from torch-free configs, and each command imports the library when it runs."""

from __future__ import annotations

import json
import subprocess
import sys

# Runs in a fresh interpreter: every command found by walking the parsers (plus the architecture-specific
# help of the commands whose options depend on --arch), each one's --help, and what it imported.
WALK = r"""
import argparse, contextlib, io, json, sys
from interp.app.cli.main import build_parser as interp_parser, main as interp_main
from sae.cli import build_parser as sae_parser, main as sae_main

def commands(parser, prefix=()):
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield prefix
    for action in subs:
        for name, sub in action.choices.items():
            yield from commands(sub, prefix + (name,))

ARCH_DEPENDENT = {("train-sae",), ("train",), ("bench-synthetic",)}
runs = []
for main, parser in ((interp_main, interp_parser()), (sae_main, sae_parser())):
    runs.append((main, []))
    for command in commands(parser):
        runs.append((main, list(command)))
        if command in ARCH_DEPENDENT:
            runs += [(main, [*command, "--arch", arch]) for arch in ("topk", "jumprelu", "matryoshka")]
report = []
for main, argv in runs:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            main([*argv, "--help"])
        except SystemExit as stop:
            code = stop.code
    heavy = sorted(m for m in ("torch", "transformer_lens") if m in sys.modules)
    report.append({"cli": main.__module__, "argv": argv, "code": code, "usage": out.getvalue().startswith("usage:"),
                   "heavy": heavy, "text": out.getvalue()})
print(json.dumps(report))
"""


def test_every_help_answers_without_torch():
    result = subprocess.run([sys.executable, "-c", WALK], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    commands = {(r["cli"], " ".join(r["argv"])) for r in report}
    assert (
        len(report) >= 30 and ("interp.app.cli.main", "model train") in commands and ("sae.cli", "convert") in commands
    )
    for r in report:
        assert r["code"] == 0 and r["usage"], r
        assert r["heavy"] == [], f"{r['cli']} {' '.join(r['argv'])} --help imported {r['heavy']}"
    by_argv = {" ".join(r["argv"]): r["text"] for r in report if r["cli"] == "sae.cli"}
    assert "--k " in by_argv["train --arch topk"] and "--bandwidth" in by_argv["bench-synthetic --arch jumprelu"]
    assert "--prefixes" in by_argv["train --arch matryoshka"]  # the architecture's own options are rendered
