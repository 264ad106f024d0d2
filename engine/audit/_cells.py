"""The audit: decisions + case set -> process-alignment statistics per cell."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import NamedTuple

import jax
import numpy as np
import pandas as pd

import kernels
from engine.audit._settings import StatisticsSpec
from engine.audit._stated import StatedUsed, stated_metrics
from engine.audit._twins import effect_metrics
from engine.datasets import CaseSet, Encoding
from engine.errors import LensauditError
from engine.records import cell_rows, per_case


@dataclass
class OrgPolicy:
    """The organisation's policy and its own cross-validated ceiling."""

    intercept: float
    beta: np.ndarray
    cv_accuracy: float
    cv_auc: float
    # The cross-validation itself (its out-of-fold probabilities serve CALM's
    # propensity correlation: `lme_reference` reuses them rather than refit).
    cv: kernels.CrossValidated | None = field(default=None, repr=False)


@dataclass
class CellResult:
    """One (model, condition) cell of the audit."""

    model: str
    condition: str
    n_cases: int
    comparison: kernels.LensComparison
    r_cos_reason: str | None = None  # why the plain r_cos is undefined, if it is
    warnings: list[str] = field(default_factory=list)
    # (change, low, high) of r_cos_cf from the model's baseline cell, paired
    # (`kernels.alignment_change`); None for a baseline cell or without one.
    change: tuple[float, float, float] | None = None
    # The soft lens: the same comparison with the decision-maker's policy fitted
    # to its probabilities of the positive answer. None where it has none (or
    # statistics.soft is off); `soft_reason` says which.
    soft: kernels.LensComparison | None = None
    soft_reason: str | None = None
    soft_change: tuple[float, float, float] | None = None  # as `change`, of the soft lens
    # Brunswik's Lens Model Equation with the organisation as the criterion
    # (`lens_model_metrics`) and CALM's secondary analyses (`calm_metrics`):
    # name -> value; empty where they were not computed.
    lme: dict[str, float] = field(default_factory=dict)
    # Counterfactual twins: per cue (and level), flip share and change in p
    # (`twin_effects`); None without twins.
    twins: pd.DataFrame | None = None
    # Stated versus used (`stated_vs_used`): None without reasons.
    stated: StatedUsed | None = None

    @property
    def alignment_reason(self) -> str | None:
        """Why the primary figure (r_cos_cf) or its interval is missing, or None."""
        c = self.comparison
        return self.r_cos_reason or c.r_cos_cf_reason

    @property
    def soft_alignment_reason(self) -> str | None:
        """Why r_cos_soft or its interval is missing, or None."""
        return self.soft_reason if self.soft is None else comparison_reason(self.soft)

    @property
    def alignment_note(self) -> str | None:
        """What the reader should know of a defined r_cos_cf (`estimate_note`)."""
        return None if self.alignment_reason else estimate_note(self.comparison)

    @property
    def soft_alignment_note(self) -> str | None:
        """`alignment_note` of the soft lens."""
        return None if self.soft is None or self.soft_alignment_reason \
            else estimate_note(self.soft)

    @property
    def soft_policy(self) -> kernels.LensComparison | None:
        """The soft comparison where its policy has weights (norm not ~0), else None."""
        return self.soft if self.soft is not None and zero_policy_reason(self.soft) is None \
            else None

    def alignment_tags(self) -> dict[str, str]:
        """The MLflow tags saying why an alignment figure is missing or what to
        know of a defined one (`compare` shows them in its `note` column)."""
        said = {"lensaudit.r_cos_undefined": self.r_cos_reason,
                "lensaudit.r_cos_cf_undefined": self.alignment_reason,
                "lensaudit.r_cos_soft_undefined": self.soft_alignment_reason,
                "lensaudit.r_cos_cf_note": self.alignment_note,
                "lensaudit.r_cos_soft_note": self.soft_alignment_note}
        return {tag: text for tag, text in said.items() if text}

    def metrics(self) -> dict[str, float]:
        c = self.comparison
        return {
            "r_cos_cf": c.r_cos_cf, "r_cos_cf_ci_low": c.r_cos_cf_ci.low,
            "r_cos_cf_ci_high": c.r_cos_cf_ci.high, "r_cos_cf_raw": c.r_cos_cf_raw,
            "r_cos_cf_bound_bias": c.r_cos_cf_bound_bias,
            "r_cos": c.r_cos, "r_cos_ci_low": c.r_cos_ci.low, "r_cos_ci_high": c.r_cos_ci.high,
            "p_perm": c.p_perm,
            "accuracy": c.accuracy, "auc_vs_org": c.auc_vs_org, "kappa": c.kappa,
            "propensity_r_vs_org_fit": c.propensity_r_vs_org_fit, "positive_rate": c.positive_rate_dm,
            "positive_rate_org": c.positive_rate_org, "n_cases": float(self.n_cases),
            "n_unconverged_fits": float(c.n_unconverged),
            **({} if self.change is None else dict(zip(
                ("alignment_change", "alignment_change_low", "alignment_change_high"),
                self.change))),
            **({} if self.soft is None else soft_metrics(self.soft)),
            **({} if self.soft_change is None else dict(zip(
                ("alignment_change_soft", "alignment_change_soft_low",
                 "alignment_change_soft_high"), self.soft_change))),
            **self.lme,
            **({} if self.twins is None else effect_metrics(self.twins)),
            **({} if self.stated is None else stated_metrics(self.stated)),
        }


@dataclass
class AuditResult:
    """One audit: the organisation's policy and every cell compared with it.

    The report (`engine.outputs.write_report`), the MLflow runs
    (`engine.outputs.save_lens_results`) and the console summary read this object
    and nothing else of the job; `compare` reads what they wrote. Made by
    `audit_result` from the audited cells.
    """

    org: OrgPolicy
    cells: list  # CellResult, the job's cells then its imported decision-makers'
    policy_tables: dict  # (model, condition) -> its weights with intervals (`policy_table`)
    protected_tables: dict  # (model, condition) -> protected-attribute shares
    changes: list  # between a model's conditions (`condition_changes`)
    summary: pd.DataFrame  # one row per cell (`summary_table`)
    level: float = 0.95
    seed: int = 0  # the statistics' seed (the report's cross-cell resamples)


def summary_table(cells) -> pd.DataFrame:
    """One row per cell: its metrics (`CellResult.metrics`) and notes."""
    rows = []
    for cell in cells:
        m = cell.metrics()
        rows.append({"model": cell.model, "condition": cell.condition, **m,
                     "note": cell.alignment_reason or cell.alignment_note or "",
                     "soft_note": cell.soft_alignment_reason or cell.soft_alignment_note or ""})
    return pd.DataFrame(rows)


def audit_result(org: OrgPolicy, cells: list, policy_tables: dict, protected_tables: dict,
                 changes: list, *, level: float, seed: int) -> AuditResult:
    """The audit's result from its audited cells (the changes between
    conditions set on them already, `add_condition_changes`), with the
    summary table made of them."""
    return AuditResult(org, cells, policy_tables, protected_tables, changes,
                       summary_table(cells), level, seed)


def comparison_reason(c: kernels.LensComparison) -> str | None:
    """Why a comparison's alignment (r_cos_cf) or its interval is missing, or None."""
    return kernels.cosine_undefined_reason(c.beta_org, c.beta_dm) or c.r_cos_cf_reason


def soft_metrics(s: kernels.LensComparison) -> dict[str, float]:
    """The soft lens's figures, named as the hard ones with `_soft`."""
    return {"r_cos_soft": s.r_cos_cf, "r_cos_soft_ci_low": s.r_cos_cf_ci.low,
            "r_cos_soft_ci_high": s.r_cos_cf_ci.high, "r_cos_soft_raw": s.r_cos_cf_raw,
            "r_cos_soft_bound_bias": s.r_cos_cf_bound_bias,
            "r_cos_soft_plain": s.r_cos, "p_perm_soft": s.p_perm}


def interval_method(interval: str) -> str:
    # BCa needs a jackknife per statistic, which only r_cos has (see compare_policies).
    return "percentile" if interval == "bca" else interval


#: How the soft lens fits a policy to probabilities: least squares on their
#: log-odds. Measured beside the ridge-logistic fit to fractional targets on the
#: calibration grid (benchmarks/README.md, "soft lens"): equal where the
#: probabilities are moderate; where a model is nearly sure of one answer in
#: every case (the case the soft lens exists for) the logistic curve's slope
#: vanishes there, and its estimate varied more (bias -0.05 to +0.02 against
#: -0.003 to +0.009) with intervals 40% wider; least squares covered 0.92-0.96.
SOFT_LOSS = "logit_ls"

#: What a column's status means, in the tables and the console.
STATUS_TEXT = {"absent": "absent: no case has this level",
               "constant": "constant: every case has the same value"}
WEIGHT_COLUMNS = ("beta_org", "beta_org_low", "beta_org_high", "beta_dm", "beta_dm_low",
                  "beta_dm_high", "beta_diff", "beta_diff_low", "beta_diff_high")


def policy_table(columns: list[str], labels: list[str], cell: CellResult,
                 protected: list[bool], families: list[str], *, level: float = 0.95,
                 interval: str = "basic", status: list[str] | None = None) -> pd.DataFrame:
    """Per-column weights of the organisation and the decision-maker, with intervals.

    `beta_diff` = decision-maker minus organisation, with a paired bootstrap
    interval (both refitted on the same resamples). `beta_soft` is the
    decision-maker's soft policy (fitted to its probabilities; NaN without one). `status` (from
    `Encoding.column_status`) marks columns whose weight is 0 by construction
    (a level no case has, a constant column): their weights are NaN, not a
    measured 0, and the `status` column says why.
    """
    c = cell.comparison
    diff = kernels.bootstrap_interval(c.beta_dm - c.beta_org, c.boot_beta_dm - c.boot_beta_org,
                                      level=level, method=interval_method(interval))
    table = pd.DataFrame({
        "column": columns, "label": labels, "family": families, "protected": protected,
        "beta_org": c.beta_org, "beta_org_low": c.beta_org_ci.low, "beta_org_high": c.beta_org_ci.high,
        "beta_dm": c.beta_dm, "beta_dm_low": c.beta_dm_ci.low, "beta_dm_high": c.beta_dm_ci.high,
        "beta_diff": c.beta_dm - c.beta_org, "beta_diff_low": np.asarray(diff.low),
        "beta_diff_high": np.asarray(diff.high),
    })
    soft = cell.soft_policy
    if soft is not None:
        table["beta_soft"], table["beta_soft_low"], table["beta_soft_high"] = (
            soft.beta_dm, soft.beta_dm_ci.low, soft.beta_dm_ci.high)
    else:
        table[list(SOFT_COLUMNS)] = np.nan
    status = list(status) if status is not None else [""] * len(columns)
    table["status"] = [STATUS_TEXT.get(s, s) for s in status]
    table.loc[table["status"] != "", list(WEIGHT_COLUMNS + SOFT_COLUMNS)] = np.nan
    if zero_policy_reason(c) is not None:
        # A policy of norm ~0 has no weights to report, only a fit's rounding.
        table[list(DM_COLUMNS)] = np.nan
    return table


#: The decision-maker's soft policy (fitted to its probabilities) in a weight table.
SOFT_COLUMNS = ("beta_soft", "beta_soft_low", "beta_soft_high")
#: The decision-maker's side of a weight table (undefined when its policy is ~0).
DM_COLUMNS = ("beta_dm", "beta_dm_low", "beta_dm_high", "beta_diff", "beta_diff_low",
              "beta_diff_high")


def format_estimate(value: float, low: float, high: float) -> str:
    """An estimate as printed: value [low, high], or what is missing."""
    if not np.isfinite(value):
        return "undefined"
    if not np.isfinite(low):
        return f"{value:+.3f} [no interval]"
    return f"{value:+.3f} [{low:+.3f}, {high:+.3f}]"


def format_alignment(c) -> str:
    """The primary figure as printed: cross-fitted cosine [interval]."""
    return format_estimate(c.r_cos_cf, c.r_cos_cf_ci.low, c.r_cos_cf_ci.high)


def missing_line(name: str, c, reason: str) -> str:
    """The line under a cell's summary line saying why its figure (`name`, of
    comparison `c`) or only its interval is missing."""
    what = "undefined" if not np.isfinite(c.r_cos_cf) else "has no interval"
    return f"    {name} {what}: {reason}"


def note_lines(cell: "CellResult") -> list[str]:
    """The lines under a cell's summary line with what to know of its defined
    alignment figures (`estimate_note`), hard lens then soft."""
    return [f"    {name}: {note}" for name, note in (("alignment", cell.alignment_note),
                                                  ("soft alignment", cell.soft_alignment_note))
            if note]


#: From this shortfall on (the calibration's bias target), a cell whose interval
#: reaches +-1 says how far short of it the estimate would read there.
BOUND_NOTE_FROM = 0.03


def bound_note(c) -> str | None:
    """What a defined estimate whose interval reaches +1 (or -1) would read
    were the population cosine exactly that, or None.

    The cross-fitted cosine is clipped to [-1, 1], so at a population cosine
    of 1 it can only read short of it, the more so the weaker the signal
    (the calibration grid: 0.06 short at n = 600, 63 columns, |beta| = 0.7).
    Where the interval cannot rule the bound out, the reader should know what
    the estimate would show at it; the figure is the cell's own simulation
    world's (`kernels.CrossFitted.bound_bias`).
    """
    b = c.r_cos_cf_bound_bias
    if not (np.isfinite(c.r_cos_cf) and np.isfinite(b)) or abs(b) < BOUND_NOTE_FROM:
        return None
    bound = 1.0 if c.r_cos_cf >= 0 else -1.0
    edge = c.r_cos_cf_ci.high if bound > 0 else c.r_cos_cf_ci.low
    if not (np.isfinite(edge) and abs(edge - bound) < 1e-9):
        return None
    same = "the same" if bound > 0 else "opposite"
    return (f"the interval reaches {bound:+.0f}; were the two policies {same} (a cosine of "
            f"{bound:+.0f}), this estimate, bounded there, would read {abs(b):.3f} short of it "
            "on average at this signal (its simulation world)")


#: An interval holding both of these cannot tell two policies that weigh the
#: cues alike from two that weigh them against each other.
WIDE_NOTE_SPAN = (-0.5, 0.5)


def wide_note(c) -> str | None:
    """What a defined estimate whose interval holds both -0.5 and +0.5 says:
    little. At few cases per column the cross-fitted cosine can read +-1
    (clipped) with an interval over nearly all of [-1, 1]; the figure alone
    would read as perfect agreement or opposition. None otherwise."""
    low, high = c.r_cos_cf_ci.low, c.r_cos_cf_ci.high
    if not (np.isfinite(c.r_cos_cf) and np.isfinite(low) and np.isfinite(high)):
        return None
    if not (low <= WIDE_NOTE_SPAN[0] and WIDE_NOTE_SPAN[1] <= high):
        return None
    # Worded for any reference (the organisation, or in ALIGN the baseline ADM).
    return (f"the interval runs from {low:+.3f} to {high:+.3f}: these data cannot tell two "
            f"policies that weigh the cues alike (a cosine of {WIDE_NOTE_SPAN[1]:+.1f}) from two "
            f"that weigh them against each other ({WIDE_NOTE_SPAN[0]:+.1f}), so the estimate's "
            "value says little")


def estimate_note(c) -> str | None:
    """The note a defined alignment estimate gets: that its interval is too
    wide to say anything (`wide_note`), else what it would read at a bound its
    interval reaches (`bound_note`), else None."""
    return wide_note(c) or bound_note(c)


def policy_undefined_reason(beta) -> str | None:
    """Why a policy's weights are undefined (a vector of norm ~0), or None."""
    return kernels.cosine_undefined_reason(np.ones(1), beta)


def zero_policy_reason(c: kernels.LensComparison) -> str | None:
    """Why the decision-maker's weights are undefined (a policy of norm ~0), or None."""
    return policy_undefined_reason(c.beta_dm)


#: The protected share's interval, whatever `statistics.interval` says. Measured
#: on the calibration grid (benchmarks/README.md, "protected share"): the share
#: of |beta| is a ratio of absolute values, biased by the noise in small weights,
#: and the bootstrap's own bias is larger than the estimate's (El Karoui and
#: Purdom 2018), so the basic interval, which subtracts it, covered 0.77 to
#: 0.945 at n = 1,000; the percentile interval covered 0.95 at the median
#: (0.61 to 1.00, depending on how many of the protected weights are small).
SHARE_INTERVAL = "percentile"


def protected_share(beta, boot, mask, *,
                    level: float) -> tuple[float, np.ndarray, kernels.Interval]:
    """Share of sum |beta| on the `mask` columns: (estimate, `[B]` replicates from
    the `[B, d]` refits `boot`, percentile interval in [0, 1] holding the estimate)."""
    idx = np.asarray(mask).astype(int)
    obs = float(kernels.family_shares(beta, idx, 2)[1])
    reps = np.asarray(kernels.family_shares(boot, idx, 2)[:, 1])
    ci = kernels.bootstrap_interval(obs, reps, level=level, method=SHARE_INTERVAL)
    return obs, reps, kernels.holding(obs, ci, 0.0, 1.0)


def protected_table(table: pd.DataFrame, cell: CellResult, *, level: float = 0.95) -> pd.DataFrame:
    """The protected-attribute rows of `policy_table`, plus one summary row.

    The summary row ("share of |beta| on protected") gives, for each side, the
    share of sum |beta| that the protected columns carry, with a percentile
    bootstrap interval (`SHARE_INTERVAL`); `beta_diff` there is the change in
    that share. Every interval holds its estimate. Empty when the schema marks
    nothing protected.
    """
    mask = table["protected"].to_numpy(bool)
    if not mask.any():
        return table.iloc[:0]
    c = cell.comparison

    def share(beta, boot):
        return protected_share(beta, boot, mask, level=level)

    so, so_reps, so_ci = share(c.beta_org, c.boot_beta_org)
    sd, sd_reps, sd_ci = share(c.beta_dm, c.boot_beta_dm)
    # Held like each side's: the replicates' shares are biased away from the
    # estimates' (noise inflates the small weights), so the percentile interval
    # of the change can miss the change itself (the bundled model's audit did).
    d_ci = kernels.holding(sd - so, kernels.bootstrap_interval(
        sd - so, sd_reps - so_reps, level=level, method=SHARE_INTERVAL), -1.0, 1.0)
    why = zero_policy_reason(c)
    summary = pd.DataFrame([{
        "column": "(all protected)", "label": "share of |beta| on protected", "family": "",
        "protected": True, "beta_org": float(so), "beta_org_low": float(so_ci.low),
        "beta_org_high": float(so_ci.high), "beta_dm": float(sd), "beta_dm_low": float(sd_ci.low),
        "beta_dm_high": float(sd_ci.high), "beta_diff": float(sd - so),
        "beta_diff_low": float(d_ci.low), "beta_diff_high": float(d_ci.high), "status": ""}])
    soft = cell.soft_policy
    if soft is not None:
        ss, _, ss_ci = share(soft.beta_dm, soft.boot_beta_dm)
        summary["beta_soft"], summary["beta_soft_low"], summary["beta_soft_high"] = (
            float(ss), float(ss_ci.low), float(ss_ci.high))
    else:
        summary[list(SOFT_COLUMNS)] = np.nan
    if why is not None:
        # The share of a vector of norm ~0 is a ratio of rounding errors.
        summary[list(DM_COLUMNS)] = np.nan
        summary["status"] = f"undefined: {why}"
    return pd.concat([table[mask], summary], ignore_index=True)


def format_protected(model: str, condition: str, table: pd.DataFrame) -> str:
    """The protected-attribute table as text lines (weights with intervals)."""
    if table.empty:
        return ""
    lines = [f"protected attributes, {model} x {condition} "
             "(weight [interval]; decision-maker minus organisation):"]
    for r in table.itertuples():
        soft = getattr(r, "beta_soft", np.nan)
        soft = (f"soft {soft:+.3f} [{r.beta_soft_low:+.3f}, {r.beta_soft_high:+.3f}]"
                if np.isfinite(soft) else "")
        if getattr(r, "status", ""):
            lines.append(f"  {r.label[:44]:44} {r.status}" + (f"; {soft}" if soft else ""))
            continue
        dm = (f"dm {r.beta_dm:+.3f} [{r.beta_dm_low:+.3f}, {r.beta_dm_high:+.3f}]  "
              f"diff {r.beta_diff:+.3f} [{r.beta_diff_low:+.3f}, {r.beta_diff_high:+.3f}]"
              if np.isfinite(r.beta_dm) else "dm undefined (its policy vector is ~0)")
        dm += f"  {soft}" if soft else ""
        lines.append(f"  {r.label[:44]:44} org {r.beta_org:+.3f} [{r.beta_org_low:+.3f}, "
                     f"{r.beta_org_high:+.3f}]  {dm}")
    return "\n".join(lines)


class CellDecisions(NamedTuple):
    """One cell's decisions per case, in case-set order, each `[n]`."""

    y: np.ndarray  # mean over the case's samples (or a group's members)
    p: np.ndarray  # probability of the positive decision (y where there is none)
    trials: np.ndarray  # how many decisions y is the mean of
    has_probability: bool = False  # p is the backend's probability for every case


def decisions_for_cell(decisions: pd.DataFrame, cases: CaseSet, model: str,
                       condition: str) -> CellDecisions:
    """Per-case y (mean over samples), p_positive and sample count, in case-set order."""
    means, missing = per_case(cell_rows(decisions, model, condition), cases.table["case_id"])
    if missing:
        raise LensauditError(f"cell {model} x {condition}: {len(missing)} case(s) have no valid "
                             f"decision (e.g. case {sorted(missing)[0]}); re-run to compute "
                             "them, or raise decision.reasoning_max_tokens if answers were cut")
    p = means["p"].to_numpy(float)
    y = means["y"].to_numpy(float)
    has_probability = bool(np.isfinite(p).all())
    # A backend without probabilities still has its choices.
    p = np.where(np.isfinite(p), p, y)
    return CellDecisions(y, p, means["trials"].to_numpy(float), has_probability)


def fit_weights(enc: Encoding, y: np.ndarray, stats: StatisticsSpec) -> kernels.PolicyFit:
    """The ridge-logistic policy of decisions `y` on the encoded cues."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", kernels.ConstantCueWarning)  # reported via enc.constant
        return kernels.fit_policy(enc.X, y, C=stats.C)


def cross_validated(X: np.ndarray, y: np.ndarray, stats: StatisticsSpec) -> kernels.CrossValidated:
    """The cue model of `y`, stratified k-fold (`stats.cv_folds`, `stats.seed`)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", kernels.ConstantCueWarning)
        return kernels.cross_validated_policy(X, y, key=jax.random.PRNGKey(stats.seed),
                                              k=stats.cv_folds, C=stats.C)


def fit_org(enc: Encoding, y_org: np.ndarray, stats: StatisticsSpec) -> OrgPolicy:
    """The organisation's policy and its cross-validated accuracy and AUC."""
    return org_policy(fit_weights(enc, y_org, stats), cross_validated(enc.X, y_org, stats))


def org_policy(fit: kernels.PolicyFit, cv: kernels.CrossValidated) -> OrgPolicy:
    """The organisation's policy from its fit and its cross-validation."""
    return OrgPolicy(float(fit.intercept), np.asarray(fit.beta), cv.accuracy, cv.auc, cv)


#: A reference the cues predict this well out of fold is (nearly) a function of
#: them. The AUC catches one they rank almost perfectly while a few cases fall
#: on the wrong side of 0.5: ECHR with its Issue-level findings as cues scores
#: accuracy 0.978 and AUC 0.998 (0.917 and 0.976 without them).
DETERMINED_ACCURACY, DETERMINED_AUC = 0.98, 0.99


def determined_reason(cv_accuracy: float, cv_auc: float) -> str | None:
    """Why the cues nearly determine the reference decision, or None."""
    if cv_accuracy >= DETERMINED_ACCURACY or cv_auc >= DETERMINED_AUC:
        return (f"the cues nearly determine the reference decision (cross-validated accuracy "
                f"{cv_accuracy:.3f}, AUC {cv_auc:.3f}): an audit on them measures whether a "
                "model reads the answer off a cue; leave out cues that are part of the decision "
                "(a case-set file's defines_outcome)")
    return None


def cell_key(stats: StatisticsSpec) -> jax.Array:
    return jax.random.fold_in(jax.random.PRNGKey(stats.seed), 1)  # same resamples for every cell


def twin_key(stats: StatisticsSpec) -> jax.Array:
    """The resamples of the counterfactual effects (the same for every cell)."""
    return jax.random.fold_in(jax.random.PRNGKey(stats.seed), 2)


def org_reference(enc: Encoding, y_org: np.ndarray, stats: StatisticsSpec,
                  part: str | None = None) -> kernels.LensReference:
    """The organisation's side of every cell's comparison on these cases, computed
    once (`part`: one of `kernels.REFERENCE_PARTS`, to compute the parts apart)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", kernels.ConstantCueWarning)
        return kernels.lens_reference(enc.X, y_org, key=cell_key(stats),
                                      n_bootstrap=stats.bootstrap, C=stats.C,
                                      interval=stats.interval, part=part)


class LensExtras(NamedTuple):
    """The organisation's side of the Lens Model Equation and of CALM's analyses,
    shared by every cell on the same cases (`lme_reference`)."""

    lme: kernels.LensModelReference  # the criterion's fits on the lens's resamples
    # [n] the organisation's out-of-fold cue-model probabilities; None on case
    # sets too small for a cross-validated cue model (fewer than 2 d + 2 cases).
    org_oof: np.ndarray | None


def lme_reference(enc: Encoding, y_org: np.ndarray, reference: kernels.LensReference,
                  stats: StatisticsSpec,
                  cv: kernels.CrossValidated | None = None) -> LensExtras:
    """The organisation's side of every cell's Lens Model Equation (on the lens's
    own bootstrap resamples, so its intervals are paired with the cosine's) and
    its out-of-fold probabilities (the same folds as its cross-validated ceiling;
    `cv`: that ceiling's cross-validation on the same cases, reused if given)."""
    return LensExtras(lme_side(enc, y_org, reference), out_of_fold(enc, y_org, stats, cv))


def lme_side(enc: Encoding, y_org: np.ndarray,
             reference: kernels.LensReference) -> kernels.LensModelReference:
    """The criterion's fits on the lens's bootstrap resamples (either part of
    the reference has them)."""
    return kernels.lens_model_reference(enc.X, y_org, reference.boot_weights)


def out_of_fold(enc: Encoding, y_org: np.ndarray, stats: StatisticsSpec,
                cv: kernels.CrossValidated | None = None) -> np.ndarray | None:
    """The organisation's out-of-fold cue-model probabilities `[n]`; None on case
    sets too small for a cross-validated cue model (fewer than 2 d + 2 cases)."""
    if enc.X.shape[0] < 2 * enc.X.shape[1] + 2:  # the cross-fitted figure's rule
        return None
    cv = cv if cv is not None else cross_validated(enc.X, y_org, stats)
    return np.asarray(cv.oof_probability)


def org_crossfit_side(enc: Encoding, y_org: np.ndarray, stats: StatisticsSpec
                      ) -> tuple[kernels.LensReference, kernels.LensModelReference]:
    """The 'crossfit' part of the organisation's reference and its Lens Model
    side (`lme_side`), for the worker beside `org_resamples_side`."""
    part = org_reference(enc, y_org, stats, part="crossfit")
    return part, lme_side(enc, y_org, part)


def org_resamples_side(enc: Encoding, y_org: np.ndarray, stats: StatisticsSpec,
                       cv: kernels.CrossValidated | None = None
                       ) -> tuple[kernels.LensReference, kernels.CrossValidated]:
    """The 'resamples' part of the organisation's reference and its
    cross-validation (`cv`, or computed here when None: its ceiling and the
    Lens Model extras' out-of-fold probabilities), for a worker beside the one
    fitting the cross-fitted part (`org_crossfit_side`), which takes longer.

    Then, with the time that leaves, a rehearsal: one cell's statistics on the
    organisation's own decisions against a stand-in of the cross-fitted part
    (`kernels.stand_in_reference`), thrown away. It compiles the programs every
    cell runs into the workers' shared cache before the first cell starts
    (measured: each worker's first cell took 10 s against 3 s for the next,
    both compiling the same programs at once).
    """
    cv = cv if cv is not None else cross_validated(enc.X, y_org, stats)
    part = org_reference(enc, y_org, stats, part="resamples")
    rehearsal = CellDecisions(y_org, np.where(y_org > 0.5, 0.8, 0.2), np.ones_like(y_org), True)
    # Not the cross-fitted comparison: its programs (the half fits, the
    # simulation world's) are those the other worker compiles for the real
    # part at the same time; left out, the rehearsal ends 3-4 s sooner
    # (measured cold) and the first cells load them from the shared cache.
    # Nor the Lens Model side on the resamples (numpy, nothing to compile; the
    # other worker computes it): a stand-in on the cases alone.
    stand_in = LensExtras(kernels.lens_model_reference(enc.X, y_org),
                          out_of_fold(enc, y_org, stats, cv))
    try:
        audit_cell(enc, y_org, rehearsal, model="rehearsal", condition="baseline", stats=stats,
                   reference=kernels.stand_in_reference(part, cross_fitted=False), lme=stand_in)
    except Exception:  # noqa: BLE001 - a rehearsal only compiles; the real cells report problems
        pass
    return part, cv


def org_side_here(enc: Encoding, y_org: np.ndarray, stats: StatisticsSpec,
                  cv: kernels.CrossValidated | None = None
                  ) -> tuple[kernels.LensReference, LensExtras, kernels.CrossValidated]:
    """The organisation's whole side in one process: its reference, Lens Model
    extras and cross-validation (`cv`, or computed here when None)."""
    cv = cv if cv is not None else cross_validated(enc.X, y_org, stats)
    reference = org_reference(enc, y_org, stats)
    return reference, lme_reference(enc, y_org, reference, stats, cv=cv), cv


def lens_model_metrics(enc: Encoding, y_org: np.ndarray, y_dm: np.ndarray,
                       stats: StatisticsSpec, extras: LensExtras) -> dict[str, float]:
    """Achievement r_a, R_e, consistency R_s (with an interval, and out of fold),
    matching G (with an interval) and C: the Lens Model Equation of one cell."""
    point = kernels.lens_model_equation(enc.X, y_org, y_dm)
    boot = kernels.lens_model_equation(enc.X, y_org, y_dm, reference=extras.lme)
    method = interval_method(stats.interval)
    out = {f"lme_{k}": float(v) for k, v in point._asdict().items()}
    for k in ("R_s", "G"):
        obs, reps = float(getattr(point, k)), np.asarray(getattr(boot, k))
        if np.isfinite(obs) and np.isfinite(reps).sum() >= 10:
            ci = kernels.holding(obs, kernels.bootstrap_interval(obs, reps, level=stats.level,
                                                                 method=method), -1.0, 1.0)
            out[f"lme_{k}_low"], out[f"lme_{k}_high"] = ci.low, ci.high
    folds = kernels.stratified_folds(jax.random.fold_in(jax.random.PRNGKey(stats.seed), 3),
                                     (np.asarray(y_dm) > 0.5).astype(float), k=stats.cv_folds)
    out["lme_R_s_cv"] = kernels.cross_validated_consistency(enc.X, y_dm, np.asarray(folds))
    return out


def calm_metrics(enc: Encoding, dm: CellDecisions, comp: kernels.LensComparison,
                 stats: StatisticsSpec, extras: LensExtras) -> dict[str, float]:
    """CALM's secondary analyses, named for what they measure: agreement of the
    two weight vectors (Pearson, Spearman, sign agreement, top-5 and top-10
    overlap over the measured columns), and `consistency_auc`, CALM's "AUC": the
    out-of-fold AUC of the cue model predicting the decision-maker's own
    decisions; `propensity_r_oof`: the correlation of the two cue models'
    out-of-fold probabilities (CALM's propensity correlation). The last two are
    left out on case sets with fewer than 2 d + 2 cases (a cue model fitted on
    nine tenths of them is mostly ridge penalty) or where an answer is too rare
    to appear in every fold."""
    out = {}
    if zero_policy_reason(comp) is None:
        agree = kernels.coefficient_agreement(
            comp.beta_org, comp.beta_dm, mask=[s == "" for s in enc.column_status()])
        out.update(coef_pearson=agree.pearson, coef_spearman=agree.spearman,
                   coef_sign_agreement=agree.sign_agreement,
                   **{f"coef_top{k}_overlap": v for k, v in agree.top_overlap.items()})
    own = (np.asarray(dm.y) > 0.5).astype(float)
    if extras.org_oof is not None and min(own.sum(), len(own) - own.sum()) >= stats.cv_folds:
        # (both answers in every fold)
        cv_dm = cross_validated(enc.X, own, stats)
        out["consistency_auc"] = cv_dm.auc
        out["propensity_r_oof"] = float(kernels.pearson_r(cv_dm.oof_probability, extras.org_oof))
    return out


def audit_cell(enc: Encoding, y_org: np.ndarray, dm: CellDecisions, *,
               model: str, condition: str, stats: StatisticsSpec,
               reference: kernels.LensReference | None = None,
               lme: LensExtras | None = None) -> CellResult:
    """Lens-model comparison of one decision-maker against the organisation.

    `reference`: from `org_reference` on the same cases (shared by the cells
    of a job); computed here when None. `lme`: from `lme_reference` with that
    reference, likewise.
    """
    if reference is None:
        reference = org_reference(enc, y_org, stats)
    if lme is None:
        lme = lme_reference(enc, y_org, reference, stats)
    def compare(y, trials, loss="logistic"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", kernels.ConstantCueWarning)
            return kernels.compare_policies(
                enc.X, y_org, y, dm.p, key=cell_key(stats), n_bootstrap=stats.bootstrap,
                n_permutations=stats.permutations, C=stats.C, level=stats.level,
                interval=stats.interval, dm_trials=trials, reference=reference, dm_loss=loss)

    comp = compare(dm.y, dm.trials)
    cell = CellResult(model, condition, len(y_org), comp)
    if stats.soft == "off":
        cell.soft_reason = "statistics.soft is off"
    elif not dm.has_probability:
        cell.soft_reason = "its backend gave no probability of the answer"
    else:
        # The same lens with the policy read from the probabilities' log-odds.
        cell.soft = compare(dm.p, None, SOFT_LOSS)
    cell.r_cos_reason = kernels.cosine_undefined_reason(comp.beta_org, comp.beta_dm)
    cell.lme = {**lens_model_metrics(enc, y_org, dm.y, stats, lme),
                **calm_metrics(enc, dm, comp, stats, lme)}
    rate = comp.positive_rate_dm
    if rate >= 0.95 or rate <= 0.05:
        cell.warnings.append(
            f"{model} x {condition} answered one way in {max(rate, 1 - rate):.0%} of cases: its "
            "decisions carry little cue information" + ("; the soft lens reads its policy from "
                                                        "its probabilities" if cell.soft else ""))
    unconverged = comp.n_unconverged + (cell.soft.n_unconverged if cell.soft else 0)
    if unconverged:
        cell.warnings.append(f"{unconverged} refit(s) did not converge")
    return cell
