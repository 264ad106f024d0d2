"""The shipped case sets, as case-set files like any user's (issue 15, item 2).

German Credit and ECHR Article 6 each ship a case-set file and its CSV beside
their original data. `write_shipped_case_sets` writes both from the original
files once (the source readers `load_german_credit` and `load_echr_article6`
are the preparation: codes, the annotators' majority, exclusions); a job reads
only the case-set file, through the same loader as a user's.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from engine.datasets._casefile import load_case_file, write_case_file
from engine.datasets._echr import load_echr_article6
from engine.datasets._german_credit import load_german_credit
from engine.datasets._schema import CaseSet

#: name -> (case-set file under engine/data, source reader, provenance header)
SHIPPED = {
    "german_credit": ("german_credit/german_credit.yaml", load_german_credit,
                      "Statlog German Credit (UCI; CC BY 4.0): see PROVENANCE.txt.\n"
                      "Written from german.data by engine.datasets.write_shipped_case_sets:\n"
                      "case_id = 1-based line number; decision Good = class 1, Bad = class 2;\n"
                      "codes and their meanings from german.doc."),
    "echr_article6": ("echr_article6/echr_article6.yaml", load_echr_article6,
                      "ECtHR Article 6 cases with ADM factor annotations (CC0): see PROVENANCE.txt.\n"
                      "Written from Overall_vio_stats.json, Overall_non_stats.json and\n"
                      "art6_angelic_design.csv by engine.datasets.write_shipped_case_sets:\n"
                      "each factor by strict majority of the annotators who read the case,\n"
                      "the limb by plurality; cases no annotator read are left out."),
}


def _data_root() -> Path:
    return Path(str(resources.files("engine") / "data"))


def shipped_case_file(name: str) -> Path:
    """The case-set file of a shipped case set."""
    return _data_root() / SHIPPED[name][0]


def load_shipped(name: str, data: str | Path | None = None) -> CaseSet:
    """A shipped case set; `data`: a table in its format to read instead."""
    return load_case_file(shipped_case_file(name), data)


def write_shipped_case_sets(root: str | Path | None = None) -> list[Path]:
    """Write every shipped case-set file and its CSV under `root` (default:
    the package's data folder) from the original data files there."""
    root = Path(root) if root else _data_root()
    out = []
    for name, (rel, source, header) in SHIPPED.items():
        cases = source()
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        out.append(write_case_file(cases, path, header=header))
    return out
