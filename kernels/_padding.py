"""Zero-weight row padding, so that fits of nearby case counts share one compiled
program (`compare_policies`, `fit_halves`)."""

from __future__ import annotations

import numpy as np


#: Case counts are padded up to a multiple of this with zero-weight rows, so
#: that case sets of nearby sizes (the human study's groups judged 48 to 94
#: cases each) share one compiled program instead of compiling one per n.
ROW_BUCKET = 64


def padded_rows(n: int, bucket: int = ROW_BUCKET) -> int:
    """The row count a problem of n cases is fitted at (n rounded up to `bucket`)."""
    return -(-n // bucket) * bucket


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
