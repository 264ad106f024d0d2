"""Ridge-penalised logistic regression: one exact fit and thousands of refits.

The objective (DESIGN.md, "Policy") for one decision-maker is

    f(theta) = sum_i w_i * logloss(y_i, b0 + x_i . beta) + ||beta||^2 / (2 C)

with theta = [b0, beta] and the intercept b0 unpenalised. `y` may be fractional
in [0, 1]; the loss is linear in y, which lets a batch of problems share one
"reference" problem (the batch-averaged objective) whose minimiser and Hessian
seed every refit.

Two solvers:

* `newton_fit`: damped exact Newton. Used for single fits and as the fallback.
  Cost per iteration: n d^2 for the Hessian.
* `refit_batch`: L-BFGS on each problem of a batch, started at the reference
  minimiser with the reference Hessian as the base metric. Bootstrap and
  permutation problems are perturbations of the reference, so unit steps
  converge in about 20 gradient evaluations, each of cost n d (two GEMMs
  over the batch), most of them in float32, against about 6 exact Newton
  steps of cost n d^2 each. The batch narrows to the problems still
  iterating (`narrowing`). Problems that have not reached the tolerance are
  returned flagged; `fit_policies` refits those with Newton.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import cho_factor, cho_solve
from numpy.typing import ArrayLike

from kernels._x64 import x64


@x64
def matmul(a, b) -> jax.Array:
    """`a @ b` at full precision on every backend.

    XLA's default on Ampere and Hopper GPUs computes float32 products in TF32
    (10-bit mantissa): gradients come out ~1e-3 off, so float32 refits never reach
    their tolerance. Measured on an H100: every float32 refit unconverged and 10x
    slower through the Newton fallback, with |d beta| ~ 1e-3. CPUs compute full
    precision either way, so this costs nothing there.
    """
    return jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST)


class PolicyFit(NamedTuple):
    """A fitted policy, or a batch of them (leading batch axis on every field).

    Attributes:
      intercept: `[]` or `[B]`, the unpenalised intercept b0.
      beta: `[d]` or `[B, d]`, the cue weights.
      max_abs_grad: `[]` or `[B]`, max |gradient of f| at the returned point,
        divided by the total weight (so it is comparable across n).
      converged: `[]` or `[B]`, max_abs_grad <= the tolerance used.
    """

    intercept: jax.Array
    beta: jax.Array
    max_abs_grad: jax.Array
    converged: jax.Array


@x64
def penalty_vector(d: int, C: float, dtype=jnp.float64) -> jax.Array:
    """Diagonal of the penalty Hessian for theta = [b0, beta].

    Returns:
      `[d + 1]`: 0 for the intercept, 1/C for every cue weight.
    """
    # numpy, not jax.numpy: built once per fit call outside the compiled
    # programs, where eager JAX operations cost more than the data they touch.
    return np.concatenate([np.zeros(1, dtype), np.full(d, 1.0 / C, dtype)])


@x64
def add_intercept(X: ArrayLike) -> np.ndarray:
    """`[n, d]` -> `[n, d + 1]` with a leading column of ones (numpy, as above)."""
    X = np.asarray(X)
    return np.concatenate([np.ones((X.shape[0], 1), X.dtype), X], axis=1)


@x64
def objective(theta, Xa, y, w, pen):
    """f(theta) for one problem. theta `[d+1]`, Xa `[n, d+1]`, y, w `[n]`."""
    z = matmul(Xa, theta)
    return jnp.sum(w * (jax.nn.softplus(z) - y * z)) + 0.5 * jnp.sum(pen * theta**2)


@x64
def gradient(theta, Xa, y, w, pen):
    """Gradient of f at theta, `[d+1]`."""
    z = matmul(Xa, theta)
    return matmul(Xa.T, w * (jax.nn.sigmoid(z) - y)) + pen * theta


@x64
def hessian(theta, Xa, w, pen):
    """Hessian of f at theta, `[d+1, d+1]` (it does not depend on y)."""
    s = jax.nn.sigmoid(matmul(Xa, theta))
    curvature = w * s * (1.0 - s)
    return matmul((Xa * curvature[:, None]).T, Xa) + jnp.diag(pen)


@x64
def newton_fit(Xa, y, w, pen, theta0, *, tol, max_iter=100, max_halvings=30):
    """Damped Newton for one problem, to max|grad| / sum(w) <= tol.

    Each step is halved until f does not increase, which keeps the iteration
    monotone on nearly separable data where a full step can overshoot.

    Args:
      Xa: `[n, d+1]` cues with the intercept column.
      y: `[n]` labels in [0, 1].
      w: `[n]` non-negative weights.
      pen: `[d+1]` penalty diagonal (see `penalty_vector`).
      theta0: `[d+1]` starting point.
      tol: gradient tolerance per unit weight.

    Returns:
      (theta `[d+1]`, max|grad| / sum(w) `[]`, iterations `[]`).
    """
    scale = jnp.maximum(jnp.sum(w), 1.0)

    def grad_norm(theta):
        return jnp.max(jnp.abs(gradient(theta, Xa, y, w, pen))) / scale

    def cond(state):
        _, gnorm, it = state
        return (gnorm > tol) & (it < max_iter)

    def body(state):
        theta, _, it = state
        g = gradient(theta, Xa, y, w, pen)
        H = hessian(theta, Xa, w, pen)
        step = cho_solve(cho_factor(H), g)
        f0 = objective(theta, Xa, y, w, pen)

        # A step that changes f by less than its rounding error is accepted: near
        # the optimum f cannot resolve the decrease, but the gradient still can.
        slack = 1e-12 * (1.0 + jnp.abs(f0))

        def halve_cond(c):
            t, k = c
            return (objective(theta - t * step, Xa, y, w, pen) > f0 + slack) & (k < max_halvings)

        t, _ = jax.lax.while_loop(halve_cond, lambda c: (c[0] * 0.5, c[1] + 1), (1.0, 0))
        new = theta - t * step
        return new, grad_norm(new), it + 1

    theta, gnorm, it = jax.lax.while_loop(cond, body, (theta0, grad_norm(theta0), 0))
    return theta, gnorm, it


@x64
def batch_gradient(Theta, Xa, Y, W, pen):
    """Gradients of a batch of problems that share the cue matrix.

    Two GEMMs over the batch instead of B matrix-vector products. The sigmoid is
    written through tanh: one transcendental per element, measurably cheaper on
    CPUs than exp plus a division, and exact to rounding.

    Args:
      Theta: `[B, k]` points; Xa: `[n, k]`.
      Y, W: `[n]` (shared by the batch) or `[B, n]`.
      pen: `[k]` penalty diagonal.

    Returns:
      `[B, k]`.
    """
    Z = matmul(Theta, Xa.T)
    R = W * (0.5 * jnp.tanh(0.5 * Z) + 0.5 - Y)
    return matmul(R, Xa) + pen * Theta


class LBFGSMemory(NamedTuple):
    """The last `m` curvature pairs of every problem in a batch (a ring buffer).

    Attributes:
      S: `[B, m, k]` steps theta_new - theta.
      Yv: `[B, m, k]` gradient changes g_new - g.
      rho: `[B, m]` 1 / (s . y), 0 for an empty or skipped slot.
      count: `[]` pairs written so far (slot of pair i is i mod m).
    """

    S: jax.Array
    Yv: jax.Array
    rho: jax.Array
    count: jax.Array


@x64
def empty_memory(B: int, m: int, k: int, dtype) -> LBFGSMemory:
    return LBFGSMemory(jnp.zeros((B, m, k), dtype), jnp.zeros((B, m, k), dtype),
                       jnp.zeros((B, m), dtype), jnp.zeros((), jnp.int32))


@x64
def lbfgs_direction(G, memory: LBFGSMemory, H0inv):
    """-H G for every problem, H the L-BFGS inverse-Hessian estimate (two-loop recursion).

    The base metric `H0inv` is one `[k, k]` matrix shared by the batch (the
    reference problem's inverse Hessian), so applying it is a single GEMM; the
    per-problem state is O(m k), not the O(k^2) of dense BFGS, which is what
    makes an iteration cost little more than its gradient.

    Args:
      G: `[B, k]` gradients; memory: see `LBFGSMemory`; H0inv: `[k, k]`.

    Returns:
      `[B, k]` the quasi-Newton step.
    """
    m = memory.rho.shape[1]

    def pair(j):  # the j-th newest pair's slot and 1 / (s . y), 0 if not yet written
        slot = (memory.count - 1 - j) % m
        return slot, jnp.where(j < memory.count, memory.rho[:, slot], 0.0)

    # Rolled loops, not unrolled Python ones: the same arithmetic, and a refit
    # program compiles 0.6 to 0.8 s sooner (measured on a world batch of
    # 1,000 problems: 3.2-3.5 s against 3.8-4.3 s to the first result, the
    # same 135-140 ms a call after it).
    def newest_first(j, carry):
        q, alphas = carry
        slot, rho = pair(j)
        a = rho * jnp.sum(memory.S[:, slot] * q, axis=1)
        return q - a[:, None] * memory.Yv[:, slot], alphas.at[:, j].set(a)

    q, alphas = jax.lax.fori_loop(0, m, newest_first, (G, jnp.zeros(memory.rho.shape, G.dtype)))

    def oldest_first(i, z):
        j = m - 1 - i
        slot, rho = pair(j)
        b = rho * jnp.sum(memory.Yv[:, slot] * z, axis=1)
        return z + (alphas[:, j] - b)[:, None] * memory.S[:, slot]

    return -jax.lax.fori_loop(0, m, oldest_first, matmul(q, H0inv))


@x64
def remember(memory: LBFGSMemory, S, Yv) -> LBFGSMemory:
    """Store one pair per problem; a pair with s.y <= 0 (no curvature) is stored inert."""
    sy = jnp.sum(S * Yv, axis=1)
    ok = sy > 1e-30 * jnp.maximum(jnp.sum(S * S, axis=1), 1e-300)
    slot = memory.count % memory.rho.shape[1]
    return LBFGSMemory(memory.S.at[:, slot].set(S), memory.Yv.at[:, slot].set(Yv),
                       memory.rho.at[:, slot].set(jnp.where(ok, 1.0 / jnp.where(ok, sy, 1.0), 0.0)),
                       memory.count + 1)


def narrowing(B: int) -> tuple[int, ...]:
    """The batch sizes an L-BFGS phase of B problems narrows to as they converge.

    Converged problems are frozen but, in a batch, still cost their share of
    every gradient's GEMMs: measured on a simulation world's half fits (1,000
    problems, 512 rows, 65 columns), half the problems had converged after 10
    of the float32 phase's 27 iterations and 99% after 20, while the slowest
    kept the whole batch iterating. So the phase runs on the whole batch until
    at most B / 16 problems are left, then on those B / 16 (gathered, with
    their curvature memory) until all have converged: each problem's iterates
    are the same, to rounding, wherever it runs, and the tail costs a 16th of a full
    iteration. Each narrowing compiles its own copy of the iteration (about
    0.5 s of compiling), so a batch narrows once per 16x while 16 or more
    problems remain. Measured on that batch: 88 ms narrowing to B / 16,
    141 ms whole, 84 ms narrowing twice by 8 (compiling 1.3 s longer).

    Returns:
      the sizes, B first; (B,) below 256 problems.
    """
    sizes = [B]
    while sizes[-1] // NARROW >= 16:
        sizes.append(sizes[-1] // NARROW)
    return tuple(sizes)


#: How much a narrowing L-BFGS phase narrows its batch at each step (`narrowing`).
NARROW = 16


def _lbfgs_loop(gradient_at, Theta, G, memory, H0inv, scale, *, tol, max_iter, allow, it=0):
    """Unit-step L-BFGS until at most `allow` problems have max|grad| / scale > tol,
    or `max_iter` iterations in all (`it`: those already run). `gradient_at(Theta)`
    gives `[B, k]` gradients.

    Converged problems are frozen (zero step).

    Returns:
      (Theta `[B, k]`, G `[B, k]`, memory, iterations run in all).
    """
    def cond(state):
        _, G, _, it = state
        return (jnp.sum(_gnorm(G, scale) > tol) > allow) & (it < max_iter)

    dt = memory.S.dtype  # the directions' precision (may be below Theta's)

    def body(state):
        Theta, G, memory, it = state
        active = (_gnorm(G, scale) > tol)[:, None]
        step = jnp.where(active, lbfgs_direction(G.astype(dt), memory, H0inv), 0.0)
        new_Theta = Theta + step.astype(Theta.dtype)
        new_G = gradient_at(new_Theta)
        return new_Theta, new_G, remember(memory, step, (new_G - G).astype(dt)), it + 1

    return jax.lax.while_loop(cond, body, (Theta, G, memory, it))


def _narrowing_loop(gradient_for, Theta, G, memory, H0inv, scale, *, tol, max_iter):
    """`_lbfgs_loop` on a batch that narrows to its unconverged problems (`narrowing`).

    Args:
      gradient_for: `gradient_for(rows)` gives the gradient function of the
        problems `rows` (`[b]` indices into the batch; None: all of them).
      Theta, G: `[B, k]`; memory: `LBFGSMemory` of the batch; scale: `[B]`.

    Returns:
      (Theta `[B, k]`, G `[B, k]`, memory). A problem left behind when the
      batch narrowed has converged; its curvature memory is forgotten (as a
      frozen problem's is, by the inert pairs written while it waits).
    """
    sizes = narrowing(Theta.shape[0])
    Theta, G, memory, it = _lbfgs_loop(gradient_for(None), Theta, G, memory, H0inv, scale,
                                       tol=tol, max_iter=max_iter,
                                       allow=sizes[1] if len(sizes) > 1 else 0)
    for i, size in enumerate(sizes[1:], 1):
        # The unconverged first (a stable sort of the converged flags), then
        # converged ones to fill the size; each row once.
        rows = jnp.argsort(_gnorm(G, scale) <= tol, stable=True)[:size]
        sub = LBFGSMemory(memory.S[rows], memory.Yv[rows], memory.rho[rows], memory.count)
        t, g, sub, it = _lbfgs_loop(gradient_for(rows), Theta[rows], G[rows], sub, H0inv,
                                    scale[rows], tol=tol, max_iter=max_iter,
                                    allow=sizes[i + 1] if i + 1 < len(sizes) else 0, it=it)
        Theta, G = Theta.at[rows].set(t), G.at[rows].set(g)
        # rho 0 makes a pair inert: the rows left behind forget theirs.
        memory = LBFGSMemory(memory.S.at[rows].set(sub.S), memory.Yv.at[rows].set(sub.Yv),
                             jnp.zeros_like(memory.rho).at[rows].set(sub.rho), sub.count)
    return Theta, G, memory


def _gnorm(G, scale):
    """`[B]` max |gradient| per unit weight (`scale`: `_weight_scale`)."""
    return jnp.max(jnp.abs(G), axis=1) / scale


def _weight_scale(W, B: int, n: int):
    """`[B]` total weight of each problem (at least 1): the gradient's unit."""
    return jnp.maximum(jnp.sum(jnp.broadcast_to(W, (B, n)), axis=1), 1.0)


def _rows(A, rows):
    """A batch's `[B, ...]` array on the problems `rows` (None: all); an `[n]`
    array shared by the batch stays as it is."""
    return A if rows is None or A.ndim == 1 else A[rows]


def _lbfgs_phase(Xa, Y, W, pen, Theta, memory, H0inv, *, tol, max_iter):
    """L-BFGS on every problem in `Xa`'s dtype (`_narrowing_loop`), gradients exact.

    Returns:
      (Theta `[B, k]`, memory, gnorm `[B]`).
    """
    B = Theta.shape[0]
    scale = _weight_scale(W, B, Xa.shape[0])
    G = batch_gradient(Theta, Xa, Y, W, pen)
    Theta, G, memory = _narrowing_loop(
        lambda rows: (lambda T: batch_gradient(T, Xa, _rows(Y, rows), _rows(W, rows), pen)),
        Theta, G, memory, H0inv, scale, tol=tol, max_iter=max_iter)
    return Theta, memory, _gnorm(G, scale)


def increment_gradient(Theta0, Xa, Y, W, pen):
    """The float64 gradient of a batch near `Theta0` from float32 arithmetic.

    A float64 gradient needs float64 products of `[B, n]` by `[n, k]`; near
    convergence the steps are small, and so is what they change. With the
    gradient G0, sigmoid s0 and curvature q0 = s0 (1 - s0) at Theta0 (float64,
    once), the gradient at Theta0 + D is G0 + pen D plus

        Xa' w (sigmoid(z0 + dz) - s0),  dz = D Xa',
        sigmoid(z0 + dz) - s0 = q0 expm1(dz) / (1 + s0 expm1(dz)),

    an exact identity, with expm1 taken to third order (its error, dz^4 / 24,
    is far below float32's rounding at the steps left after the float32
    phase). Only the increments run in float32: their relative error (~1e-7)
    applies to |dz| ~ 1e-5, not to |z| ~ 1, so the result stays within a
    tenth of the refits' float64 tolerance at float32 cost (tested); the
    refit's last, exact gradient decides convergence regardless.

    Args:
      Theta0: `[B, k]` float64; Xa: `[n, k]` float64; Y, W: `[n]` or `[B, n]`.

    Returns:
      `gradient_for(rows)`: the gradient function `[b, k]` -> `[b, k]` of the
      problems `rows` (`[b]` indices; None: all B), at Theta0[rows] + D.
    """
    f32 = jnp.float32
    S0 = 0.5 * jnp.tanh(0.5 * matmul(Theta0, Xa.T)) + 0.5
    G0 = matmul(W * (S0 - Y), Xa) + pen * Theta0
    s0, q0 = S0.astype(f32), (S0 * (1.0 - S0)).astype(f32)
    Xa32, W32 = Xa.astype(f32), W.astype(f32)

    def gradient_for(rows):
        g0, s, q, w = _rows(G0, rows), _rows(s0, rows), _rows(q0, rows), _rows(W32, rows)

        def gradient_at(D):
            dz = matmul(D.astype(f32), Xa32.T)
            em = dz * (1.0 + dz * (0.5 + dz * (1.0 / 6.0)))  # expm1 to O(dz^4)
            dS = q * em / (1.0 + s * em)
            return g0 + matmul(w * dS, Xa32).astype(Theta0.dtype) + pen * D

        return gradient_at

    return gradient_for


#: A float64 refit first runs in float32 down to this gradient tolerance (per
#: unit weight; float32 gradients are accurate to about 1e-7 there), then
#: finishes in float64 from that point and that curvature memory. Most
#: iterations thus run at float32 cost while the result keeps float64 accuracy.
WARM_TOL_FLOAT32 = 1e-6
#: L-BFGS pairs kept per problem. Measured at n = 1,000, p = 45: 2 to 20 pairs
#: need the same ~19 iterations (the reference metric does most of the work),
#: and 4-5 is fastest.
MEMORY = 5


@x64
def refit_batch(Xa, Y, W, pen, theta_ref, H_ref, *, tol, max_iter=30, float32_first=None,
                float32_only=False):
    """L-BFGS refits of a batch of problems that share the cue matrix.

    Every problem starts at `theta_ref` with `H_ref^-1` as its base inverse-Hessian
    metric and takes unit steps (no line search: the problems are close to
    the reference, and any that misbehave stay unconverged and are flagged).
    In float64 the first iterations run in float32 (see `WARM_TOL_FLOAT32`).

    Args:
      Xa: `[n, k]` cues with the intercept column (k = d + 1).
      Y, W: labels and weights, `[n]` (shared) or `[B, n]`; at least one is `[B, n]`.
      pen: `[k]` penalty diagonal.
      theta_ref: `[k]` the reference minimiser; H_ref: `[k, k]` its Hessian.
      tol: gradient tolerance per unit weight.
      max_iter: L-BFGS iterations per precision phase.
      float32_first: run the float32 phase first (float64 only); None: when
        tol < `WARM_TOL_FLOAT32` (tol must then be concrete, not traced).
      float32_only: float64 data fitted by the float32 phase alone, to `tol`
        (at least `WARM_TOL_FLOAT32`, where float32 gradients are still
        accurate): for refits that need no more (`kernels._world.WORLD_TOL`).

    Returns:
      (theta `[B, k]`, max|grad| / sum(w) `[B]`).
    """
    B = Y.shape[0] if Y.ndim == 2 else W.shape[0]
    dtype, k = Xa.dtype, Xa.shape[1]
    H0inv = cho_solve(cho_factor(H_ref), jnp.eye(k, dtype=dtype))
    Theta = jnp.broadcast_to(theta_ref, (B, k))
    memory = empty_memory(B, MEMORY, k, dtype)
    if float32_first is None:
        float32_first = tol < WARM_TOL_FLOAT32
    if dtype == jnp.float64 and (float32_first or float32_only):
        f32 = jnp.float32
        Theta, memory, gnorm = _lbfgs_phase(
            Xa.astype(f32), Y.astype(f32), W.astype(f32), pen.astype(f32), Theta.astype(f32),
            jax.tree.map(lambda a: a if a.dtype == jnp.int32 else a.astype(f32), memory),
            H0inv.astype(f32), tol=tol if float32_only else WARM_TOL_FLOAT32,
            max_iter=max_iter)
        Theta = Theta.astype(dtype)
        if float32_only:
            return Theta, gnorm.astype(dtype)
        # The float64 phase on float32 increments (`increment_gradient`), its
        # directions in float32 too (they need only point downhill; the
        # gradients they are judged by are float64), then one exact float64
        # gradient says which problems converged.
        gradient_for = increment_gradient(Theta, Xa, Y, W, pen)
        scale = _weight_scale(W, B, Xa.shape[0])
        D = jnp.zeros_like(Theta)
        D, _, _ = _narrowing_loop(gradient_for, D, gradient_for(None)(D), memory,
                                  H0inv.astype(f32), scale, tol=tol, max_iter=max_iter)
        Theta = Theta + D
        return Theta, _gnorm(batch_gradient(Theta, Xa, Y, W, pen), scale)
    Theta, _, gnorm = _lbfgs_phase(Xa, Y, W, pen, Theta, memory, H0inv, tol=tol,
                                   max_iter=max_iter)
    return Theta, gnorm
