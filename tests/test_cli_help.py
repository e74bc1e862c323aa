"""`--help` of every command of both command lines answers without importing torch (or TransformerLens):
the parsers are built from torch-free configs, and each command imports the library when it runs. Every
option of every command is a field of a config, and the options every command shares are each defined once."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
# the options several commands share: each comes from one field factory, which spells the flag explicitly
SHARED = ("--model", "--sae", "--corpus", "--device", "--json", "--split", "--seed", "--corpus-seed", "--threads")

# Runs in a fresh interpreter: every command found by walking the parsers (plus the architecture-specific
# help of the commands whose options depend on --arch), each one's --help, and what it imported.
WALK = r"""
import argparse, contextlib, io, json, sys
from interp.app.cli.main import build_parser as interp_parser, main as interp_main
from sae.cli import build_parser as sae_parser, main as sae_main

options_shown = []  # the options of each parser whose help is printed, with the config field behind each
print_help = argparse.ArgumentParser.print_help
def recording_print_help(self, file=None):
    skipped = (argparse._HelpAction, argparse._SubParsersAction)
    options_shown.append([
        {"flags": a.option_strings or [a.dest], "field": getattr(a, "field_spec", None) is not None,
         "option": getattr(a, "field_spec", None) and a.field_spec.metadata.get("option")}
        for a in self._actions if not isinstance(a, skipped)
    ])
    return print_help(self, file)
argparse.ArgumentParser.print_help = recording_print_help

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
                   "heavy": heavy, "text": out.getvalue(), "options": options_shown[-1]})
print(json.dumps(report))
"""


def walk() -> list[dict]:
    result = subprocess.run([sys.executable, "-c", WALK], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_every_help_answers_without_torch():
    report = walk()
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


def test_every_option_of_every_command_is_a_config_field_and_shared_ones_are_defined_once():
    report = walk()
    shown = [(" ".join(r["argv"]) or r["cli"], o) for r in report for o in r["options"]]
    assert len(shown) > 200
    not_from_a_config = sorted({f"{command}: {o['flags']}" for command, o in shown if not o["field"]})
    assert not not_from_a_config, not_from_a_config
    flags = {flag for _, o in shown for flag in o["flags"]}
    assert set(SHARED) <= flags
    source = "\n".join(p.read_text() for package in ("interp", "sae") for p in (ROOT / package).rglob("*.py"))
    for flag in SHARED:
        users = [(command, o["option"]) for command, o in shown if flag in o["flags"]]
        assert all(option == flag for _, option in users), (flag, users)  # spelled by the factory, not a field name
        assert source.count(f'"option": "{flag}"') == 1, flag  # and the factory is the one place that spells it
