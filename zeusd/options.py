"""Command-line options written once: each option's flag, type, default, metavar and help in
one table row, from which both argparse and the frozen configuration class are built."""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Option:
    """One flag and the configuration field it fills."""

    field: str  # the configuration field; the flag is --field with dashes unless ``flag`` says
    type: Any  # the field's type
    default: Any
    help: str  # what it does; "(default ...)" is appended from ``shown``
    convert: Callable[[str], Any] | None = None  # text -> value; a ValueError says what is wrong
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    flag: str | None = None
    shown: str | None = ""  # the default as the docs write it; "": from ``default``; None: none

    @property
    def flag_name(self) -> str:
        return self.flag or "--" + self.field.replace("_", "-")

    @property
    def dest(self) -> str:
        """The argparse attribute (named after the flag, as released command lines had it)."""
        return self.flag_name[2:].replace("-", "_")

    @property
    def shown_default(self) -> str | None:
        if self.shown != "":
            return self.shown
        if self.default is None:
            return None
        if isinstance(self.default, float) and self.default.is_integer():
            return str(int(self.default))
        return str(self.default)

    @property
    def help_text(self) -> str:
        shown = self.shown_default
        return self.help if shown is None else f"{self.help} (default {shown})"


def config_class(options: tuple[Option, ...]):
    """Make the decorated class a frozen dataclass with one field per option, defaults from the
    table, followed by the fields the class declares itself."""
    def build(cls):
        own = dict(cls.__dict__.get("__annotations__", {}))
        cls.__annotations__ = {**{o.field: o.type for o in options}, **own}
        for option in options:
            setattr(cls, option.field, option.default)
        return dataclass(frozen=True)(cls)
    return build


def field_values(options: tuple[Option, ...], args: argparse.Namespace) -> dict[str, Any]:
    return {option.field: getattr(args, option.dest) for option in options}


def digits_value(text: str, max_digits: int) -> int | None:
    """The value of plain ASCII digits (no sign, `_` or other scripts), length-checked
    before int() so that no digit string is too long for it; None otherwise."""
    if not text.isascii() or not text.isdigit() or len(text.lstrip("0")) > max_digits:
        return None
    return int(text)


def whole_number(minimum: int, maximum: int):
    """A converter for a whole-number flag in ``minimum..maximum``."""
    def convert(text: str) -> int:
        value = digits_value(text, len(str(maximum)))
        if value is None or not minimum <= value <= maximum:
            raise ValueError(f"must be a whole number {minimum}-{maximum}, got '{text[:20]}'")
        return value
    return convert


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"must be a number, got '{text[:20]}'") from None
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"must be positive and finite, got {text[:20]}")
    return value


class OneLineParser(argparse.ArgumentParser):
    """Argument errors: one clear line on stderr and exit code 2."""

    def error(self, message: str):  # noqa: D401
        self.exit(2, f"{self.prog}: error: {message}\n")


def _argument_type(convert: Callable[[str], Any]):
    """argparse prints an ArgumentTypeError's own words (a ValueError only as 'invalid')."""
    def argument(text: str):
        try:
            return convert(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    argument.__name__ = getattr(convert, "__name__", "value")
    return argument


def add_options(parser: argparse.ArgumentParser, options: tuple[Option, ...],
                defaults: bool = True) -> None:
    """``defaults=False`` leaves flags not given unset (argparse.SUPPRESS): the `serve`
    subcommand then keeps a flag given before it (`zeusd --enable gpu-read serve`)."""
    for option in options:
        extra = {"type": _argument_type(option.convert)} if option.convert else {}
        parser.add_argument(option.flag_name, dest=option.dest, choices=option.choices,
                            metavar=option.metavar, help=option.help_text,
                            default=option.default if defaults else argparse.SUPPRESS, **extra)
