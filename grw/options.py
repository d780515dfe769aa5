"""Settings as dataclasses, command lines made from them: one field, one ``--option`` with its help text.

A field declared with :func:`option` carries its help text in its metadata; :func:`add_options`
reads the field types with ``typing.get_type_hints`` and adds one argparse option per field,
:func:`from_args` builds the dataclass back and :func:`to_args` is its inverse, so a run in a
notebook and the same run under ``torchrun`` share one definition of every setting. A numeric field may carry
its range (``option(5, "…", at_least=3, at_most=64)``): :func:`check_fields` refuses a value outside it (and any
float that is not finite, and any value of another type) with one line naming the field, and the ``--help`` text states it.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from typing import Any, Literal

__all__ = ["add_options", "check_fields", "from_args", "option", "range_text", "run_defining", "to_args"]


def option(
    default: Any = dataclasses.MISSING, help: str = "", *, defines_run: bool = True, at_least: float | None = None,
    above: float | None = None, at_most: float | None = None, below: float | None = None,
) -> Any:
    """A dataclass field with ``help`` text; ``defines_run=False`` marks a setting a resumed run may change.

    ``at_least`` / ``above`` / ``at_most`` / ``below`` bound a numeric field (checked by :func:`check_fields`).
    """
    bounds = {"at_least": at_least, "above": above, "at_most": at_most, "below": below}
    return dataclasses.field(default=default, metadata={"help": help, "defines_run": defines_run,
                                                        "range": {k: v for k, v in bounds.items() if v is not None}})


def _condition(bounds: dict[str, float]) -> str:
    """``bounds`` as a condition: ``>= 1``, ``in [0, 1)``; empty when unbounded."""
    low = ("[", bounds["at_least"]) if "at_least" in bounds else ("(", bounds["above"]) if "above" in bounds else None
    high = ("]", bounds["at_most"]) if "at_most" in bounds else (")", bounds["below"]) if "below" in bounds else None
    if low and high:
        return f"in {low[0]}{low[1]:g}, {high[1]:g}{high[0]}"
    if low:
        return f"{'>=' if low[0] == '[' else '>'} {low[1]:g}"
    if high:
        return f"{'<=' if high[0] == ']' else '<'} {high[1]:g}"
    return ""


def range_text(bounds: dict[str, float], integer: bool) -> str:
    """``bounds`` in words: ``an integer >= 1``, ``a finite number in [0, 1)``."""
    return " ".join(filter(None, ("an integer" if integer else "a finite number", _condition(bounds))))


def check_fields(obj: Any) -> None:
    """Raise a ValueError naming the first field of the dataclass instance ``obj`` whose value is not of its declared
    type (``int``, ``float``, ``str``, ``bool``, ``Literal[...]``, ``X | None``) or lies outside its range, or a float
    that is not finite: ``"NAME must be RANGE, got VALUE"``. Settings read back from a file are checked the same way
    as those parsed from a command line, before anything is built from them."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        kind, optional = _base_type(hints[f.name])
        if value is None and optional:
            continue
        if typing.get_origin(kind) is Literal:
            if value not in typing.get_args(kind):
                raise ValueError(f"{f.name} must be one of {', '.join(map(repr, typing.get_args(kind)))}, got {value!r}")
            continue
        numeric = kind in (int, float)
        if kind is bool or isinstance(value, bool):
            fits = kind is bool and isinstance(value, bool)
        else:
            fits = isinstance(value, (int, float) if kind is float else kind) if isinstance(kind, type) else True
        if not fits:
            raise ValueError(f"{f.name} must be {'an integer' if kind is int else 'a number' if numeric else kind.__name__}, "
                             f"got {value!r} ({type(value).__name__})")
        if not numeric:
            continue
        bounds = f.metadata.get("range", {})
        inside = (math.isfinite(value) and value >= bounds.get("at_least", -math.inf) and value > bounds.get("above", -math.inf)
                  and value <= bounds.get("at_most", math.inf) and value < bounds.get("below", math.inf))
        if not inside:
            raise ValueError(f"{f.name} must be {range_text(bounds, kind is int)}, got {value!r}")


def run_defining(obj: Any) -> dict[str, Any]:
    """The fields of the dataclass instance ``obj`` that define a run (all but those declared ``defines_run=False``)."""
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.metadata.get("defines_run", True)}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _base_type(hint: Any) -> tuple[Any, bool]:
    """``(type, optional)`` of a field type: ``float | None`` → ``(float, True)``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"an option must have one type (or it | None), got {hint}")
        return args[0], True
    return hint, False


def _parse_optional(kind: type) -> Any:
    def parse(text: str) -> Any:
        return None if text.lower() == "none" else kind(text)

    parse.__name__ = kind.__name__  # argparse names the type in its error messages
    return parse


def add_options(parser: argparse.ArgumentParser, cls: type, title: str | None = None) -> None:
    """One ``--option`` per field of the dataclass ``cls``, help text from the field's metadata, defaults shown."""
    group = parser.add_argument_group(title or cls.__name__, (cls.__doc__ or "").split("\n")[0].replace("``", ""))
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind, optional = _base_type(hints[f.name])
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        default = argparse.SUPPRESS if required else f.default  # a required option has no default to show
        shown = "" if required else " (default: %(default)s)"
        bounds = f.metadata.get("range")
        limits = f" [{_condition(bounds)}]" if bounds else ""
        help_text = f.metadata.get("help", "") + limits + shown
        if kind is bool:
            group.add_argument(_flag(f.name), action=argparse.BooleanOptionalAction, default=default, help=help_text)
        elif typing.get_origin(kind) is Literal:
            group.add_argument(_flag(f.name), choices=typing.get_args(kind), default=default, required=required, help=help_text)
        elif kind in (int, float, str):
            parse = _parse_optional(kind) if optional else kind
            metavar = f"{kind.__name__.upper()}{' or none' if optional else ''}"
            group.add_argument(_flag(f.name), type=parse, default=default, required=required, help=help_text, metavar=metavar)
        else:
            raise TypeError(f"{cls.__name__}.{f.name}: no command-line form for the type {kind}")


def from_args(cls: type, args: argparse.Namespace | dict[str, Any]) -> Any:
    """The ``cls`` instance whose fields are in ``args`` (a parsed namespace or a dict); other entries are ignored."""
    values = vars(args) if isinstance(args, argparse.Namespace) else args
    return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls)})


def to_args(obj: Any) -> list[str]:
    """The command-line options that :func:`from_args` turns back into ``obj`` (a dataclass instance)."""
    args: list[str] = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, bool):
            args.append(_flag(f.name) if value else "--no-" + _flag(f.name)[2:])
        elif value is not None:
            args += [_flag(f.name), str(value)]
        elif f.default is not None:
            args += [_flag(f.name), "none"]
    return args
