"""The viewer's data for an ALIGN run: one row per probe, one column per ADM
(backbone x method x target): its choice, whether that is the target-aligned
choice, and its reasoning; a probe's scenario and scored choices on expanding."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd


def _probe_html(p) -> str:
    """A probe's full text and its choices with their attribute scores."""
    choices = "".join(
        f"<li>{html.escape(text)} <span class='ci'>"
        + html.escape(", ".join(f"{a} {s:g}" for a, s in scores.items())) + "</span></li>"
        for text, scores in zip(p.choices, p.scores))
    return (f"<div class='probe'><p>{html.escape(p.text)}</p><ol start='0'>{choices}</ol>"
            f"<p class='ci'>measures: {html.escape(', '.join(p.attributes))}</p></div>")


def first_reasoning(rows: pd.DataFrame) -> dict[str, str | None]:
    """Per probe, the first non-empty reasoning of its rows, else None (never
    NaN: the page's JSON allows none, and pandas turns a group's None into NaN)."""
    out = {}
    for case_id, texts in rows.groupby("case_id")["reasoning"]:
        out[case_id] = next((t for t in texts if isinstance(t, str) and t), None)
    return out


def align_view_data(run_dir: Path, payload: dict, spec) -> dict:
    from engine.align.adm import aligned_choices
    from engine.align.design import load_probes
    from engine.align.metric import parse_target

    probes = {p.item_id: p for p in load_probes(spec)}
    ids = list(probes)
    columns = []
    for cell in payload["cells"]:
        path = run_dir / cell["artifacts"] / "decisions.parquet"
        if not path.is_file():
            continue
        rows = pd.read_parquet(path)
        rows = rows[rows["y"] >= 0]
        most = rows.groupby("case_id")["y"].agg(lambda s: int(s.value_counts().index[0]))
        said = first_reasoning(rows)
        _, _, tname = cell["condition"].partition(":")
        tgt = parse_target(tname) if tname and not tname.startswith("persona=") else None
        choice, aligned, reasoning = [], [], []
        for i in ids:
            p = probes[i]
            if i not in most.index:
                choice.append(None), aligned.append(None), reasoning.append(None)
                continue
            y = int(most[i])
            choice.append(f"{y}: {p.choices[y][:40]}")
            scored = tgt is not None and tgt.parts and any(a in p.attributes
                                                           for a in tgt.attributes)
            aligned.append(bool(y in aligned_choices(p, tgt)) if scored else None)
            reasoning.append(said.get(i))
        columns.append({"key": f"{cell['model']} | {cell['condition']}", "model": cell["model"],
                        "condition": cell["condition"], "choice": choice, "aligned": aligned,
                        "reasoning": reasoning, "y": [None] * len(ids), "p": [None] * len(ids),
                        "n": [0] * len(ids)})
    return {
        "kind": "alignment", "job": spec.name, "dataset": spec.dataset.name, "n": len(ids),
        "ids": ids,
        "cues": [{"name": "scenario", "phrase": "scenario", "kind": "", "protected": False},
                 {"name": "attributes", "phrase": "measures", "kind": "", "protected": False}],
        "values": {"scenario": [probes[i].text[:120] for i in ids],
                   "attributes": [", ".join(probes[i].attributes) for i in ids]},
        "reference": None, "labels": {"positive": "", "negative": ""}, "columns": columns,
        "twins": {}, "policies": None, "probes": [_probe_html(probes[i]) for i in ids],
    }


#: The viewer's reader of ALIGN runs (`engine.outputs.view.view_data`).
VIEW_READERS = {"alignment": align_view_data}
