"""Pure numerics for lensaudit: ridge-logistic policies, refits, resampling, metrics.

No I/O, no Ray, no MLflow. Arrays are float64 by default: each public kernel
runs with JAX's 64-bit mode on for its own call (`kernels._x64`), and leaves
the process's JAX settings as they were; pass `dtype=float32` to the fitting
functions for single precision.
"""

from kernels._agreement import CoefficientAgreement, coefficient_agreement, spearman_r
from kernels._alignment import (
    INTERVAL_METHODS,
    ZERO_POLICY_NORM,
    Interval,
    bootstrap_interval,
    cosine,
    cosine_undefined_reason,
    family_shares,
    holding,
    permutation_pvalue,
)
from kernels._lens import (
    AlignmentChange,
    CellCorrelation,
    CrossValidated,
    LensComparison,
    LensReference,
    alignment_change,
    compare_policies,
    cross_cell_correlation,
    cross_validated_policy,
    REFERENCE_PARTS,
    join_reference,
    lens_reference,
    stand_in_reference,
)
from kernels._lme import (
    LensModel,
    LensModelReference,
    cross_validated_consistency,
    lens_model_equation,
    lens_model_reference,
)
from kernels._metrics import (
    accuracy,
    cohen_kappa,
    log_loss,
    pearson_pvalue,
    pearson_r,
    positive_rate,
    roc_auc,
)
from kernels._paired import PairedMean, paired_mean
from kernels._policy import RESAMPLE_TOL, ConstantCueWarning, fit_policies, fit_policy
from kernels._rows import BootstrapCounts, weight_chunks
from kernels._resample import (
    bootstrap_weights,
    permutations,
    permuted,
    stratified_folds,
)
from kernels._ridge_logistic import PolicyFit
from kernels._world import (
    CrossFitReference,
    CrossFitted,
    CrossFittedChange,
    cross_fitted_alignment,
    crossfit_change,
    crossfit_reference,
)

__all__ = [
    "BootstrapCounts",
    "AlignmentChange",
    "INTERVAL_METHODS",
    "ZERO_POLICY_NORM",
    "CellCorrelation",
    "CoefficientAgreement",
    "ConstantCueWarning",
    "RESAMPLE_TOL",
    "CrossFitReference",
    "CrossFitted",
    "CrossFittedChange",
    "CrossValidated",
    "Interval",
    "LensComparison",
    "LensModel",
    "LensModelReference",
    "LensReference",
    "PairedMean",
    "PolicyFit",
    "accuracy",
    "bootstrap_interval",
    "bootstrap_weights",
    "cohen_kappa",
    "alignment_change",
    "compare_policies",
    "coefficient_agreement",
    "spearman_r",
    "cosine",
    "cross_validated_consistency",
    "lens_model_equation",
    "lens_model_reference",
    "weight_chunks",
    "paired_mean",
    "cosine_undefined_reason",
    "cross_cell_correlation",
    "cross_fitted_alignment",
    "crossfit_change",
    "crossfit_reference",
    "cross_validated_policy",
    "REFERENCE_PARTS",
    "join_reference",
    "lens_reference",
    "stand_in_reference",
    "family_shares",
    "holding",
    "fit_policies",
    "fit_policy",
    "log_loss",
    "pearson_pvalue",
    "pearson_r",
    "permutation_pvalue",
    "permutations",
    "permuted",
    "positive_rate",
    "roc_auc",
    "stratified_folds",
]
