"""Case sets and cue schemas; datasets are looked up by name in `DATASETS`."""

from engine.datasets._german_credit import (
    GERMAN_CREDIT_SCHEMA,
    german_credit_path,
    load_german_credit,
)
from engine.datasets._casefile import binary_values, load_case_file
from engine.datasets._imports import IMPORTED, read_imported
from engine.datasets._echr import load_echr_article6
from engine.datasets._schema import (
    MIN_CASES,
    MIN_PER_DECISION,
    CaseSet,
    Cue,
    CueSchema,
    Encoding,
    check_sample_size,
    encode,
)

#: name -> loader(path or None) -> CaseSet
DATASETS = {"german_credit": load_german_credit, "echr_article6": load_echr_article6}

__all__ = [
    "DATASETS",
    "IMPORTED",
    "binary_values",
    "load_case_file",
    "read_imported",
    "MIN_CASES",
    "MIN_PER_DECISION",
    "GERMAN_CREDIT_SCHEMA",
    "CaseSet",
    "Cue",
    "CueSchema",
    "Encoding",
    "check_sample_size",
    "encode",
    "german_credit_path",
    "load_echr_article6",
    "load_german_credit",
]
