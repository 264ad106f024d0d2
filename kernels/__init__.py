"""Pure numerics for lensaudit: ridge-logistic policies, refits, resampling, metrics.

No I/O, no Ray, no MLflow. Arrays are float64 by default, so importing this
package turns on JAX's 64-bit mode (`jax_enable_x64`); pass `dtype=float32`
to the fitting functions for single precision.
"""

import jax

jax.config.update("jax_enable_x64", True)

from kernels._alignment import (  # noqa: E402
    INTERVAL_METHODS,
    ZERO_POLICY_NORM,
    Interval,
    bootstrap_interval,
    cosine,
    cosine_undefined_reason,
    family_shares,
    permutation_pvalue,
)
from kernels._lens import (  # noqa: E402
    AlignmentChange,
    CellCorrelation,
    CrossValidated,
    LensComparison,
    LensReference,
    alignment_change,
    compare_policies,
    cross_cell_correlation,
    cross_validated_policy,
    lens_reference,
)
from kernels._metrics import (  # noqa: E402
    accuracy,
    cohen_kappa,
    log_loss,
    pearson_pvalue,
    pearson_r,
    positive_rate,
    roc_auc,
)
from kernels._paired import PairedMean, paired_mean  # noqa: E402
from kernels._policy import ConstantCueWarning, fit_policies, fit_policy  # noqa: E402
from kernels._resample import (  # noqa: E402
    bootstrap_weights,
    permutations,
    permuted,
    stratified_folds,
)
from kernels._ridge_logistic import PolicyFit  # noqa: E402
from kernels._world import (  # noqa: E402
    CrossFitReference,
    CrossFitted,
    CrossFittedChange,
    cross_fitted_alignment,
    crossfit_change,
    crossfit_reference,
)

__all__ = [
    "AlignmentChange",
    "INTERVAL_METHODS",
    "ZERO_POLICY_NORM",
    "CellCorrelation",
    "ConstantCueWarning",
    "CrossFitReference",
    "CrossFitted",
    "CrossFittedChange",
    "CrossValidated",
    "Interval",
    "LensComparison",
    "LensReference",
    "PairedMean",
    "PolicyFit",
    "accuracy",
    "bootstrap_interval",
    "bootstrap_weights",
    "cohen_kappa",
    "alignment_change",
    "compare_policies",
    "cosine",
    "paired_mean",
    "cosine_undefined_reason",
    "cross_cell_correlation",
    "cross_fitted_alignment",
    "crossfit_change",
    "crossfit_reference",
    "cross_validated_policy",
    "lens_reference",
    "family_shares",
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
