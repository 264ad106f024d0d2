"""A batch of cells against one reference: audited where the statistics run
(`StatisticsPlace`), then tabulated into an audit's collections. The job's
waves and imported decision-makers, and ALIGN's steered ADMs, go through here."""

from __future__ import annotations

from engine.audit._cells import audit_cell, policy_table, protected_table
from engine.audit._place import StatisticsPlace


def audit_cells(enc, y_org, dms: dict, st, reference, lme=None, *,
                place: StatisticsPlace | None = None, shared: tuple | None = None) -> list:
    """`audit_cell` of every (model, condition) -> decisions in `dms`, in that
    order, where `place` runs the statistics (`shared`: enc, y_org, reference
    and lme as `place.share` made them)."""
    waits = start_cells(enc, y_org, dms, st, reference, lme, place=place, shared=shared)
    return [wait() for wait in waits.values()]


def start_cells(enc, y_org, dms: dict, st, reference, lme=None, *,
                place: StatisticsPlace | None = None, shared: tuple | None = None) -> dict:
    """`audit_cells`, started in the order of `dms` (`StatisticsPlace.start`):
    (model, condition) -> a function that returns its `CellResult`."""
    place = place if place is not None else StatisticsPlace("cpu")
    s_enc, s_y, s_ref, s_lme = shared or (enc, y_org, reference, lme)
    waits = place.start([
        (audit_cell, (s_enc, s_y, dm), dict(model=model, condition=condition, stats=st,
                                            reference=s_ref, lme=s_lme))
        for (model, condition), dm in dms.items()])
    return dict(zip(dms, waits))


def tabulate(cell, enc, st, cells: list, tables: dict, protected: dict):
    """Add an audited cell, its policy table and its protected-attribute table
    to the job's collections. Returns the cell."""
    model, condition = cell.model, cell.condition
    cells.append(cell)
    cues = enc.cues
    tables[(model, condition)] = table = policy_table(
        enc.columns, enc.labels, cell, [c.protected for c in cues],
        [c.family for c in cues], level=st.level, interval=st.interval,
        status=enc.column_status())
    protected[(model, condition)] = protected_table(table, cell, level=st.level)
    return cell
