"""What a field of a typed config dataclass is: its scalar type, choices, default and help, how the
command line spells it, and the checks that build a config from JSON (a typo or a wrong type is
refused by name, never passed on silently).

Field types: int, float, str, bool, Path, Literal[...] (choices), X | None and list[X] / tuple[X, ...];
a field whose type is itself a config dataclass nests that config (the command line renders its
fields as a group). Metadata keys, all optional:
    help      one sentence per field, shown by --help
    option    the flag when it differs from the field name (`hooks` -> "--hook")
    metavar   the placeholder of the value in --help
    repeat    a list field given as a repeated option (`--hook A --hook B`), not a comma list
    const     the value of the option given with no value (`--json` alone)
    check     text -> value, raising ValueError: a parse-time check the type cannot express
    positional  an argument without a flag

This module imports no torch and no argparse: configs import it, the command line renders with it.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

MISSING = dataclasses.MISSING
SCALARS = (int, float, str, bool, Path)


@dataclass(frozen=True)
class FieldSpec:
    """One config field. kind: the scalar type; optional: None is allowed; is_list: the value is a list of
    `kind`; choices: the allowed values of a Literal field; nested: the config class of a nested config."""

    name: str
    kind: type
    optional: bool
    is_list: bool
    choices: tuple[Any, ...] | None
    default: Any
    help: str
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    nested: type | None = None

    @property
    def option(self) -> str:
        return self.metadata.get("option") or "--" + self.name.replace("_", "-")

    @property
    def required(self) -> bool:
        return self.default is MISSING

    @property
    def check(self) -> Callable[[Any], Any] | None:
        return self.metadata.get("check")


def field_specs(cls: type) -> list[FieldSpec]:
    """One FieldSpec per field of the dataclass `cls`, in declaration order."""
    hints = typing.get_type_hints(cls)
    specs = []
    for f in dataclasses.fields(cls):
        where = f"{cls.__name__}.{f.name}"
        if f.default is not MISSING:
            default = f.default
        elif f.default_factory is not MISSING:
            default = f.default_factory()
        else:
            default = MISSING
        help_text = f.metadata.get("help", "")
        if dataclasses.is_dataclass(hints[f.name]):
            specs.append(
                FieldSpec(f.name, hints[f.name], False, False, None, default, help_text, f.metadata, hints[f.name])
            )
            continue
        kind, optional, is_list, choices = _unwrap(hints[f.name], where)
        specs.append(FieldSpec(f.name, kind, optional, is_list, choices, default, help_text, f.metadata))
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
    if hint not in SCALARS:
        raise TypeError(f"{where}: type {hint} cannot become a command-line option")
    return hint, optional, is_list, None


def check_choices(config: Any) -> None:
    """Raise ValueError naming the field when a Literal-typed field of a config dataclass holds a value
    outside its choices (the command line checks these as it parses; this is for the Python API)."""
    for spec in field_specs(type(config)):
        if spec.choices is not None and getattr(config, spec.name) not in spec.choices:
            raise ValueError(
                f"{type(config).__name__}.{spec.name} must be one of {list(spec.choices)}, "
                f"got {getattr(config, spec.name)!r}"
            )


def check_value(value: Any, spec: FieldSpec, where: str) -> Any:
    """Type-check a value from a JSON file; ints are accepted for float fields, text for Path fields.
    Returns the value."""
    if value is None:
        if spec.optional:
            return None
        raise ValueError(f"{where}: field {spec.name!r} may not be null")
    if spec.nested is not None:
        if not isinstance(value, Mapping):
            raise ValueError(f"{where}: field {spec.name!r} must be an object of {spec.nested.__name__} fields")
        return from_dict(spec.nested, value, f"{where}: {spec.name}")
    if spec.is_list:
        if not isinstance(value, list):
            raise ValueError(f"{where}: field {spec.name!r} must be a list of {spec.kind.__name__}, got {value!r}")
        return [_check_scalar(v, spec, where) for v in value]
    return _check_scalar(value, spec, where)


def _check_scalar(value: Any, spec: FieldSpec, where: str) -> Any:
    ok = isinstance(value, spec.kind) and not (spec.kind is int and isinstance(value, bool))
    if spec.kind is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if spec.kind is Path and isinstance(value, str):
        value, ok = Path(value), True
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


# --- fields several commands share, each defined once ---------------------------------------
def sae_dir_field() -> Any:
    """--sae DIR: an SAE folder; required."""
    return dataclasses.field(
        metadata={"option": "--sae", "metavar": "DIR", "help": "SAE folder (SAELens or sparsify layout)"}
    )


def device_field(default: str | None = None, *, unset: str = "cpu") -> Any:
    """--device: a torch device; `unset` says in words where things run when the default None stands."""
    return dataclasses.field(
        default=default,
        metadata={
            "option": "--device",
            "help": "torch device: auto (cuda when present, else cpu), cpu, cuda or cuda:N"
            + (f"; none: {unset}" if default is None else ""),
        },
    )


def seed_field(what: str) -> Any:
    """--seed: the seed of the randomness a command draws itself (`what` it seeds); 0 by default."""
    return dataclasses.field(default=0, metadata={"option": "--seed", "help": f"seed of {what}"})
