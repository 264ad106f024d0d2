"""Resampling plans: bootstrap weights, permutations, stratified folds."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from kernels._x64 import x64



@x64
@partial(jax.jit, static_argnames=("n", "num", "dtype"))
def bootstrap_weights(key: jax.Array, n: int, num: int, dtype=jnp.float64) -> jax.Array:
    """Multinomial case counts for `num` bootstrap resamples of `n` cases.

    Returns:
      `[num, n]` counts, each row summing to n. Refitting with these weights is
      the same as refitting on the resampled rows (tested).
    """
    idx = jax.random.randint(key, (num, n), 0, n)
    rows = jnp.broadcast_to(jnp.arange(num)[:, None], (num, n))
    return jnp.zeros((num, n), dtype).at[rows, idx].add(1.0)


@x64
@partial(jax.jit, static_argnames=("n", "num"))
def permutations(key: jax.Array, n: int, num: int) -> jax.Array:
    """`[num, n]` integer index permutations of range(n)."""
    return jax.vmap(lambda k: jax.random.permutation(k, n))(jax.random.split(key, num))


@x64
def permuted(y: jax.Array, perms: jax.Array) -> jax.Array:
    """Apply `[num, n]` permutations to `[n]` labels -> `[num, n]`."""
    return jnp.asarray(y)[perms]


@x64
@partial(jax.jit, static_argnames="k")
def stratified_folds(key: jax.Array, y: jax.Array, k: int = 10) -> jax.Array:
    """Assign each case to one of k folds, each class spread evenly over folds.

    Returns:
      `[n]` fold ids in [0, k).
    """
    y = jnp.asarray(y)
    n = y.shape[0]
    shuffle = jax.random.permutation(key, n)
    # Sort the shuffled cases by class, then deal them round-robin into folds.
    order = shuffle[jnp.argsort(y[shuffle], stable=True)]
    folds = jnp.zeros(n, jnp.int32).at[order].set(jnp.arange(n, dtype=jnp.int32) % k)
    return folds
