"""Process-alignment statistics on policy vectors (DESIGN.md, "Statistics")."""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from numpy.typing import ArrayLike
from jax.scipy.stats import norm

from kernels._ridge_logistic import matmul
from kernels._x64 import x64

#: A policy whose weight vector has a smaller norm than this has no direction.
ZERO_POLICY_NORM = 1e-6

INTERVAL_METHODS = ("basic", "percentile", "bca")

# The functions here are jitted whole: one compilation per input shape instead
# of one per operation (each a fraction of a second on a CPU, dozens per shape).


@x64
@jax.jit
def cosine(a: jax.Array, b: jax.Array) -> jax.Array:
    """Cosine of the last axis of `a` and `b` (`[..., d]` -> `[...]`).

    NaN where either vector's norm is below `ZERO_POLICY_NORM` (undefined).
    """
    na = jnp.linalg.norm(a, axis=-1)
    nb = jnp.linalg.norm(b, axis=-1)
    ok = (na > ZERO_POLICY_NORM) & (nb > ZERO_POLICY_NORM)
    dot = jnp.sum(a * b, axis=-1)
    return jnp.where(ok, dot / jnp.where(ok, na * nb, 1.0), jnp.nan)


@x64
def cosine_undefined_reason(a: ArrayLike, b: ArrayLike, names=("organisation", "decision-maker")):
    """Why `cosine(a, b)` is undefined, or None when it is defined."""
    for vec, name in zip((a, b), names):
        norm_ = float(np.linalg.norm(np.asarray(vec)))
        if not norm_ > ZERO_POLICY_NORM:
            return (f"the {name} policy vector is ~0 (norm {norm_:.1e}): its decisions "
                    "carry no cue information, e.g. one answer for every case")
    return None


class Interval(NamedTuple):
    low: jax.Array
    high: jax.Array


def holding(obs: float, ci: Interval, low: float, high: float) -> Interval:
    """`ci` made to hold its estimate `obs` and clipped to the statistic's range
    [low, high] (the basic interval reflects a skewed bootstrap past either, and
    shifts an attenuated one past its estimate). A missing bound stays missing:
    no interval is not made into the point [obs, obs]."""
    return Interval(float(np.clip(min(float(ci.low), obs), low, high)),
                    float(np.clip(max(float(ci.high), obs), low, high)))


@x64
def bootstrap_interval(
    observed, replicates, *, level: float = 0.95, method: str = "basic", jackknife=None
) -> Interval:
    """Bootstrap confidence interval for a statistic.

    Args:
      observed: `[...]` the statistic on the data.
      replicates: `[B, ...]` the statistic on each resample; NaN replicates
        (undefined) are ignored.
      level: coverage, e.g. 0.95.
      method: "basic" (default; [2 obs - q_hi, 2 obs - q_lo]), "percentile"
        ([q_lo, q_hi]; undercovers for the cosine, see DESIGN.md) or "bca"
        (bias-corrected and accelerated; needs `jackknife`).
      jackknife: `[n, ...]` leave-one-out values, for "bca".

    Returns:
      `Interval(low, high)`, each `[...]`.
    """
    if method not in INTERVAL_METHODS:
        raise ValueError(f"interval method must be one of {INTERVAL_METHODS}, got {method!r}")
    if method == "bca" and jackknife is None:
        raise ValueError("method='bca' needs the jackknife values")
    return _interval(jnp.asarray(observed), jnp.asarray(replicates),
                     None if jackknife is None else jnp.asarray(jackknife),
                     level=float(level), method=method)


@partial(jax.jit, static_argnames=("level", "method"))
def _interval(obs, reps, jackknife, *, level: float, method: str) -> Interval:
    alpha = (1 - level) / 2
    if method == "bca":
        z0 = norm.ppf(jnp.nanmean(reps < obs, axis=0) + 0.5 * jnp.nanmean(reps == obs, axis=0))
        jk = jnp.asarray(jackknife)
        d = jnp.nanmean(jk, axis=0) - jk
        accel = jnp.nansum(d**3, axis=0) / (6 * jnp.nansum(d**2, axis=0) ** 1.5)
        z = norm.ppf(jnp.array([alpha, 1 - alpha])).reshape((2,) + (1,) * obs.ndim)
        adj = norm.cdf(z0 + (z0 + z) / (1 - accel * (z0 + z)))
        # Each statistic has its own adjusted levels: one quantile per column.
        lo, hi = (_diag_quantile(reps, adj[i]) for i in range(2))
        return Interval(lo, hi)
    q_lo = jnp.nanquantile(reps, alpha, axis=0)
    q_hi = jnp.nanquantile(reps, 1 - alpha, axis=0)
    if method == "percentile":
        return Interval(q_lo, q_hi)
    return Interval(2 * obs - q_hi, 2 * obs - q_lo)


def _diag_quantile(reps, q):
    """Quantile of each column of `reps` `[B, ...]` at its own level `q` `[...]`."""
    flat = reps.reshape(reps.shape[0], -1)
    qf = jnp.broadcast_to(q, reps.shape[1:]).reshape(-1)
    out = jax.vmap(lambda col, qq: jnp.nanquantile(col, qq))(flat.T, qf)
    return out.reshape(reps.shape[1:])


@x64
@jax.jit
def permutation_pvalue(observed, null) -> jax.Array:
    """p = (1 + #{null >= observed}) / (B + 1); undefined nulls count as >=.

    Args:
      observed: `[]` statistic on the data (NaN gives NaN).
      null: `[B]` the statistic under B permutations.
    """
    null = jnp.asarray(null)
    exceed = jnp.sum(jnp.where(jnp.isnan(null), True, null >= observed))
    p = (1 + exceed) / (null.shape[0] + 1)
    return jnp.where(jnp.isnan(observed), jnp.nan, p)


@x64
@partial(jax.jit, static_argnames="num_families")
def family_shares(beta, family_index, num_families: int) -> jax.Array:
    """Share of sum |beta| carried by each cue family.

    Args:
      beta: `[..., d]` weights; family_index: `[d]` ints in [0, num_families).

    Returns:
      `[..., num_families]`, summing to 1 (NaN for an all-zero beta).
    """
    a = jnp.abs(jnp.asarray(beta))
    onehot = jax.nn.one_hot(jnp.asarray(family_index), num_families, dtype=a.dtype)
    per_family = matmul(a, onehot)  # full precision, not TF32, on GPUs
    total = jnp.sum(a, axis=-1, keepdims=True)
    return jnp.where(total > 0, per_family / jnp.where(total > 0, total, 1.0), jnp.nan)
