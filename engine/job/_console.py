"""What the console shows when a job ends: the audit's figures per cell, the
twins, stated versus used, the warnings, and where to look next."""

from __future__ import annotations

import numpy as np

from engine.audit import (format_alignment, format_effects, format_peers, format_protected,
                          format_stated, missing_line, note_lines)
from engine.outputs import ui_command


def _fixed(v, width: int) -> str:
    """A figure to three decimals, or "undef" (a statistic not defined for this cell)."""
    return f"{'undef':>{width}}" if v is None or not np.isfinite(v) else f"{v:{width}.3f}"


def format_summary(result) -> str:
    """What the console shows when a job ends."""
    if result.peers is not None:
        lines = format_peers(result.peers, result.pairs, result.level)
    else:
        lines = _lens_lines(result)
    sources = result.cells or result.peers or []
    twins = [c for c in sources if c.twins is not None]
    if twins:
        lines.append(f"counterfactual twins: share of decisions that flip when only the cue "
                     f"changes, and the mean change in p(positive) [{result.level:.0%} "
                     "intervals]:")
        for c in twins:
            lines += format_effects(c.model, c.condition, c.twins)
        lines.append(f"  per level: {result.run_dir}/cells/*/counterfactual.csv and report/")
    stated = [c for c in result.cells if c.stated is not None]
    if stated:
        lines.append("stated versus used: how often the reasons cite each cue against how much "
                     f"the decisions weigh it [{result.level:.0%} interval]:")
        for c in stated:
            lines += format_stated(c.model, c.condition, c.stated)
        lines.append(f"  per cue: {result.run_dir}/cells/*/stated_vs_used.csv and report/")
    lines += [f"warning: {w}" for w in result.warnings]
    lines.append(f"every case: {result.run_dir / 'view.html'} (lensaudit view "
                 f"{result.run_dir} --serve to serve it)")
    lines.append(f"MLflow: parent run {result.parent_run_id} in {result.tracking_uri}")
    lines.append(f"view it: {ui_command(result.tracking_uri)}")
    return "\n".join(lines)


def _lens_lines(result) -> list[str]:
    """The summary of an audit against the organisation's decisions."""
    audit = result.audit
    level = f"{audit.level:.0%}"
    any_soft = any(cell.soft is not None for cell in audit.cells)
    lines = [f"organisation: cross-validated accuracy {audit.org.cv_accuracy:.3f}, "
             f"AUC {audit.org.cv_auc:.3f}",
             f"alignment: cross-fitted cosine of the two policies [{level} interval]; "
             + ("soft: the same with the decision-maker's policy fitted to its probabilities; "
                if any_soft else "")
             + "r_cos: the paper's plain cosine (attenuated by estimation noise); acc, AUC, "
             "kappa: the answers against the organisation's; G: the Lens Model Equation's "
             "matching"]
    soft_head = f" {'soft [' + level + ']':26}" if any_soft else ""
    wm = max([34, *(len(cell.model) for cell in audit.cells)])
    wc = max([16, *(len(cell.condition) for cell in audit.cells)])
    header = f"{'model':{wm}} {'condition':{wc}} {'alignment [' + level + ']':26}{soft_head} " \
             f"{'r_cos':>7} {'p_perm':>7} {'acc':>6} {'AUC':>6} {'kappa':>6} {'G':>6} {'pos':>5}"
    lines += [header, "-" * len(header)]
    for cell in audit.cells:
        c = cell.comparison
        rc = "undef" if cell.r_cos_reason else f"{c.r_cos:+.3f}"
        soft = (f" {format_alignment(cell.soft) if cell.soft else '-':26}" if any_soft else "")
        pp = "undef" if not np.isfinite(c.p_perm) else f"{c.p_perm:.3f}"
        lines.append(f"{cell.model:{wm}} {cell.condition:{wc}} {format_alignment(c):26}{soft} "
                     f"{rc:>7} {pp:>7} {c.accuracy:6.3f} {c.auc_vs_org:6.3f} {c.kappa:6.3f} "
                     f"{_fixed(cell.lme.get('lme_G'), 6)} {c.positive_rate_dm:5.2f}")
        if cell.alignment_reason:
            lines.append(missing_line("alignment", c, cell.alignment_reason))
            if cell.soft is not None and not cell.soft_alignment_reason:
                lines.append(f"    the soft lens is defined: {format_alignment(cell.soft)}, read "
                             "from its probabilities of each answer")
        if cell.soft is not None and cell.soft_alignment_reason:
            lines.append(missing_line("soft alignment", cell.soft, cell.soft_alignment_reason))
        lines += note_lines(cell)
    protected = {k: t for k, t in audit.protected_tables.items() if not t.empty}
    if len(protected) <= 2:
        for (model, condition), table in protected.items():
            lines.append(format_protected(model, condition, table))
    elif protected:
        lines.append("share of |beta| on protected attributes (organisation -> decision-maker, "
                     "difference [interval]):")
        for (model, condition), t in protected.items():
            r = t.iloc[-1]
            if r.status:
                lines.append(f"  {model} x {condition}: {r.beta_org:.3f} -> {r.status}")
                continue
            lines.append(f"  {model} x {condition}: {r.beta_org:.3f} -> {r.beta_dm:.3f}, "
                         f"{r.beta_diff:+.3f} [{r.beta_diff_low:+.3f}, {r.beta_diff_high:+.3f}]")
        lines.append(f"  per-attribute tables: {result.run_dir}/cells/*/protected_attributes.csv "
                     "and report/")
    return lines
