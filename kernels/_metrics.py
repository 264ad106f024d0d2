"""Output metrics between two decision vectors (DESIGN.md, "Output metrics").

Every function takes 1-D arrays of equal length n and returns a scalar; an
undefined value (a constant input where a variance is needed) is NaN.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from jax.scipy.special import betainc

from kernels._x64 import x64


# Each function is jitted whole: one compilation per input length instead of
# one per operation (a fraction of a second each on a CPU, a dozen per metric).


@x64
@jax.jit
def accuracy(y_true: jax.Array, y_pred: jax.Array) -> jax.Array:
    """Share of cases where the 0/1 decisions agree. Inputs `[n]`."""
    return jnp.mean((jnp.asarray(y_true) == jnp.asarray(y_pred)).astype(jnp.float64))


@x64
@jax.jit
def positive_rate(y: jax.Array) -> jax.Array:
    """Share of positive (1) decisions. Input `[n]`."""
    return jnp.mean((jnp.asarray(y, jnp.float64) > 0.5).astype(jnp.float64))


@x64
@jax.jit
def roc_auc(y_true: jax.Array, score: jax.Array) -> jax.Array:
    """ROC AUC of `score` for 0/1 `y_true`, ties counted half (Mann-Whitney).

    O(n log n): each positive's score is located among the sorted negatives.
    NaN when one class is absent.
    """
    y = jnp.asarray(y_true) > 0.5
    s = jnp.asarray(score, jnp.float64)
    neg_sorted = jnp.sort(jnp.where(y, jnp.inf, s))
    below = jnp.searchsorted(neg_sorted, s, side="left")
    at_or_below = jnp.searchsorted(neg_sorted, s, side="right")
    wins = jnp.where(y, below + 0.5 * (at_or_below - below), 0.0)
    n1 = jnp.sum(y)
    n0 = y.shape[0] - n1
    return jnp.where((n1 > 0) & (n0 > 0), jnp.sum(wins) / (n1 * n0), jnp.nan)


@x64
@jax.jit
def cohen_kappa(y_a: jax.Array, y_b: jax.Array) -> jax.Array:
    """Cohen's kappa of two 0/1 raters; NaN when chance agreement is 1."""
    a = (jnp.asarray(y_a) > 0.5).astype(jnp.float64)
    b = (jnp.asarray(y_b) > 0.5).astype(jnp.float64)
    po = jnp.mean((a == b).astype(jnp.float64))
    pa, pb = jnp.mean(a), jnp.mean(b)
    pe = pa * pb + (1 - pa) * (1 - pb)
    return jnp.where(pe < 1, (po - pe) / jnp.where(pe < 1, 1 - pe, 1.0), jnp.nan)


@x64
@jax.jit
def pearson_r(x: jax.Array, y: jax.Array) -> jax.Array:
    """Pearson correlation; NaN when either input is constant."""
    x = jnp.asarray(x, jnp.float64)
    y = jnp.asarray(y, jnp.float64)
    xc, yc = x - x.mean(), y - y.mean()
    denom = jnp.sqrt(jnp.sum(xc**2) * jnp.sum(yc**2))
    return jnp.where(denom > 0, jnp.sum(xc * yc) / jnp.where(denom > 0, denom, 1.0), jnp.nan)


@x64
@partial(jax.jit, static_argnames="n")
def pearson_pvalue(r: jax.Array, n: int) -> jax.Array:
    """Two-sided p-value of Pearson r under no correlation (t with n-2 df)."""
    df = n - 2
    r = jnp.clip(jnp.asarray(r, jnp.float64), -1.0, 1.0)
    t2 = r**2 * df / jnp.maximum(1 - r**2, 1e-300)
    return betainc(df / 2.0, 0.5, df / (df + t2))


@x64
@jax.jit
def log_loss(y_true: jax.Array, prob: jax.Array) -> jax.Array:
    """Mean log loss of probabilities `prob` for 0/1 labels."""
    p = jnp.clip(jnp.asarray(prob, jnp.float64), 1e-15, 1 - 1e-15)
    y = jnp.asarray(y_true, jnp.float64)
    return -jnp.mean(y * jnp.log(p) + (1 - y) * jnp.log(1 - p))
