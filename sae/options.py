"""Typed dataclasses are the command line: one argparse option per field, one definition per option.

A field `d_sae: int` becomes `--d-sae`; its help is `field(metadata={"help": ...})`; its default is
the dataclass default (or a value from a JSON config file). Supported field types: int, float, str,
bool (`--flag` / `--no-flag`), Literal[...] (choices), X | None (the text `none` gives None) and
list[X] (comma-separated: `--group-sizes 64,192`).

Sweeps: with `sweep=True`, a scalar field takes a comma list (`--k 16,32,64`) and parses to a list
of values; `expand_sweep` turns a dict of such lists into one dict per combination and
`sweep_names` names each (`k16`, `k32`, ...).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sae.files import write_text

_MISSING = dataclasses.MISSING


@dataclass(frozen=True)
class FieldSpec:
    """What one dataclass field means on the command line.

    kind: the scalar type (int, float, str, bool); choices: allowed values of a Literal field;
    optional: None is allowed; is_list: the value is a list of `kind`.
    """

    name: str
    kind: type
    optional: bool
    is_list: bool
    choices: tuple[Any, ...] | None
    default: Any
    help: str

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def required(self) -> bool:
        return self.default is _MISSING


def check_choices(config: Any) -> None:
    """Raise ValueError naming the field when a Literal-typed field of a config dataclass holds a value
    outside its choices (the CLI checks these too; this is for the Python API)."""
    for spec in field_specs(type(config)):
        if spec.choices is not None and getattr(config, spec.name) not in spec.choices:
            raise ValueError(
                f"{type(config).__name__}.{spec.name} must be one of {list(spec.choices)}, "
                f"got {getattr(config, spec.name)!r}"
            )


def field_specs(cls: type) -> list[FieldSpec]:
    """One FieldSpec per field of the dataclass `cls`, in declaration order.

    Help: `field(metadata={"help": ...})`."""
    hints = typing.get_type_hints(cls)
    specs = []
    for f in dataclasses.fields(cls):
        kind, optional, is_list, choices = _unwrap(hints[f.name], f"{cls.__name__}.{f.name}")
        if f.default is not _MISSING:
            default = f.default
        elif f.default_factory is not _MISSING:
            default = f.default_factory()
        else:
            default = _MISSING
        help_text = f.metadata.get("help", "")
        specs.append(FieldSpec(f.name, kind, optional, is_list, choices, default, help_text))
    return specs


def _unwrap(hint: Any, where: str) -> tuple[type, bool, bool, tuple[Any, ...] | None]:
    """Type hint -> (scalar kind, optional, is_list, choices)."""
    optional = False
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"{where}: only `X | None` unions can become options, got {hint}")
        optional, hint, origin = True, args[0], typing.get_origin(args[0])
    is_list = origin in (list, tuple)
    if is_list:
        hint = typing.get_args(hint)[0]
        origin = typing.get_origin(hint)
    if origin is Literal:
        choices = typing.get_args(hint)
        return type(choices[0]), optional, is_list, choices
    if hint not in (int, float, str, bool):
        raise TypeError(f"{where}: type {hint} cannot become a command-line option")
    return hint, optional, is_list, None


# --- values --------------------------------------------------------------------------------
def parse_scalar(text: str, spec: FieldSpec) -> Any:
    """Command-line text -> one value of the field's scalar kind (raises ValueError naming the option)."""
    text = text.strip()
    if spec.optional and text.lower() == "none":
        return None
    try:
        if spec.kind is bool:
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(text)
            value: Any = text.lower() in ("true", "1", "yes")
        else:
            value = spec.kind(text)
    except ValueError:
        raise ValueError(f"{spec.option}: {text!r} is not a valid {spec.kind.__name__}") from None
    if spec.choices is not None and value not in spec.choices:
        raise ValueError(f"{spec.option}: {value!r} is not one of {list(spec.choices)}")
    return value


def parse_text(text: str, spec: FieldSpec) -> Any:
    """Command-line text -> the field's value (a list for list fields: comma-separated items)."""
    if spec.is_list:
        if spec.optional and text.strip().lower() == "none":
            return None
        return [parse_scalar(item, spec) for item in text.split(",") if item.strip()]
    return parse_scalar(text, spec)


def check_value(value: Any, spec: FieldSpec, where: str) -> Any:
    """Type-check a value from a JSON file; ints are accepted for float fields. Returns the value."""
    if value is None:
        if spec.optional:
            return None
        raise ValueError(f"{where}: field {spec.name!r} may not be null")
    if spec.is_list:
        if not isinstance(value, list):
            raise ValueError(f"{where}: field {spec.name!r} must be a list of {spec.kind.__name__}, got {value!r}")
        return [_check_scalar(v, spec, where) for v in value]
    return _check_scalar(value, spec, where)


def _check_scalar(value: Any, spec: FieldSpec, where: str) -> Any:
    ok = isinstance(value, spec.kind) and not (spec.kind is int and isinstance(value, bool))
    if spec.kind is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise ValueError(f"{where}: field {spec.name!r} must be {spec.kind.__name__}, got {value!r}")
    if spec.choices is not None and value not in spec.choices:
        raise ValueError(f"{where}: field {spec.name!r} must be one of {list(spec.choices)}, got {value!r}")
    return value


def sweep_values(value: Any, spec: FieldSpec, where: str) -> list[Any]:
    """A JSON value of a sweepable field -> its list of sweep values.

    Scalar fields: a scalar is one value, a list is a sweep. List fields: a list is one value,
    a list of lists is a sweep."""
    is_sweep = isinstance(value, list) and (
        not spec.is_list or (bool(value) and all(isinstance(v, list) for v in value))
    )
    values = value if is_sweep else [value]
    if not values:
        raise ValueError(f"{where}: field {spec.name!r} has an empty sweep list")
    return [check_value(v, spec, where) for v in values]


# --- argparse ------------------------------------------------------------------------------
class DataclassOptions:
    """The options of one dataclass on an argparse parser (or argument group).

    defaults: values that replace the dataclass defaults (e.g. from a JSON config file named by
    `source`); a field with no default at all becomes a required option.
    help: a field's help text where this command means something else by it than the dataclass says.
    sweep: every field parses to a list of values. Scalar fields take comma lists (`--k 16,32`);
    bool and list fields take one value on the command line, and a sweep from `defaults`
    (a list of values for a scalar field, a list of lists for a list field).
    """

    def __init__(
        self,
        parser: argparse.ArgumentParser | argparse._ArgumentGroup,
        cls: type,
        *,
        defaults: Mapping[str, Any] | None = None,
        source: str = "defaults",
        sweep: bool = False,
        skip: tuple[str, ...] = (),
        help: Mapping[str, str] | None = None,
    ):
        self.cls, self.sweep = cls, sweep
        self.specs = [
            dataclasses.replace(s, help=help[s.name]) if help and s.name in help else s
            for s in field_specs(cls)
            if s.name not in skip
        ]
        known = {s.name for s in self.specs}
        unknown = sorted(set(defaults or {}) - known)
        if unknown:
            raise ValueError(f"{source}: unknown field(s) {unknown} for {cls.__name__}; valid fields: {sorted(known)}")
        self._defaults: dict[str, Any] = {}
        for spec in self.specs:
            if defaults and spec.name in defaults:
                raw = defaults[spec.name]
                default = sweep_values(raw, spec, source) if sweep else check_value(raw, spec, source)
            elif spec.default is _MISSING:
                default = _MISSING
            else:
                default = [spec.default] if sweep else spec.default
            self._defaults[spec.name] = default
            self._add(parser, spec, default)

    def _sweepable(self, spec: FieldSpec) -> bool:
        return self.sweep and not spec.is_list and spec.kind is not bool

    def _add(self, parser: Any, spec: FieldSpec, default: Any) -> None:
        help_text = spec.help + (" Comma list to sweep." if self._sweepable(spec) else "")
        if spec.choices is not None:
            help_text += f" One of: {', '.join(map(str, spec.choices))}."
        kwargs: dict[str, Any] = {"dest": spec.name, "help": help_text}
        if default is _MISSING:
            kwargs["required"] = True
        else:
            kwargs["default"] = default
            if default not in (None, [None]):  # a field whose default is None says in its help what none means
                kwargs["help"] += f" (default: {_show(default, self.sweep)})"
        if spec.kind is bool and not spec.is_list and not spec.optional:
            parser.add_argument(spec.option, action=argparse.BooleanOptionalAction, **kwargs)
            return
        kwargs["metavar"] = spec.kind.__name__.upper() + ("[,...]" if spec.is_list or self._sweepable(spec) else "")
        kwargs["type"] = _converter(spec, self._sweepable(spec))
        parser.add_argument(spec.option, **kwargs)

    def values(self, namespace: argparse.Namespace) -> dict[str, Any]:
        """Parsed values by field name; with sweep=True, each a list of sweep values."""
        out = {}
        for spec in self.specs:
            value = getattr(namespace, spec.name)
            given = value is not self._defaults[spec.name]
            out[spec.name] = [value] if self.sweep and given and not self._sweepable(spec) else value
        return out


def _show(value: Any, sweep: bool) -> str:
    if sweep and len(value) == 1:
        value = value[0]
    text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
    return text.replace("%", "%%")


def _converter(spec: FieldSpec, sweepable: bool):
    def convert(text: str) -> Any:
        try:
            if sweepable:
                return [parse_scalar(item, spec) for item in text.split(",")]
            return parse_text(text, spec)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    convert.__name__ = spec.kind.__name__  # argparse names the type in its error messages
    return convert


def peek_options(argv: list[str], *names: str) -> argparse.Namespace:
    """The values of a few options, read ahead of the full parse (whose options depend on them:
    `--arch` decides which config fields become options). Every other argument is left alone."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for name in names:
        parser.add_argument(name)
    known, _ = parser.parse_known_args(argv)
    return known


def add_passthrough_command(subparsers: argparse._SubParsersAction, name: str, help_text: str, run) -> None:
    """A subcommand whose own parser is built by `run(argv)` once `peek_options` has read what its
    options depend on. The subparser only hands over every argument: its option prefix is '+', so
    it claims no '-' option (`--help` included) for itself."""
    parser = subparsers.add_parser(name, help=help_text, prefix_chars="+", add_help=False)
    parser.add_argument("argv", nargs=argparse.REMAINDER)
    parser.set_defaults(run=lambda args: run(args.argv))


# --- options every command shares (both command lines) ---------------------------------------
STDOUT = "-"


def add_sae(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument("--sae", required=True, metavar="DIR", help="SAE folder (SAELens or sparsify layout)")


def add_device(parser: argparse.ArgumentParser | argparse._ArgumentGroup, *, default: str = "cpu") -> None:
    """--device; `default` says in words where things run without it."""
    parser.add_argument("--device", default=None, help=f"torch device, e.g. cpu or cuda:0 (default: {default})")


def json_target(value: str) -> str:
    """--json's argument, checked when parsed: a file path (not a folder) or STDOUT."""
    if value != STDOUT and Path(value).is_dir():
        raise argparse.ArgumentTypeError(f"{value} is a folder; give a file path such as {Path(value) / 'result.json'}")
    return value


def add_json(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument(
        "--json",
        nargs="?",
        const=STDOUT,
        type=json_target,
        metavar="FILE",
        help="the result as JSON: written to FILE, or printed in place of the text when no FILE is given",
    )


def emit_json(args: argparse.Namespace, result: Any) -> bool:
    """Write `result` where --json says; True when it went to standard output (print nothing else).
    NaN and infinity are written as JavaScript reads them (NaN, Infinity)."""
    if args.json is None:
        return False
    text = json.dumps(result, indent=1, ensure_ascii=False)
    if args.json == STDOUT:
        print(text)
        return True
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    write_text(args.json, text + "\n")
    print(f"wrote {args.json}")
    return False


def expand_sweep(values: Mapping[str, list[Any]]) -> list[dict[str, Any]]:
    """{"k": [16, 32], "d_sae": [4096]} -> [{"k": 16, "d_sae": 4096}, {"k": 32, "d_sae": 4096}].

    The cartesian product, first field varying slowest."""
    names = list(values)
    return [dict(zip(names, combo)) for combo in itertools.product(*(values[n] for n in names))]


def sweep_names(members: list[dict[str, Any]]) -> list[str]:
    """A short folder name per sweep member from the fields that vary: "k16", "d_sae2048-k16".

    A single member gets the name ""."""
    if len(members) <= 1:
        return [""] * len(members)
    varying = [n for n in members[0] if len({json.dumps(m[n]) for m in members}) > 1]
    return ["-".join(f"{n}{_name_part(m[n])}" for n in varying) for m in members]


def _name_part(value: Any) -> str:
    if isinstance(value, list):
        return "_".join(map(str, value))
    return str(value)


def from_dict(cls: type, values: Mapping[str, Any], where: str) -> Any:
    """Build dataclass `cls` from a JSON dict, refusing unknown fields and wrong types by name."""
    specs = {s.name: s for s in field_specs(cls)}
    unknown = sorted(set(values) - set(specs))
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown}; valid fields: {sorted(specs)}")
    missing = sorted(n for n, s in specs.items() if s.required and n not in values)
    if missing:
        raise ValueError(f"{where}: missing required field(s) {missing}")
    return cls(**{n: check_value(v, specs[n], where) for n, v in values.items()})


__all__ = [
    "DataclassOptions",
    "FieldSpec",
    "check_value",
    "expand_sweep",
    "field_specs",
    "from_dict",
    "parse_text",
    "sweep_names",
    "sweep_values",
]
