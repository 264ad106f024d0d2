"""Means of paired differences with case-bootstrap intervals (counterfactual twins).

Each case contributes a difference per effect (a twin's decision minus its
original's). Resampling cases keeps each case's differences together, so the
intervals of different effects come from the same resamples.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from kernels._alignment import bootstrap_interval
from kernels._rows import BootstrapCounts, chunk_rows
from kernels._x64 import x64


class PairedMean(NamedTuple):
    """Per effect: the mean difference over cases and its interval, each `[k]`."""

    mean: jax.Array
    low: jax.Array
    high: jax.Array


@x64
def paired_mean(diffs: ArrayLike, *, key: jax.Array, n_bootstrap: int = 1000,
                level: float = 0.95) -> PairedMean:
    """Mean of per-case differences, with a percentile case-bootstrap interval.

    Args:
      diffs: `[n, k]` one difference per case and effect; NaN where a case has
        none for that effect (it is left out of that effect's mean).
      key: PRNG key of the resamples (the same for every effect).
      n_bootstrap: resamples.
      level: interval coverage.

    Returns:
      `PairedMean` of `[k]` arrays; NaN for an effect no case has. The
      percentile interval of a mean (not the basic one the cosines use): a mean
      has no attenuation to reflect, and the percentile interval stays inside
      the statistic's range, so differences that are all 0 give [0, 0].
    """
    d = jnp.asarray(diffs, jnp.float64)
    if d.ndim != 2:
        raise ValueError(f"diffs must be [n, k], got shape {d.shape}")
    present = jnp.isfinite(d)
    values = jnp.where(present, d, 0.0)
    counts = present.astype(d.dtype)
    mean = values.sum(0) / counts.sum(0)
    values, counts = np.asarray(values), np.asarray(counts)
    # The resamples' case counts a chunk at a time (`kernels._rows`): never [B, n].
    counts_b = BootstrapCounts(key, d.shape[0], n_bootstrap)
    reps = np.empty((n_bootstrap, d.shape[1]))
    for start, w in counts_b.chunks(chunk_rows(d.shape[0], 1024)):
        with np.errstate(invalid="ignore", divide="ignore"):
            # NaN where a resample has no such case
            reps[start:start + w.shape[0]] = (w @ values) / (w @ counts)
    ci = bootstrap_interval(mean, reps, level=level, method="percentile")
    return PairedMean(mean, ci.low, ci.high)
