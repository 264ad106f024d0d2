"""Case sets and cue schemas; datasets are looked up by name in `DATASETS`."""

from engine.datasets._casefile import (binary_values, load_case_file, schema_entries,
                                       schema_from_entries, write_case_file)
from engine.datasets._diagnostics import CueFinding, check_cues, cue_warnings, diagnose_cues
from engine.datasets._echr import load_echr_article6
from engine.datasets._echr_human import final_verdicts_path
from engine.datasets._german_credit import (
    GERMAN_CREDIT_SCHEMA,
    german_credit_path,
    load_german_credit,
)
from engine.datasets._imports import IMPORTED, read_imported
from engine.datasets._schema import (
    ENCODINGS,
    MIN_CASES,
    MIN_PER_DECISION,
    TWIN_SEPARATOR,
    CaseSet,
    Cue,
    CueSchema,
    Encoding,
    base_case_id,
    check_sample_size,
    encode,
    encode_like,
)
from engine.datasets._shipped import (SHIPPED, load_shipped, shipped_case_file,
                                      write_shipped_case_sets)

#: name -> loader(data table or None) -> CaseSet: the shipped case-set files
DATASETS = {name: (lambda data=None, name=name: load_shipped(name, data)) for name in SHIPPED}

__all__ = [
    "DATASETS",
    "ENCODINGS",
    "IMPORTED",
    "binary_values",
    "final_verdicts_path",
    "load_case_file",
    "load_shipped",
    "schema_entries",
    "schema_from_entries",
    "shipped_case_file",
    "write_case_file",
    "write_shipped_case_sets",
    "read_imported",
    "MIN_CASES",
    "MIN_PER_DECISION",
    "GERMAN_CREDIT_SCHEMA",
    "CaseSet",
    "Cue",
    "CueSchema",
    "Encoding",
    "TWIN_SEPARATOR",
    "base_case_id",
    "check_sample_size",
    "check_cues",
    "cue_warnings",
    "diagnose_cues",
    "CueFinding",
    "encode_like",
    "encode",
    "german_credit_path",
    "load_echr_article6",
    "load_german_credit",
]
