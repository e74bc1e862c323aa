"""sae.config: dataclass fields become argparse options; config-file defaults; comma-list sweeps."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Literal

import pytest

from sae.command import json_target
from sae.options import DataclassOptions
from sae.schema import field_specs, from_dict, sweep_values
from sae.sweep import expand_sweep, sweep_names


@dataclass
class Example:
    width: int = field(metadata={"help": "Number of latents."})
    rate: float = field(default=0.5, metadata={"help": "A rate."})
    name: str = "plain"
    flag: bool = False
    limit: int | None = None
    sizes: list[int] = field(default_factory=lambda: [1, 2])
    mode: Literal["fast", "slow"] = "fast"


def parser_for(cls=Example, **kwargs) -> tuple[argparse.ArgumentParser, DataclassOptions]:
    parser = argparse.ArgumentParser(prog="test", exit_on_error=True)
    return parser, DataclassOptions(parser, cls, **kwargs)


def test_every_field_becomes_an_option_with_its_type():
    parser, opts = parser_for()
    args = parser.parse_args(
        [
            "--width",
            "64",
            "--rate",
            "0.25",
            "--name",
            "x",
            "--flag",
            "--limit",
            "7",
            "--sizes",
            "3,5,8",
            "--mode",
            "slow",
        ]
    )
    assert opts.values(args) == {
        "width": 64,
        "rate": 0.25,
        "name": "x",
        "flag": True,
        "limit": 7,
        "sizes": [3, 5, 8],
        "mode": "slow",
    }
    assert Example(**opts.values(args)).sizes == [3, 5, 8]


def test_defaults_come_from_the_dataclass_and_none_parses():
    parser, opts = parser_for()
    values = opts.values(parser.parse_args(["--width", "3", "--limit", "none", "--no-flag"]))
    assert values == {
        "width": 3,
        "rate": 0.5,
        "name": "plain",
        "flag": False,
        "limit": None,
        "sizes": [1, 2],
        "mode": "fast",
    }


def test_help_comes_from_field_metadata_and_shows_defaults(capsys):
    parser, _ = parser_for()
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    text = capsys.readouterr().out
    assert "--width" in text and "Number of latents." in text
    assert "A rate. (default: 0.5)" in text
    assert "--no-flag" in text and "fast, slow" in text


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "the following arguments are required: --width"),
        (["--width", "abc"], "--width: 'abc' is not a valid int"),
        (["--width", "2", "--mode", "medium"], "--mode: 'medium' is not one of ['fast', 'slow']"),
        (["--width", "2", "--rate", "none"], "--rate: 'none' is not a valid float"),
    ],
)
def test_bad_command_line_values_name_the_option(argv, message, capsys):
    parser, _ = parser_for()
    with pytest.raises(SystemExit):
        parser.parse_args(argv)
    assert message in capsys.readouterr().err


def test_file_defaults_override_dataclass_defaults_and_flags_override_both():
    parser, opts = parser_for(defaults={"width": 10, "rate": 2, "sizes": [4]}, source="cfg.json")
    assert opts.values(parser.parse_args([]))["width"] == 10  # no longer required
    values = opts.values(parser.parse_args(["--rate", "0.1"]))
    assert values["rate"] == 0.1 and values["sizes"] == [4] and values["width"] == 10


@pytest.mark.parametrize(
    "defaults, message",
    [
        ({"widht": 3}, "cfg.json: unknown field(s) ['widht'] for Example"),
        ({"width": "3"}, "cfg.json: field 'width' must be int"),
        ({"width": 3.5}, "cfg.json: field 'width' must be int"),
        ({"width": 3, "mode": "medium"}, "cfg.json: field 'mode' must be one of ['fast', 'slow']"),
        ({"width": 3, "rate": None}, "cfg.json: field 'rate' may not be null"),
    ],
)
def test_bad_file_defaults_name_the_file_and_field(defaults, message):
    with pytest.raises(ValueError) as err:
        parser_for(defaults=defaults, source="cfg.json")
    assert message in str(err.value)


def test_sweep_comma_lists_expand_to_every_combination():
    parser, opts = parser_for(sweep=True)
    values = opts.values(parser.parse_args(["--width", "64,128", "--rate", "0.1,0.2,0.3", "--flag", "--sizes", "4,5"]))
    assert values["width"] == [64, 128] and values["rate"] == [0.1, 0.2, 0.3]
    assert values["flag"] == [True] and values["sizes"] == [[4, 5]] and values["name"] == ["plain"]
    members = expand_sweep(values)
    assert len(members) == 6
    assert [(m["width"], m["rate"]) for m in members] == [
        (64, 0.1),
        (64, 0.2),
        (64, 0.3),
        (128, 0.1),
        (128, 0.2),
        (128, 0.3),
    ]
    assert all(m["sizes"] == [4, 5] and m["flag"] is True for m in members)
    assert sweep_names(members)[:2] == ["width64-rate0.1", "width64-rate0.2"]


def test_sweep_lists_from_a_file_and_list_fields():
    parser, opts = parser_for(sweep=True, defaults={"width": [8, 16], "sizes": [[1], [2, 3]], "flag": True})
    values = opts.values(parser.parse_args([]))
    assert values["width"] == [8, 16] and values["sizes"] == [[1], [2, 3]] and values["flag"] == [True]
    assert sweep_names(expand_sweep(values)) == [
        "width8-sizes1",
        "width8-sizes2_3",
        "width16-sizes1",
        "width16-sizes2_3",
    ]
    assert sweep_names([{"k": 1}]) == [""]  # a single SAE is not named


def test_sweep_values_of_json():
    specs = {s.name: s for s in field_specs(Example)}
    assert sweep_values(3, specs["width"], "f") == [3]
    assert sweep_values([3, 4], specs["width"], "f") == [3, 4]
    assert sweep_values([3, 4], specs["sizes"], "f") == [[3, 4]]
    assert sweep_values([[3], [4]], specs["sizes"], "f") == [[3], [4]]
    with pytest.raises(ValueError, match="empty sweep"):
        sweep_values([], specs["width"], "f")


def test_field_specs_read_types():
    specs = {s.name: s for s in field_specs(Example)}
    assert specs["limit"].optional and specs["limit"].kind is int
    assert specs["sizes"].is_list and specs["sizes"].default == [1, 2]
    assert specs["mode"].choices == ("fast", "slow")
    assert specs["width"].required and specs["width"].option == "--width"


def test_from_dict_refuses_unknown_and_missing_fields():
    assert from_dict(Example, {"width": 3, "rate": 1}, "f.json") == Example(width=3, rate=1.0)
    with pytest.raises(ValueError, match=r"f.json: unknown field\(s\) \['size'\]"):
        from_dict(Example, {"width": 3, "size": 1}, "f.json")
    with pytest.raises(ValueError, match=r"f.json: missing required field\(s\) \['width'\]"):
        from_dict(Example, {}, "f.json")


def test_real_architecture_config_parses_to_a_valid_config():
    from sae.config import TopKConfig

    parser, opts = parser_for(TopKConfig, sweep=True, skip=("d_in",))
    members = expand_sweep(opts.values(parser.parse_args(["--d-sae", "64", "--k", "4,8", "--aux-k", "none"])))
    configs = [TopKConfig.from_dict({"d_in": 16, **m}) for m in members]
    assert [(c.d_sae, c.k, c.aux_k) for c in configs] == [(64, 4, None), (64, 8, None)]


CONFIG_MODULES = (
    "sae.config",
    "sae.command",
    "interp.model.config",
    "interp.activations.config",
    "interp.interventions.config",
    "interp.features.config",
    "interp.features.analysis.config",
    "interp.features.labels.config",
    "interp.features.scorecard.config",
    "interp.app.config",
)


def test_every_option_of_every_config_has_help():
    """The configs are the command line: every field they render says what it is."""
    import dataclasses
    import importlib

    import sae.architectures as architectures

    configs = {
        value
        for name in CONFIG_MODULES
        for value in vars(importlib.import_module(name)).values()
        if isinstance(value, type) and dataclasses.is_dataclass(value) and value.__name__ != "DemoConfig"
    }  # DemoConfig: every step's settings, which `interp demo` builds from DemoOptions, never rendered
    configs |= {architectures.get_architecture(name).config_class for name in architectures.ARCHITECTURES}
    assert len(configs) > 30
    missing = [f"{cls.__name__}.{spec.name}" for cls in configs for spec in field_specs(cls) if not spec.help.strip()]
    assert not missing, missing


def test_process_options_are_checked_before_any_work(tmp_path, capsys):
    """--threads is validated by the entry point before the command runs: nothing is read or written."""
    from interp.app.cli.main import main as interp_main
    from sae.cli import main as sae_main

    out = tmp_path / "out"
    assert sae_main(["eval", "--acts", str(tmp_path / "none"), "--sae", str(tmp_path / "none"), "--threads", "0"]) == 2
    assert "--threads must be between 1 and this machine's" in capsys.readouterr().err
    args = ["capture", "--model", str(tmp_path / "none"), "--hook", "h", "--tokens", "8", "--out", str(out)]
    assert interp_main([*args, "--threads", "-1"]) == 2
    assert "got -1" in capsys.readouterr().err
    assert interp_main(["demo", "--out", str(out), "--threads", "100000"]) == 2  # once a crash in the tokenizer
    assert "got 100000" in capsys.readouterr().err
    assert not out.exists()


def test_help_never_says_default_none(capsys):
    """A field whose default is None says in its own help what none means; the renderer adds nothing."""
    from interp.app.cli.main import main as interp_main
    from sae.cli import main as sae_main

    for run, argv in (
        (interp_main, ["model", "train", "--help"]),
        (interp_main, ["analyze", "--help"]),
        (sae_main, ["train", "--arch", "matryoshka", "--help"]),
        (sae_main, ["bench-synthetic", "--arch", "topk", "--help"]),
    ):
        with pytest.raises(SystemExit):
            run(argv)
        text = " ".join(capsys.readouterr().out.split())
        assert "(default: None)" not in text, argv
        assert "(default: " in text  # the other defaults are still shown


def test_help_says_what_each_command_means_by_its_options(capsys):
    from sae.cli import main as sae_main

    def help_of(argv: list[str]) -> str:
        with pytest.raises(SystemExit):
            sae_main(argv)
        return " ".join(capsys.readouterr().out.split())

    bench = help_of(["bench-synthetic", "--help"])
    assert "Samples per optimizer step, each drawn fresh from the planted set." in bench  # no dataset there
    assert "Optimizer steps, each on a fresh batch of samples." in bench and "one pass over the dataset" not in bench
    assert "Shared latent factors behind the correlation" in bench
    assert "Smallest coefficient of an active feature (drawn uniformly up to --magnitude-max)" in bench
    assert "(--d-sae, --k, ...) depend on the architecture" in bench
    assert "(--d-sae, --k, ...) depend on the architecture" in help_of(["train", "--help"])
    assert "Tokens per optimizer step" in help_of(["train", "--arch", "topk", "--help"])  # sae train keeps its own


@dataclass
class Inner:
    depth: int = field(default=2, metadata={"help": "How deep."})


@dataclass(kw_only=True)
class Command:
    where: str = field(metadata={"positional": True, "help": "Where."})
    hooks: list[str] = field(metadata={"option": "--hook", "repeat": True, "help": "A hook; repeat."})
    out: str | None = field(
        default=None, metadata={"const": "-", "check": lambda v: v.upper(), "help": "Optional value."}
    )
    inner: Inner = field(default_factory=Inner, metadata={"help": "inner"})


def test_repeated_positional_optional_valued_and_nested_fields():
    parser, opts = parser_for(Command)
    cfg = opts.build(parser.parse_args(["here", "--hook", "a", "--hook", "b,c", "--out", "--depth", "5"]))
    assert cfg == Command(where="here", hooks=["a", "b,c"], out="-", inner=Inner(depth=5))  # const skips the check
    cfg = opts.build(parser.parse_args(["there", "--hook", "a", "--out", "file"]))
    assert cfg == Command(where="there", hooks=["a"], out="FILE", inner=Inner())  # a given value is checked
    assert opts.build(parser.parse_args(["x", "--hook", " spaced "])).hooks == [" spaced "]  # text keeps its spaces


def test_required_repeated_and_positional_fields_are_required(capsys):
    parser, _ = parser_for(Command)
    for argv in (["here"], ["--hook", "a"]):
        with pytest.raises(SystemExit):
            parser.parse_args(argv)
    assert "required" in capsys.readouterr().err


def test_a_check_that_refuses_names_the_option(capsys):
    @dataclass
    class Checked:
        json: str | None = field(default=None, metadata={"check": json_target, "help": "File."})

    parser, _ = parser_for(Checked)
    with pytest.raises(SystemExit):
        parser.parse_args(["--json", "."])
    assert ". is a folder; give a file path such as result.json" in capsys.readouterr().err
