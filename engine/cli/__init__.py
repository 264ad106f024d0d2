"""The `lensaudit` command: a thin layer over the stages (`main`)."""

from engine.cli._fit import add_fit_parser
from engine.cli._main import build_parser, main

__all__ = ["add_fit_parser", "build_parser", "main"]
