"""Human verdict study on ECtHR Article 6 cases (CC0; Mumford et al., JURIX 2023).

Participants read a case's circumstances and predicted the verdict, then read
the relevant domestic legal framework and predicted again. Groups: legal
knowledge weak (computer-science students, "CS"), moderate (law students,
"Law") or strong (law students who took the ECHR module, "Domain"), each
without (Alpha) or with (Omega) the ADM factor model as a handout.

Each group becomes a decision-maker: its verdict on a case is the share of its
participants who predicted a violation after the second reading (the final
prediction), and its policy is fitted on the cases it judged.
"""

from __future__ import annotations

import functools

import re
from importlib import resources
from pathlib import Path

import pandas as pd

from engine.errors import LensauditError

KNOWLEDGE = {"CS": "weak", "Law": "moderate", "Domain": "strong"}
MODEL = {"Alpha": "without ADM", "Omega": "with ADM"}
STAGES = {"circumstances": "first", "domestic": "final"}
VERDICTS = {"violation": 1, "nonviolation": 0}


def human_dir() -> Path:
    return Path(str(resources.files("engine") / "data" / "echr_article6_human"))


def group_name(folder: str) -> str:
    """'Friday_Omega_Law' -> 'law-moderate_with-adm'."""
    m = re.fullmatch(r".*_(Alpha|Omega)_(CS|Law|Domain)", folder)
    if not m:
        raise LensauditError(f"participant folder '{folder}' is not <day>_<Alpha|Omega>_<CS|Law|Domain>")
    model, know = m.groups()
    return f"{KNOWLEDGE[know]}-knowledge_{'with' if model == 'Omega' else 'without'}-adm"


def _participant_session(filename: str) -> tuple[str, str]:
    stem = filename.rsplit("_processed", 1)[0]
    m = re.match(r"(.+?)[ _-]+session[ _]*(.+?)\s*$", stem, flags=re.IGNORECASE)
    if not m:
        raise LensauditError(f"{filename}: cannot read participant and session from the name")
    return m.group(1).strip().lower(), m.group(2).strip().lower().replace(" ", "_")


def _read_sheet(path: Path) -> pd.DataFrame:
    import openpyxl

    try:
        ws = openpyxl.load_workbook(path, read_only=True, data_only=True).active
        rows = {r[0]: r[1:] for r in ws.iter_rows(values_only=True) if r and r[0]}
    except Exception as exc:
        raise LensauditError(f"{path}: cannot read workbook ({exc})") from None
    for label in ("Case file", "Your verdict", "True Verdict"):
        if label not in rows:
            raise LensauditError(f"{path}: no row '{label}'")
    out = []
    for col, case in enumerate(rows["Case file"]):
        if not case:
            continue
        m = re.fullmatch(r"(\d{3}-\d+)_(circumstances|domestic)(?:\.html?)?", str(case).strip())
        if not m:
            raise LensauditError(f"{path}: column {col + 2}: case file '{case}' is not "
                                 "<hudoc id>_<circumstances|domestic>")
        verdict = str(rows["Your verdict"][col] or "").strip().lower()
        truth = str(rows["True Verdict"][col] or "").strip().lower()
        if verdict not in VERDICTS:  # listed, but left blank: not judged
            out.append({"case_id": m.group(1), "stage": STAGES[m.group(2)], "verdict": None,
                        "true_verdict": VERDICTS.get(truth)})
            continue
        if truth not in VERDICTS:
            raise LensauditError(f"{path}: case {m.group(1)}: true verdict '{truth}' unknown")
        out.append({"case_id": m.group(1), "stage": STAGES[m.group(2)],
                    "verdict": VERDICTS[verdict], "true_verdict": VERDICTS[truth]})
    return pd.DataFrame(out)


def load_human_verdicts(path: str | Path | None = None) -> pd.DataFrame:
    """Every prediction of the study, one row each (a fresh copy: reading the
    117 workbooks takes seconds, so a process reads them once).

    Returns:
      columns group, participant, session, case_id, stage (first / final),
      verdict (1 = violation), true_verdict. Cases listed in the study but
      left blank are not rows; every listed case id is in
      `attrs["study_cases"]` (169 in the shipped study).
    """
    root = Path(path) if path else human_dir()
    cached = _read_verdicts(str(root.resolve()))
    out = cached.copy()
    out.attrs = {k: (list(v) if isinstance(v, (list, tuple)) else v)
                 for k, v in cached.attrs.items()}
    return out


@functools.lru_cache(maxsize=4)
def _read_verdicts(root_text: str) -> pd.DataFrame:
    root = Path(root_text)
    processed = root / "Analysis" / "Processed"
    if not processed.is_dir():
        raise LensauditError(f"human study folder not found: {processed}")
    frames = []
    for folder in sorted(p for p in processed.iterdir() if p.is_dir()):
        group = group_name(folder.name)
        for f in sorted(folder.glob("*.xlsx")):
            participant, session = _participant_session(f.name)
            df = _read_sheet(f)
            if df.empty:
                continue
            df.insert(0, "session", session)
            df.insert(0, "participant", f"{folder.name}/{participant}")
            df.insert(0, "group", group)
            frames.append(df)
    allrows = pd.concat(frames, ignore_index=True)
    judged = allrows[allrows["verdict"].notna()].reset_index(drop=True)
    judged["verdict"] = judged["verdict"].astype(int)
    judged["true_verdict"] = judged["true_verdict"].astype(int)
    judged.attrs["study_cases"] = sorted(allrows["case_id"].unique())
    return judged


#: The study's final predictions as a decisions table, written once from the
#: workbooks by `write_final_verdicts` (PROVENANCE.txt says how); a job's
#: `dataset.human_study` imports it like any other decisions table.
FINAL_VERDICTS = "final_verdicts.csv"


def final_verdicts_path() -> Path:
    return human_dir() / FINAL_VERDICTS


def final_verdicts(verdicts: pd.DataFrame) -> pd.DataFrame:
    """One row per final prediction: group, participant, case_id, verdict (in words)."""
    final = verdicts[verdicts["stage"] == "final"]
    return pd.DataFrame({
        "group": final["group"].to_numpy(), "participant": final["participant"].to_numpy(),
        "case_id": final["case_id"].to_numpy(),
        "verdict": final["verdict"].map({1: "Violation", 0: "No violation"}).to_numpy()})


def write_final_verdicts(path: str | Path | None = None, source: str | Path | None = None) -> Path:
    """Write the final predictions of the study's workbooks as a CSV table."""
    path = Path(path) if path else final_verdicts_path()
    final_verdicts(load_human_verdicts(source)).to_csv(path, index=False)
    return path
