"""Padding to a few shapes, so that fits of nearby sizes share one compiled
program: cases (zero-weight rows: `compare_policies`, `fit_halves`), cues
(zero columns) and problems per batch (`fit_policies`). Compiling a refit
program costs 1 to 3 s on a CPU, more than most fits it serves."""

from __future__ import annotations

import numpy as np

from kernels._x64 import x64



#: Case counts are padded up to a multiple of this with zero-weight rows, so
#: that case sets of nearby sizes (the human study's groups judged 48 to 94
#: cases each) share one compiled program instead of compiling one per n.
ROW_BUCKET = 64


@x64
def padded_rows(n: int, bucket: int = ROW_BUCKET) -> int:
    """The row count a problem of n cases is fitted at (n rounded up to `bucket`)."""
    return -(-n // bucket) * bucket


@x64
def pad_rows(A: np.ndarray, m: int, axis: int = 0, fill=None) -> np.ndarray:
    """A with rows n..m-1 appended along `axis`: copies of row 0 (so a constant
    column stays constant), or `fill`. Their weight is 0, so no fit changes."""
    n = A.shape[axis]
    if m == n:
        return A
    if fill is None:
        extra = np.repeat(np.take(A, [0], axis=axis), m - n, axis=axis)
    else:
        shape = list(A.shape)
        shape[axis] = m - n
        extra = np.full(shape, fill, A.dtype)
    return np.concatenate([A, extra], axis=axis)


#: Cue columns are padded up to a multiple of this with zero columns. A zero
#: column's weight is exactly 0 and it leaves every other weight unchanged (its
#: block of the penalised Hessian is the penalty alone).
COL_BUCKET = 16


@x64
def padded_cols(d: int, bucket: int = COL_BUCKET) -> int:
    """The column count a problem of d cues is fitted at."""
    return -(-d // bucket) * bucket


@x64
def pad_cols(X: np.ndarray, bucket: int = COL_BUCKET) -> np.ndarray:
    """`[n, d]` -> `[n, padded_cols(d)]` with zero columns appended."""
    n, d = X.shape
    m = padded_cols(d, bucket)
    return X if m == d else np.concatenate([X, np.zeros((n, m - d), X.dtype)], axis=1)


@x64
def padded_batch(B: int, minimum: int = 16) -> int:
    """Problems per compiled batch: B rounded up to a power of two, at least `minimum`."""
    return max(minimum, 1 << int(np.ceil(np.log2(max(B, 1)))))
