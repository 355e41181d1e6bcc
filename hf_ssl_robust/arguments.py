"""An `argparse` parser from a config dataclass, without importing transformers.

The options are the ones `transformers.HfArgumentParser` makes from the same dataclass, so the
command line, its `--help` and its errors stay as they were (`tests/test_cli_fast.py` compares both
parsers option by option), but importing transformers alone took most of a second:

* `--name` and, for names with `_`, `--name-with-dashes`; the field's metadata (`help`,
  `choices`) goes to `add_argument`; help lines end in `(default: ...)`.
* `X | None` takes X; `list[X]` takes one or more values (`nargs="+"`).
* `bool` takes `--flag`, `--flag true|false|yes|no|1|0...`, and a field that defaults to True
  also gets `--no_flag` / `--no-flag`.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing

__all__ = ["config_parser", "parse_into", "string_to_bool"]

_TRUE, _FALSE = ("yes", "true", "t", "y", "1"), ("no", "false", "f", "n", "0")


def string_to_bool(value: str | bool) -> bool:
    """`true`/`false`, `yes`/`no`, `t`/`f`, `y`/`n`, `1`/`0` (any case) as a bool."""
    if isinstance(value, bool):
        return value
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise argparse.ArgumentTypeError(
        f"Truthy value expected: got {value} but expected one of yes/no, true/false, t/f, y/n, 1/0 (case insensitive).")


def config_parser(config_class: type, prog: str | None = None) -> argparse.ArgumentParser:
    """A parser with one option per init field of the dataclass `config_class` (module docstring)."""
    parser = argparse.ArgumentParser(prog=prog, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    hints = typing.get_type_hints(config_class)
    for f in dataclasses.fields(config_class):
        if f.init:
            _add_field(parser, f, hints[f.name])
    return parser


def parse_into(parser: argparse.ArgumentParser, config_class: type, argv: list[str]):
    """The config built from `argv` (the config's own checks run); an unknown option is a `ValueError`."""
    namespace, remaining = parser.parse_known_args(argv)
    names = {f.name for f in dataclasses.fields(config_class) if f.init}
    cfg = config_class(**{k: v for k, v in vars(namespace).items() if k in names})
    if remaining:
        from .suggestions import did_you_mean

        known = [o for action in parser._actions for o in action.option_strings]
        unknown = [a for a in remaining if a.startswith("-")] or remaining
        hint = did_you_mean(unknown[0].split("=")[0], known)
        raise ValueError(f"unknown option(s) {unknown}{hint}; `{parser.prog} --help` lists the options.")
    return cfg


def _add_field(parser: argparse.ArgumentParser, f: dataclasses.Field, kind) -> None:
    options = [f"--{f.name}"] + ([f"--{f.name.replace('_', '-')}"] if "_" in f.name else [])
    kwargs = dict(f.metadata)
    aliases = kwargs.pop("aliases", [])
    aliases = [aliases] if isinstance(aliases, str) else list(aliases)
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        args = typing.get_args(kind)
        if len(args) != 2 or type(None) not in args:
            raise TypeError(f"field {f.name!r}: only `X | None` unions can be options, got {kind}")
        if bool not in args:
            kind = args[0] if args[1] is type(None) else args[1]
    is_bool = kind is bool or kind == (bool | None)
    has_default = f.default is not dataclasses.MISSING
    bool_kwargs = dict(kwargs)
    if is_bool:
        kwargs["type"] = string_to_bool
        if kind is bool or (f.default is not None and has_default):
            kwargs.update(default=f.default if has_default else False, nargs="?", const=True)
    elif typing.get_origin(kind) is list:
        kwargs.update(type=typing.get_args(kind)[0], nargs="+")
        if f.default_factory is not dataclasses.MISSING:
            kwargs["default"] = f.default_factory()
        elif not has_default:
            kwargs["required"] = True
    else:
        kwargs["type"] = kind
        if has_default:
            kwargs["default"] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            kwargs["default"] = f.default_factory()
        else:
            kwargs["required"] = True
    parser.add_argument(*options, *aliases, **kwargs)
    if is_bool and f.default is True:
        parser.add_argument(f"--no_{f.name}", f"--no-{f.name.replace('_', '-')}", action="store_false", dest=f.name,
                            **{**bool_kwargs, "default": False})
