"""Batches of labels or weights made row by row from a key, never held whole.

A resampling plan is a `[num, n]` array: bootstrap case counts, permuted
labels, a simulation world's drawn decisions. At a million cases and a
thousand resamples that is 8 GB per array in float64, so the fits take such a
batch as a `Rows` source and materialise it a chunk of rows at a time
(`chunk_rows`). Row i comes from its own generator, seeded by the key and i,
so a row is the same whichever chunk asks for it, and a refit of it is the
same at any chunk size (`fit_policies` starts every chunk from the batch's
`expected` problem, not from the chunk's own).

numpy's generators, not JAX's: as reproducible from a key, a few times
faster on a CPU, and no compiled program per shape.
"""

from __future__ import annotations

import os

import jax
import numpy as np

#: Log-odds are clipped to +-this (p within 5e-5 of 0 or 1): a model's
#: "certain" answers would otherwise give log-odds of any size, set by its
#: floating-point rounding (the soft lens's targets, `kernels._logit_ls`, and
#: a soft world's drawn log-odds).
LOGIT_CLIP = 10.0


def _seed(key: jax.Array) -> list[int]:
    return np.asarray(jax.random.key_data(key)).ravel().tolist()


class Rows:
    """A `[num, n]` batch made on demand (subclasses say how a row is made).

    `take(idx)` gives rows `idx` (`[len(idx), width]`, float64, columns past n
    filled with 0); `expected()` gives the mean row `[n]` the batch is drawn
    around, from which every chunk's refits start.
    """

    num: int
    n: int
    ndim = 2
    #: The rows' dtype: float64, or float32 where every value is exact in it
    #: (0/1 decisions: half the bytes to make, gather and pass).
    dtype = np.dtype(np.float64)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.num, self.n)

    def row(self, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def expected(self) -> np.ndarray:
        raise NotImplementedError

    def take(self, idx, width: int | None = None) -> np.ndarray:
        return self._made(idx, self.row, width, self.dtype)

    def _made(self, idx, row, width: int | None, dtype) -> np.ndarray:
        """Rows `idx`, each `row(rng)` from its own generator (seeded by the key and its index)."""
        idx = np.asarray(idx, np.int64).ravel()
        out = _rows_for(idx.size, self.n, width, dtype)
        for j, i in enumerate(idx):
            if not 0 <= i < self.num:
                raise IndexError(f"row {i} of a batch of {self.num}")
            out[j, : self.n] = row(np.random.default_rng([*self._seed, int(i)]))
        return out

    def chunks(self, size: int):
        """(start, `[c, n]` rows) for consecutive chunks of at most `size` rows."""
        return weight_chunks(self, size)

    def __array__(self, dtype=None, copy=None):
        # Only where a caller asks for the whole batch (small n: tests, the
        # calibration studies); the audit's paths take chunks.
        return self.take(np.arange(self.num)).astype(dtype or np.float64, copy=False)


def _rows_for(num: int, n: int, width: int | None, dtype=np.float64) -> np.ndarray:
    """An uninitialised `[num, max(width, n)]` array whose columns past n are 0."""
    out = np.empty((num, max(width or n, n)), dtype)
    out[:, n:] = 0.0
    return out


class BootstrapCounts(Rows):
    """Multinomial case counts of `num` bootstrap resamples of n cases (each row
    sums to n). Refitting with them is refitting on the resampled rows."""

    def __init__(self, key: jax.Array, n: int, num: int):
        self._seed, self.n, self.num = _seed(key), int(n), int(num)

    def row(self, rng):
        return np.bincount(rng.integers(0, self.n, self.n), minlength=self.n).astype(np.float64)

    def expected(self):
        return np.ones(self.n)


class PermutedLabels(Rows):
    """`num` random permutations of the labels y `[n]` (the null's data sets)."""

    def __init__(self, key: jax.Array, y, num: int):
        self.y = np.asarray(y, np.float64)
        self._seed, self.n, self.num = _seed(key), self.y.shape[0], int(num)

    def row(self, rng):
        return self.y[rng.permutation(self.n)]

    def expected(self):
        return np.full(self.n, self.y.mean())


class DrawnDecisions(Rows):
    """Decisions drawn as the data were from one logistic decision-maker.

    Args:
      z: `[n]` the policy's log-odds on the cases.
      trials: Bernoulli trials behind each case's value: 1, k (or an `[n]`
        array) for a share of k, None for a probability without sampling noise.
      residuals: with trials None, `[n]` log-odds residuals added to each
        draw's log-odds, resampled over the cases (`logit_residuals`); None:
        the policy's probabilities exactly.
    """

    def __init__(self, key: jax.Array, z, num: int, trials=1, residuals=None):
        self.z = np.asarray(z, np.float64)
        self._seed, self.n, self.num = _seed(key), self.z.shape[0], int(num)
        self.p = 1.0 / (1.0 + np.exp(-self.z))
        self.trials = None if trials is None else np.broadcast_to(
            np.asarray(trials, np.int64), (self.n,))
        if self.trials is not None and np.all(self.trials == 1):
            self.dtype = np.dtype(np.float32)
        self.residuals = None if residuals is None else np.asarray(residuals, np.float64)

    def _log_odds(self, rng) -> np.ndarray:
        """A draw's log-odds (trials None): the policy's, plus its residuals
        resampled over the cases."""
        if self.residuals is None:
            return self.z
        return self.z + self.residuals[rng.integers(0, self.n, self.n)]

    def row(self, rng):
        if self.trials is None:
            return 1.0 / (1.0 + np.exp(-self._log_odds(rng)))
        if self.dtype == np.float32:
            return rng.random(self.n) < self.p
        return rng.binomial(self.trials, self.p) / self.trials

    def expected(self):
        return self.p

    def take_log_odds(self, idx) -> np.ndarray:
        """Rows `idx` as clipped log-odds (trials None only): what the soft
        lens fits, without the round trip through probabilities."""
        if self.trials is not None:
            raise ValueError("log-odds of drawn decisions exist only without trials")
        return self._made(idx, lambda rng: np.clip(self._log_odds(rng), -LOGIT_CLIP, LOGIT_CLIP),
                          None, np.float64)


class Repeated(Rows):
    """One row `v` `[n]` repeated `num` times: a shared label or weight vector
    given as a batch, so that it shares a compiled refit with a batch of rows."""

    def __init__(self, v, num: int):
        self.v = np.asarray(v, np.float64)
        self.n, self.num = self.v.shape[0], int(num)

    def take(self, idx, width=None):
        out = _rows_for(np.size(idx), self.n, width)
        out[:, : self.n] = self.v
        return out

    def expected(self):
        return self.v


class HalfMembers(Rows):
    """Weights of the half fits of `splits` `[S, n]` (permutations; the first
    n // 2 cases of each form half A): row (s, h, b) weights half h of split s
    by 1 and the other half by 0, repeated for each of `per` problems (b
    fastest)."""

    def __init__(self, splits, per: int = 1):
        self.splits = np.asarray(splits)
        S, self.n = self.splits.shape
        self._in_a = np.zeros((S, self.n), bool)
        self._in_a[np.arange(S)[:, None], self.splits[:, : self.n // 2]] = True
        self.per, self.num = int(per), 2 * S * int(per)

    def take(self, idx, width=None):
        idx = np.asarray(idx, np.int64).ravel()
        s, h = np.divmod(idx // self.per, 2)
        # in_a[s, i]: case i is in half A of split s.
        in_a = self._in_a[s]
        out = _rows_for(idx.size, self.n, width)
        out[:, : self.n] = np.where(h[:, None] == 0, in_a, ~in_a)
        return out

    def expected(self):
        return np.full(self.n, 0.5)


class LeaveOneOut(Rows):
    """`[n, n]` jackknife weights: row i weights every case 1 but case i."""

    def __init__(self, n: int):
        self.n, self.num = int(n), int(n)

    def take(self, idx, width=None):
        idx = np.asarray(idx, np.int64).ravel()
        out = _rows_for(idx.size, self.n, width)
        out[:, : self.n] = 1.0
        out[np.arange(idx.size), idx] = 0.0
        return out

    def expected(self):
        return np.full(self.n, (self.n - 1) / self.n)


def rows_between(A, start: int, stop: int) -> np.ndarray:
    """Rows start..stop of a `[B, n]` array or a `Rows` source."""
    return A.take(np.arange(start, stop)) if isinstance(A, Rows) else np.asarray(A[start:stop])


def weight_chunks(A, size: int):
    """(start, `[c, n]` rows) of a `[B, n]` array or a `Rows` source, `size`
    rows at a time: code that reads a batch the same either way."""
    for start in range(0, A.shape[0], size):
        yield start, rows_between(A, start, min(start + size, A.shape[0]))


#: The most bytes one `[chunk, n]` float64 array of a batched fit may take.
#: A refit holds about eight of them at once (labels, weights, log-odds,
#: residuals, the float64 phase's sigmoid and curvature), so a fit's working
#: memory stays near 1 GB at any n, and at most an eighth of what is free.
CHUNK_BYTES = 128 * 2**20


def available_bytes() -> int:
    """Memory free for new allocations on this machine (a large default where unknown)."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 16 * 2**30


#: The fewest problems per batched call: below this a call's fixed costs (its
#: loop's steps, the batch-wide reductions) outweigh its arithmetic (measured
#: at a million cases: 16 problems cost 1.5 times as much per problem as 64).
MIN_CHUNK = 32


def chunk_rows(n: int, cap: int, budget: int | None = None) -> int:
    """Problems per batched call at n rows: a power of two, at most `cap`, at
    least `MIN_CHUNK`, whose `[chunk, n]` float64 array fits `budget` bytes
    (default `CHUNK_BYTES`, or a 64th of the free memory where that is less)."""
    if budget is None:
        budget = min(CHUNK_BYTES, available_bytes() // 64)
    fit = max(MIN_CHUNK, budget // (8 * max(n, 1)))
    return int(min(cap, 1 << (int(fit).bit_length() - 1)))
