"""Double precision for the kernels without a process-wide JAX flag.

The kernels compute in float64 by default (ridge-logistic fits to 1e-10,
cosines near 1); JAX gives float64 only with `jax_enable_x64`. Rather than
turning that on for the whole process on import (which changes every other JAX
user's dtypes), each public kernel runs inside `jax.enable_x64(True)`, a
thread-local setting that ends with the call.
"""

from __future__ import annotations

import functools

import jax


def x64(fn):
    """Run `fn` with JAX's 64-bit mode on for the call (and its jit traces)."""

    @functools.wraps(fn)
    def in_x64(*args, **kwargs):
        with jax.enable_x64(True):
            return fn(*args, **kwargs)

    return in_x64
