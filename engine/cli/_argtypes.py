"""argparse types that name the problem in their error (the CLI prints it in one line)."""

from __future__ import annotations

import argparse


def int_at_least(minimum: int):
    """argparse type: an integer >= minimum, named in the error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def positive_float(text: str) -> float:
    """argparse type: a finite float > 0."""
    value = _number(text)
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return value


def level(text: str) -> float:
    """argparse type: an interval level in (0, 1)."""
    if not 0 < _number(text) < 1:
        raise argparse.ArgumentTypeError(f"must lie in (0, 1), e.g. 0.95; got {text}")
    return _number(text)


def port_number(text: str) -> int:
    """A TCP port, 0 to 65535 (0: any free port)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a port number, not {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number in 0-65535, not {value}")
    return value
