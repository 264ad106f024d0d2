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
* `refit_batch`: BFGS on each problem of a batch, started at the reference
  minimiser with the reference Hessian as the initial metric. Bootstrap and
  permutation problems are small perturbations of the reference, so unit BFGS
  steps converge superlinearly in a handful of gradient evaluations, each of
  cost n d (two GEMMs over the batch). Problems that have not reached the
  tolerance are returned flagged; `fit_policies` refits those with Newton.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.linalg import cho_factor, cho_solve


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


def penalty_vector(d: int, C: float, dtype=jnp.float64) -> jax.Array:
    """Diagonal of the penalty Hessian for theta = [b0, beta].

    Returns:
      `[d + 1]`: 0 for the intercept, 1/C for every cue weight.
    """
    return jnp.concatenate([jnp.zeros(1, dtype), jnp.full(d, 1.0 / C, dtype)])


def add_intercept(X: jax.Array) -> jax.Array:
    """`[n, d]` -> `[n, d + 1]` with a leading column of ones."""
    return jnp.concatenate([jnp.ones((X.shape[0], 1), X.dtype), X], axis=1)


def objective(theta, Xa, y, w, pen):
    """f(theta) for one problem. theta `[d+1]`, Xa `[n, d+1]`, y, w `[n]`."""
    z = Xa @ theta
    return jnp.sum(w * (jax.nn.softplus(z) - y * z)) + 0.5 * jnp.sum(pen * theta**2)


def gradient(theta, Xa, y, w, pen):
    """Gradient of f at theta, `[d+1]`."""
    z = Xa @ theta
    return Xa.T @ (w * (jax.nn.sigmoid(z) - y)) + pen * theta


def hessian(theta, Xa, w, pen):
    """Hessian of f at theta, `[d+1, d+1]` (it does not depend on y)."""
    s = jax.nn.sigmoid(Xa @ theta)
    curvature = w * s * (1.0 - s)
    return (Xa * curvature[:, None]).T @ Xa + jnp.diag(pen)


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

        def halve_cond(c):
            t, k = c
            return (objective(theta - t * step, Xa, y, w, pen) > f0) & (k < max_halvings)

        t, _ = jax.lax.while_loop(halve_cond, lambda c: (c[0] * 0.5, c[1] + 1), (1.0, 0))
        new = theta - t * step
        return new, grad_norm(new), it + 1

    theta, gnorm, it = jax.lax.while_loop(cond, body, (theta0, grad_norm(theta0), 0))
    return theta, gnorm, it


def _bfgs_update(Hinv, s, yv):
    """Inverse-Hessian BFGS update for one problem; skipped when s.y <= 0.

    Hinv `[k, k]`, s = theta_new - theta, yv = g_new - g, both `[k]`.
    """
    sy = s @ yv
    ok = sy > 1e-30 * jnp.maximum(s @ s, 1e-300)
    rho = jnp.where(ok, 1.0 / jnp.where(ok, sy, 1.0), 0.0)
    Hy = Hinv @ yv
    updated = (
        Hinv
        + (rho * rho * (yv @ Hy) + rho) * jnp.outer(s, s)
        - rho * (jnp.outer(Hy, s) + jnp.outer(s, Hy))
    )
    return jnp.where(ok, updated, Hinv)


def refit_batch(Xa, Y, W, pen, theta_ref, H_ref, *, tol, max_iter=30):
    """BFGS refits of a batch of problems that share the cue matrix.

    Every problem starts at `theta_ref` with `H_ref^-1` as its inverse-Hessian
    estimate and takes unit steps (no line search: the problems are close to
    the reference, and any that misbehave stay unconverged and are flagged).
    The loop stops when every problem has converged or after `max_iter`.

    Args:
      Xa: `[n, k]` cues with the intercept column (k = d + 1).
      Y: `[B, n]` labels; W: `[B, n]` weights.
      pen: `[k]` penalty diagonal.
      theta_ref: `[k]` the reference minimiser; H_ref: `[k, k]` its Hessian.
      tol: gradient tolerance per unit weight.

    Returns:
      (theta `[B, k]`, max|grad| / sum(w) `[B]`).
    """
    B = Y.shape[0]
    scale = jnp.maximum(jnp.sum(W, axis=1), 1.0)
    batched_grad = jax.vmap(gradient, in_axes=(0, None, 0, 0, None))
    Hinv0 = cho_solve(cho_factor(H_ref), jnp.eye(H_ref.shape[0], dtype=H_ref.dtype))

    theta = jnp.broadcast_to(theta_ref, (B, theta_ref.shape[0]))
    g = batched_grad(theta, Xa, Y, W, pen)
    Hinv = jnp.broadcast_to(Hinv0, (B,) + Hinv0.shape)

    def gnorm(g):
        return jnp.max(jnp.abs(g), axis=1) / scale

    def cond(state):
        _, g, _, it = state
        return jnp.any(gnorm(g) > tol) & (it < max_iter)

    def body(state):
        theta, g, Hinv, it = state
        active = (gnorm(g) > tol)[:, None]
        step = -jnp.einsum("bij,bj->bi", Hinv, g)
        step = jnp.where(active, step, 0.0)
        new_theta = theta + step
        new_g = batched_grad(new_theta, Xa, Y, W, pen)
        new_Hinv = jax.vmap(_bfgs_update)(Hinv, step, new_g - g)
        return new_theta, new_g, new_Hinv, it + 1

    theta, g, _, _ = jax.lax.while_loop(cond, body, (theta, g, Hinv, 0))
    return theta, gnorm(g)
