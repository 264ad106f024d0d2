"""Stage 4, audit: decisions + case set -> the lens statistics.

The organisation's policy and every cell's (model x condition), their
alignment with intervals, accuracy, AUC and kappa, protected-cue shares,
stated versus used cues, the effects of counterfactual twins, and audits
without a reference; and where the refits run (`statistics.device`). The
`statistics:` section of a job spec is this stage's own (`StatisticsSpec`).
"""

from engine.audit._cells import (audit_cell, audit_result, AuditResult, bound_note, CellDecisions,
                                 CellResult, comparison_reason, cross_validated,
                                 decisions_for_cell, determined_reason, estimate_note, fit_org,
                                 fit_weights, format_alignment, format_protected, LensExtras,
                                 lme_reference, lme_side, missing_line, note_lines,
                                 org_crossfit_side, org_policy, org_reference, org_resamples_side,
                                 org_side_here, OrgPolicy, out_of_fold, policy_table,
                                 protected_table, SOFT_LOSS, summary_table, twin_key, wide_note,
                                 zero_policy_reason)
from engine.audit._batch import audit_cells, start_cells, tabulate
from engine.audit._changes import ConditionChange, add_condition_changes, condition_changes
from engine.audit._devices import refit_devices
from engine.audit._peers import PAIR_COLUMNS, Peer, fit_peer, format_peers, pairwise, peer_table
from engine.audit._place import (StatisticsPlace, statistics_place, statistics_workers,
                                 usable_cores, worker_count)
from engine.audit._settings import StatisticsSpec
from engine.audit._stated import (contributions, cue_terms, direction_agreement, format_stated,
                                  mentions, mentions_by_case, stated_metrics, stated_vs_used)
from engine.audit._twins import EFFECT_COLUMNS, effect_metrics, format_effects, twin_effects

__all__ = ["add_condition_changes", "audit_cell", "audit_cells", "audit_result", "AuditResult",
           "bound_note", "CellDecisions", "CellResult", "comparison_reason", "condition_changes",
           "ConditionChange", "contributions", "cross_validated", "cue_terms",
           "decisions_for_cell", "determined_reason", "direction_agreement", "EFFECT_COLUMNS",
           "effect_metrics", "estimate_note", "fit_org", "fit_peer", "fit_weights",
           "format_alignment", "format_effects", "format_peers", "format_protected",
           "format_stated", "LensExtras", "lme_reference", "lme_side", "mentions",
           "mentions_by_case", "missing_line", "note_lines", "org_crossfit_side", "org_policy",
           "org_reference", "org_resamples_side", "org_side_here", "OrgPolicy", "out_of_fold",
           "PAIR_COLUMNS", "pairwise", "Peer", "peer_table", "policy_table", "protected_table",
           "refit_devices", "SOFT_LOSS", "start_cells", "stated_metrics", "stated_vs_used",
           "statistics_place", "statistics_workers", "StatisticsPlace", "StatisticsSpec",
           "summary_table", "tabulate", "twin_effects", "twin_key", "usable_cores", "wide_note",
           "worker_count", "zero_policy_reason"]
