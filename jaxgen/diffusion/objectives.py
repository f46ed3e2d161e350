"""What the network predicts, how that becomes ``x_0``, and the training loss.

With ``x_t = alpha * x_0 + sigma * eps`` every parameterization is written as

    x0_hat = c_skip * x_t + c_out * F(c_in * x_t, t)

for the raw network output ``F``; the training target for ``F`` is then
``(x_0 - c_skip * x_t) / c_out`` and the loss is its plain mean squared error:

* ``eps`` (Ho et al. 2020): ``F`` predicts ``eps``; ``c_skip = 1/alpha``, ``c_out = -sigma/alpha``.
* ``x0``: ``F`` predicts ``x_0``; ``c_skip = 0``, ``c_out = 1``.
* ``v`` (Salimans & Ho 2022): ``F`` predicts ``v = alpha * eps - sigma * x_0``;
  ``c_skip = alpha / (alpha^2 + sigma^2)``, ``c_out = -sigma / (alpha^2 + sigma^2)``.
* ``velocity`` (flow matching): ``F`` predicts ``eps - x_0``, the velocity ``dy / dtau`` of
  ``y = x_t / (alpha + sigma) = (1 - tau) x_0 + tau eps`` in ``tau = sigma / (alpha + sigma)``
  (for rectified flow, ``alpha = 1 - t``, ``sigma = t``: ``y = x_t``, ``tau = t``, and ``F`` is
  ``dx_t / dt``); ``c_skip = 1 / (alpha + sigma)``, ``c_out = -sigma / (alpha + sigma)``.
* ``edm`` (Karras et al. 2022, Table 1, for ``alpha = 1``): ``c_skip = s_d^2 / (sigma^2 + s_d^2)``,
  ``c_out = sigma * s_d / sqrt(sigma^2 + s_d^2)``, ``c_in = 1 / sqrt(sigma^2 + s_d^2)``. EDM's loss
  weight ``lambda(sigma) = 1 / c_out^2`` makes its loss exactly this plain MSE on ``F``.

``c_in = 1`` except for ``edm``. All coefficients are float32 arrays broadcastable to ``x_t``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxgen.errors import UserError

PREDICTIONS = ("eps", "x0", "v", "velocity")
PARAMETERIZATIONS = (*PREDICTIONS, "edm")


def _expand(c: jax.Array, x: jax.Array) -> jax.Array:
    """Reshapes per-example coefficients ``[B]`` (or scalars) to broadcast against ``x``."""
    c = jnp.asarray(c, x.dtype)
    return c.reshape(c.shape + (1,) * (x.ndim - c.ndim))


def split_prediction(
    kind: str, pred: jax.Array, x_t: jax.Array, alpha: jax.Array, sigma: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """``(x0, eps)`` implied by a prediction of type ``kind`` (eps, x0, v or velocity) at ``x_t``.

    Valid for any ``alpha > 0, sigma > 0`` (not only ``alpha^2 + sigma^2 = 1``).
    """
    a, s = _expand(alpha, x_t), _expand(sigma, x_t)
    if kind == "eps":
        return (x_t - s * pred) / a, pred
    if kind == "x0":
        return pred, (x_t - a * pred) / s
    if kind == "v":
        norm = a**2 + s**2
        return (a * x_t - s * pred) / norm, (s * x_t + a * pred) / norm
    if kind == "velocity":
        x0 = (x_t - s * pred) / (a + s)
        return x0, pred + x0
    raise UserError(f"prediction type {kind!r}: expected one of {PREDICTIONS}")


def make_prediction(
    kind: str, x0: jax.Array, eps: jax.Array, alpha: jax.Array, sigma: jax.Array
) -> jax.Array:
    """The ``kind`` prediction (eps, x0, v or velocity) for the pair ``(x0, eps)``."""
    if kind == "eps":
        return eps
    if kind == "x0":
        return x0
    if kind == "v":
        return _expand(alpha, x0) * eps - _expand(sigma, x0) * x0
    if kind == "velocity":
        return eps - x0
    raise UserError(f"prediction type {kind!r}: expected one of {PREDICTIONS}")


def convert(
    pred: jax.Array, source: str, target: str, x_t: jax.Array, alpha: jax.Array, sigma: jax.Array
) -> jax.Array:
    """Converts a ``source`` prediction at ``x_t`` into a ``target`` prediction."""
    x0, eps = split_prediction(source, pred, x_t, alpha, sigma)
    return make_prediction(target, x0, eps, alpha, sigma)


@dataclasses.dataclass(frozen=True)
class Preconditioning:
    """``x0_hat = c_skip * x_t + c_out * F(c_in * x_t)`` for one parameterization."""

    kind: str = "eps"  # eps | x0 | v | velocity | edm
    sigma_data: float = 0.5  # only used by edm

    def __post_init__(self):
        if self.kind not in PARAMETERIZATIONS:
            raise UserError(
                f"config key model.diffusion.prediction={self.kind!r}: "
                f"expected one of {PARAMETERIZATIONS}"
            )

    def coefficients(self, alpha: jax.Array, sigma: jax.Array):
        """``(c_in, c_skip, c_out)``, each shaped like ``alpha`` and ``sigma``."""
        alpha = jnp.asarray(alpha, jnp.float32)
        sigma = jnp.asarray(sigma, jnp.float32)
        one, zero = jnp.ones_like(alpha), jnp.zeros_like(alpha)
        if self.kind == "eps":
            return one, 1.0 / alpha, -sigma / alpha
        if self.kind == "x0":
            return one, zero, one
        if self.kind == "v":
            norm = alpha**2 + sigma**2
            return one, alpha / norm, -sigma / norm
        if self.kind == "velocity":
            return one, 1.0 / (alpha + sigma), -sigma / (alpha + sigma)
        sd2 = self.sigma_data**2
        return (
            1.0 / jnp.sqrt(sigma**2 + sd2),
            sd2 / (sigma**2 + sd2) * one,
            sigma * self.sigma_data / jnp.sqrt(sigma**2 + sd2),
        )

    def network_input(self, x_t: jax.Array, alpha: jax.Array, sigma: jax.Array) -> jax.Array:
        c_in, _, _ = self.coefficients(alpha, sigma)
        return _expand(c_in, x_t) * x_t

    def denoised(
        self, output: jax.Array, x_t: jax.Array, alpha: jax.Array, sigma: jax.Array
    ) -> jax.Array:
        """``x0_hat`` from the raw network output ``F``."""
        _, c_skip, c_out = self.coefficients(alpha, sigma)
        return _expand(c_skip, x_t) * x_t + _expand(c_out, x_t) * output

    def target(
        self, x0: jax.Array, x_t: jax.Array, alpha: jax.Array, sigma: jax.Array
    ) -> jax.Array:
        """The ideal network output ``F`` for clean data ``x0``."""
        _, c_skip, c_out = self.coefficients(alpha, sigma)
        return (x0 - _expand(c_skip, x_t) * x_t) / _expand(c_out, x_t)


def min_snr_weight(
    precond: Preconditioning, alpha: jax.Array, sigma: jax.Array, gamma: float
) -> jax.Array:
    """Min-SNR-gamma loss weights (Hang et al. 2023) for the MSE on the network's output ``F``.

    An error ``d`` in ``F`` is an error ``c_out * d`` in ``x0_hat``, so weighting the output's
    MSE by ``min(SNR, gamma) * c_out^2`` (``SNR = alpha^2 / sigma^2``) makes the loss
    ``min(SNR, gamma) * |x0_hat - x0|^2`` for every parameterization: epsilon prediction's own
    weighting (``SNR``) at high noise, capped at ``gamma`` at low noise, where epsilon
    prediction's weight grows without bound. For ``v`` this is
    ``min(SNR, gamma) / (SNR + 1)``. ``alpha``, ``sigma`` ``[B]`` -> weights ``[B]``.
    """
    alpha = jnp.asarray(alpha, jnp.float32)
    sigma = jnp.asarray(sigma, jnp.float32)
    _, _, c_out = precond.coefficients(alpha, sigma)
    return jnp.minimum((alpha / sigma) ** 2, gamma) * c_out**2


def q_sample(x0: jax.Array, eps: jax.Array, alpha: jax.Array, sigma: jax.Array) -> jax.Array:
    """A draw of ``q(x_t | x_0) = N(alpha x_0, sigma^2 I)`` from standard normal ``eps``."""
    return _expand(alpha, x0) * x0 + _expand(sigma, x0) * eps


def guided(uncond: jax.Array, cond: jax.Array, scale: float | jax.Array) -> jax.Array:
    """Classifier-free guidance: ``uncond + scale * (cond - uncond)``.

    ``scale = 0`` is the unconditional prediction, ``scale = 1`` the conditional one and
    ``scale > 1`` extrapolates away from the unconditional model; Ho & Salimans' (2021)
    guidance weight ``w`` is ``scale - 1``. The predictions may be of any parameterization
    (eps, x0, v, F) since each is affine in the others at a fixed ``x_t``.
    """
    return uncond + scale * (cond - uncond)
