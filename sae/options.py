"""Typed config dataclasses are the command line: one argparse option per field, one definition per option.

A field `d_sae: int` becomes `--d-sae`; its help is `field(metadata={"help": ...})`; its default is
the dataclass default (or a value from a JSON config file); a field with no default is a required
option. What each field type and metadata key means is in sae.schema. bool fields become
`--flag` / `--no-flag`, X | None fields take the text `none`, list fields take comma lists
(`--group-sizes 64,192`), and a nested config's fields become an argument group of their own.

Sweeps: with `sweep=True`, a scalar field takes a comma list (`--k 16,32,64`) and parses to a list of
values (sae.sweep expands and names them).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping
from typing import Any

from sae.schema import MISSING, FieldSpec, check_value, field_specs, sweep_values


def parse_scalar(text: str, spec: FieldSpec) -> Any:
    """Command-line text -> one value of the field's scalar kind (raises ValueError naming the option)."""
    comma_item = spec.is_list and not spec.metadata.get("repeat")
    if spec.kind is not str or comma_item:  # a text value keeps its spaces (`interp search token " def"`)
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
    """Command-line text -> the field's value (a list for comma-list fields)."""
    if spec.is_list and not spec.metadata.get("repeat"):
        if spec.optional and text.strip().lower() == "none":
            return None
        return [parse_scalar(item, spec) for item in text.split(",") if item.strip()]
    value = parse_scalar(text, spec)
    return spec.check(value) if spec.check else value


class DataclassOptions:
    """The options of one config dataclass on an argparse parser (or argument group).

    defaults: values that replace the dataclass defaults (e.g. from a JSON config file named by
    `source`). help: a field's help text where this command means something else by it than the
    dataclass says. skip: fields this command sets itself. sweep: every field parses to a list of
    values; scalar fields take comma lists (`--k 16,32`); bool and list fields take one value on the
    command line, and a sweep from `defaults` (a list of values for a scalar field, a list of lists
    for a list field).
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
        prefix: str = "",
    ):
        self.cls, self.sweep, self.prefix = cls, sweep, prefix
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
        self.nested: dict[str, DataclassOptions] = {}
        for spec in self.specs:
            given = (defaults or {}).get(spec.name, MISSING)
            if spec.nested is not None:
                container = parser.add_argument_group(spec.help or spec.name) if _is_parser(parser) else parser
                nested_defaults = {} if given is MISSING else given
                self.nested[spec.name] = DataclassOptions(
                    container, spec.nested, defaults=nested_defaults, source=source, prefix=f"{prefix}{spec.name}."
                )
                continue
            if given is not MISSING:
                default = sweep_values(given, spec, source) if sweep else check_value(given, spec, source)
            elif spec.default is MISSING:
                default = MISSING
            else:
                default = [spec.default] if sweep else spec.default
            self._defaults[spec.name] = default
            self._add(parser, spec, default)

    def _sweepable(self, spec: FieldSpec) -> bool:
        return self.sweep and not spec.is_list and spec.kind is not bool

    def _add(self, parser: Any, spec: FieldSpec, default: Any) -> None:
        help_text = spec.help + (" Comma list to sweep." if self._sweepable(spec) else "")
        if spec.choices is not None:
            listed = ", ".join(map(str, spec.choices))
            help_text += f" One of: {listed}." if help_text.endswith(".") else f"; one of: {listed}"
        kwargs: dict[str, Any] = {"help": help_text}
        if not spec.metadata.get("positional"):
            kwargs["dest"] = self.prefix + spec.name
        if default is MISSING:
            if not spec.metadata.get("positional"):
                kwargs["required"] = True
        elif spec.metadata.get("repeat"):
            kwargs["default"] = None  # argparse appends to a default list; values() substitutes the default
        else:
            kwargs["default"] = default
        if default not in (MISSING, None, [None], []):  # a field whose default is None says in its help what none means
            kwargs["help"] += f" (default: {_show(default, self.sweep)})"
        if spec.kind is bool and not spec.is_list and not spec.optional:
            action = parser.add_argument(spec.option, action=argparse.BooleanOptionalAction, **kwargs)
            action.field_spec = spec  # the config field behind the option (tests/test_cli_help.py walks them)
            return
        list_like = (spec.is_list and not spec.metadata.get("repeat")) or self._sweepable(spec)
        kwargs["metavar"] = spec.metadata.get("metavar") or spec.kind.__name__.upper()
        kwargs["metavar"] += "[,...]" if list_like else ""
        kwargs["type"] = _converter(spec, self._sweepable(spec))
        if spec.metadata.get("repeat"):
            kwargs["action"] = "append"
        if "const" in spec.metadata:
            kwargs.update(nargs="?", const=spec.metadata["const"])
        if spec.metadata.get("positional"):
            action = parser.add_argument(self.prefix + spec.name, **kwargs)
        else:
            action = parser.add_argument(spec.option, **kwargs)
        action.field_spec = spec

    def values(self, namespace: argparse.Namespace) -> dict[str, Any]:
        """Parsed values by field name (a nested config built whole); with sweep=True, each a list of
        sweep values."""
        out = {}
        for spec in self.specs:
            if spec.nested is not None:
                out[spec.name] = self.nested[spec.name].build(namespace)
                continue
            value = getattr(namespace, self.prefix + spec.name)
            if spec.metadata.get("repeat") and value is None:
                value = list(spec.default) if spec.default not in (MISSING, None) else spec.default
            given = value is not self._defaults[spec.name]
            out[spec.name] = [value] if self.sweep and given and not self._sweepable(spec) else value
        return out

    def build(self, namespace: argparse.Namespace, **fields: Any) -> Any:
        """The config the parsed arguments give, with `fields` (those skipped) set by the caller."""
        return self.cls(**self.values(namespace), **fields)


def _is_parser(parser: Any) -> bool:
    return isinstance(parser, argparse.ArgumentParser)


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


__all__ = ["DataclassOptions", "parse_scalar", "parse_text"]
