"""Scenario probes: the MTA data set and the align-system input/output format.

A probe has text, 2 to 5 choices, and per choice a score 0-10 for each
decision-maker attribute (KDMA) it was labelled with.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from engine.errors import LensauditError

#: align-system file names use other words for two attributes.
ATTRIBUTE_ALIASES = {"continuing_care": "continuation_of_care",
                     "moral_desert": "moral_deservingness"}


@dataclass(frozen=True)
class Probe:
    """One decision point.

    Attributes:
      scenario_id, probe_id: ids from the source. The MTA set uses a probe id
        twice when it labels the same question for two attributes, so items
        are told apart by `item_id` (probe id and attributes).
      text: the scenario, the state and the question, as one passage.
      choices: the answer texts, in the source's order.
      scores: per choice, {attribute: score 0-10}.
      attributes: the attributes this probe measures (scored for every choice).
    """

    scenario_id: str
    probe_id: str
    text: str
    choices: tuple[str, ...]
    scores: tuple[dict, ...]
    attributes: tuple[str, ...]

    @property
    def item_id(self) -> str:
        return f"{self.probe_id}:{'+'.join(self.attributes)}"

    def score(self, attribute: str) -> tuple[float, ...]:
        return tuple(float(s[attribute]) for s in self.scores)


def mta_path() -> Path:
    return Path(str(resources.files("engine") / "data" / "mta_align" / "paper-dataset-1-12.json"))


def _attributes(scores: list[dict]) -> tuple[str, ...]:
    keys = set(scores[0]) if scores else set()
    for s in scores[1:]:
        keys &= set(s)
    return tuple(sorted(keys))


def _check(probe: Probe, source) -> Probe:
    if not 2 <= len(probe.choices) <= 26:
        raise LensauditError(f"{source}: probe {probe.probe_id} has {len(probe.choices)} choices")
    if len(probe.scores) != len(probe.choices):
        raise LensauditError(f"{source}: probe {probe.probe_id}: {len(probe.scores)} score sets "
                             f"for {len(probe.choices)} choices")
    return probe


def _read_json(path: Path):
    if not path.is_file():
        raise LensauditError(f"data file not found: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise LensauditError(f"{path}: not JSON ({exc.msg}, line {exc.lineno})") from None


def load_mta(path: str | Path | None = None) -> list[Probe]:
    """The MTA paper data set: a JSON list of [probe, per-choice scores] pairs."""
    path = Path(path) if path else mta_path()
    raw = _read_json(path)
    probes = []
    for i, item in enumerate(raw):
        try:
            meta, scores = item
            text = " ".join(t for t in (meta["scenario"], meta["state"], meta["probe"]) if t)
            probes.append(_check(Probe(meta["scenario_id"], meta["probe_id"], text,
                                       tuple(meta["choices"]), tuple(scores),
                                       _attributes(scores)), path))
        except (KeyError, TypeError, ValueError) as exc:
            raise LensauditError(f"{path}: item {i} is not [probe, scores] ({exc})") from None
    return probes


def _probe_id(action_id: str) -> str:
    return re.sub(r"\.action_\d+$", "", action_id)


def load_align_system(path: str | Path, attribute: str | None = None) -> list[Probe]:
    """An align-system input/output file ({input, label, output} items).

    The probe id is the choices' action id without its ".action_<k>" suffix;
    scores come from "label" (per choice) or else each choice's
    "kdma_association". `attribute` (default: from a NAACL24 split file name,
    e.g. oracle_fairness_training_input_output.json -> fairness) restricts the
    probe's measured attributes; items without scores load with none.
    """
    path = Path(path)
    raw = _read_json(path)
    if attribute is None:
        m = re.fullmatch(r"oracle_(.+)_training_input_output\.json", path.name)
        if m:
            attribute = ATTRIBUTE_ALIASES.get(m.group(1), m.group(1))
    probes = []
    for i, item in enumerate(raw):
        try:
            inp = item["input"]
            choices = inp["choices"]
            scores = item.get("label") or [c.get("kdma_association") or {} for c in choices]
            attrs = _attributes(scores)
            if attribute is not None:
                attrs = tuple(a for a in attrs if a == attribute)
                scores = [{attribute: s[attribute]} if attribute in s else {} for s in scores]
            probes.append(_check(Probe(
                inp["scenario_id"], _probe_id(choices[0]["action_id"]), inp["state"],
                tuple(c["unstructured"] for c in choices), tuple(scores), attrs), path))
        except (KeyError, TypeError, IndexError) as exc:
            raise LensauditError(f"{path}: item {i} is not an align-system "
                                 f"{{input, label}} item ({exc})") from None
    return probes


def probes_for(probes: list[Probe], attribute: str) -> list[Probe]:
    return [p for p in probes if attribute in p.attributes]
