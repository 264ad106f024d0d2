"""Reading the files users hand to lensaudit (job specs, case-set files, data
tables), with every failure as one line naming the file."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from engine.errors import LensauditError


class SpecSection(BaseModel):
    """A section of a job spec: unknown keys are rejected (a typo is named,
    not ignored) and a validated section is never changed in place. Each stage
    owns its section (the audit's `statistics:`); `engine.spec` composes them."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def read_yaml_mapping(path: str | Path, what: str) -> dict:
    """The YAML mapping in `path`; `what` names the file in errors ("job file")."""
    path = Path(path)
    if not path.is_file():
        raise LensauditError(f"{what} not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise LensauditError(f"{path}: invalid YAML{where}: {problem}") from None
    if not isinstance(raw, dict):
        raise LensauditError(f"{path}: a {what} must be a YAML mapping")
    return raw


def first_error(err: ValidationError) -> tuple[str, str]:
    """The first pydantic error as (key path, problem in words)."""
    first = err.errors()[0]
    # A check across keys (a model validator) has no location; its message names the keys.
    loc = ".".join(str(p) for p in first["loc"])
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    elif first["type"] == "missing":
        msg = "required key is missing"
    else:
        msg = msg.removeprefix("Value error, ")
    more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return loc, msg + more


def validation_message(source: str, err: ValidationError) -> str:
    """A pydantic error as one line: the source, the key path, the problem."""
    loc, msg = first_error(err)
    return f"{source}: {loc}: {msg}" if loc else f"{source}: {msg}"


def read_table(path: str | Path, *, text: bool = False) -> pd.DataFrame:
    """A CSV or Parquet table with at least one row.

    `text`: read a CSV's cells as text (empty cells stay missing), so that ids
    like "007" and level codes like "1" arrive as written; the caller converts
    the columns it knows to be numbers.
    """
    path = Path(path)
    if not path.is_file():
        raise LensauditError(f"table not found: {path}")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            df = pd.read_parquet(path)
        else:
            df = pd.read_csv(path, dtype=str if text else None)
    except pd.errors.EmptyDataError:
        raise LensauditError(f"{path}: the table is empty") from None
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LensauditError(f"{path}: cannot read table ({reason})") from None
    if df.empty:
        raise LensauditError(f"{path}: the table has no rows")
    return df
