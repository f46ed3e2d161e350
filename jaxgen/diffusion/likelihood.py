"""The variational bound of DDPM (Ho et al. 2020, Eq. 5) in bits per dimension.

For 8-bit data scaled to ``x_0 in [-1, 1]`` and the discrete process of
:mod:`jaxgen.diffusion.schedules` (0-based timesteps ``0..T-1``):

  -log p(x_0) <= L_prior + sum_{t=1}^{T-1} L_t + L_dec
  L_prior = KL(q(x_{T-1} | x_0) || N(0, I))
  L_t     = E_{x_t ~ q(x_t|x_0)} KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))
  L_dec   = E_{x_0' ~ q(x_0'|x_0)} -log p(x_0 | x_0')   (the paper's L_0: x_0' is its x_1)

``p(x_{t-1} | x_t)`` is the forward posterior with ``x_0`` replaced by the model's ``x0_hat``
and variance ``beta~_t`` ("small") or ``beta_t`` ("large"); the decoder is the discretized
Gaussian of the paper (bins of width 2/255, open-ended outer bins) with mean ``x0_hat`` and
variance ``beta~`` of the second timestep for both variance choices, as in the reference
implementation. The sum over ``t`` is computed exactly (``num_terms = 0``, ``T - 1`` network
evaluations) or estimated without bias by stratified sampling of ``num_terms`` timesteps.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.diffusion.schedules import DiscreteSchedule
from jaxgen.errors import UserError

VARIANCES = ("small", "large")
# x0_hat(x_t [B, ...], t int32 [B]) -> [B, ...]
X0Fn = Callable[[jax.Array, jax.Array], jax.Array]


def _sum_except_batch(x: jax.Array) -> jax.Array:
    return x.reshape(x.shape[0], -1).sum(-1)


def normal_kl(mean1, log_var1, mean2, log_var2) -> jax.Array:
    """Elementwise ``KL(N(mean1, e^log_var1) || N(mean2, e^log_var2))`` in nats."""
    return 0.5 * (
        log_var2 - log_var1 + jnp.exp(log_var1 - log_var2)
        + (mean1 - mean2) ** 2 * jnp.exp(-log_var2) - 1.0
    )  # fmt: skip


def _log_diff_exp(a: jax.Array, b: jax.Array) -> jax.Array:
    """``log(exp(a) - exp(b))`` for ``a >= b``, floored at a bin probability of ``1e-12``."""
    return jnp.maximum(a + jnp.log1p(-jnp.exp(jnp.minimum(b - a, -1e-12))), math.log(1e-12))


def discretized_gaussian_log_prob(x: jax.Array, mean: jax.Array, log_scale: jax.Array) -> jax.Array:
    """Elementwise log-probability, in nats, of 8-bit values ``x`` (scaled to [-1, 1]).

    Each value owns the bin ``[x - 1/255, x + 1/255]``; the bins of -1 and 1 extend to
    ``-inf`` and ``+inf`` so that the 256 probabilities sum to one.
    """
    inv_std = jnp.exp(-log_scale)
    upper = inv_std * (x - mean + 1.0 / 255.0)
    lower = inv_std * (x - mean - 1.0 / 255.0)
    log_ndtr = jax.scipy.special.log_ndtr
    log_cdf_upper, log_sf_lower = log_ndtr(upper), log_ndtr(-lower)
    # log(Phi(upper) - Phi(lower)) on the side of the mean where the tail is accurate.
    mid = jnp.where(
        lower > 0,
        _log_diff_exp(log_sf_lower, log_ndtr(-upper)),
        _log_diff_exp(log_cdf_upper, log_ndtr(lower)),
    )
    return jnp.where(x < -0.999, log_cdf_upper, jnp.where(x > 0.999, log_sf_lower, mid))


class VariationalBound:
    """Per-example terms of the bound for one schedule; all arrays float32."""

    def __init__(self, schedule: DiscreteSchedule, variance: str = "large"):
        if variance not in VARIANCES:
            raise UserError(
                f"config key model.diffusion.variance={variance!r}: expected one of {VARIANCES}"
            )
        self.timesteps = schedule.timesteps
        f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
        abar, abar_prev = schedule.alpha_bar, schedule.alpha_bar_prev
        self.alphas, self.sigmas = f32(schedule.alphas), f32(schedule.sigmas)
        post_var = schedule.posterior_variance
        self.coef_x0 = f32(np.sqrt(abar_prev) * schedule.betas / (1.0 - abar))
        self.coef_xt = f32(np.sqrt(1.0 - schedule.betas) * (1.0 - abar_prev) / (1.0 - abar))
        # Index 0 holds the decoder's variance (beta~ of the second timestep).
        self.log_var_q = f32(np.log(np.append(post_var[1], post_var[1:])))
        model_var = post_var if variance == "small" else schedule.betas
        self.log_var_p = f32(np.log(np.append(post_var[1], model_var[1:])))

    def _expand(self, c: jax.Array, x: jax.Array) -> jax.Array:
        return c.reshape(c.shape + (1,) * (x.ndim - c.ndim))

    def posterior_mean(self, x0: jax.Array, x_t: jax.Array, t: jax.Array) -> jax.Array:
        """Mean of ``q(x_{t-1} | x_t, x_0)`` for int timesteps ``t`` ``[B]``."""
        return self._expand(self.coef_x0[t], x0) * x0 + self._expand(self.coef_xt[t], x0) * x_t

    def prior_nats(self, x0: jax.Array) -> jax.Array:
        """``L_prior`` per example, ``[B]``."""
        a, s = self.alphas[-1], self.sigmas[-1]
        kl = normal_kl(a * x0, 2.0 * jnp.log(s), 0.0, 0.0)
        return _sum_except_batch(kl)

    def term_nats(self, x0_fn: X0Fn, x0: jax.Array, t: jax.Array, rng: jax.Array) -> jax.Array:
        """One draw of ``L_t`` (``t >= 1``) or ``L_dec`` (``t == 0``) per example, ``[B]``."""
        eps = jax.random.normal(rng, x0.shape, x0.dtype)
        x_t = self._expand(self.alphas[t], x0) * x0 + self._expand(self.sigmas[t], x0) * eps
        x0_hat = x0_fn(x_t, t)
        mean_p = self.posterior_mean(x0_hat, x_t, t)
        log_var_p = self._expand(self.log_var_p[t], x0)
        kl = normal_kl(self.posterior_mean(x0, x_t, t), self._expand(self.log_var_q[t], x0),
                       mean_p, log_var_p)  # fmt: skip
        nll = -discretized_gaussian_log_prob(x0, mean_p, 0.5 * log_var_p)
        return _sum_except_batch(jnp.where(self._expand(t, x0) == 0, nll, kl))

    def nats(self, x0_fn: X0Fn, x0: jax.Array, rng: jax.Array, num_terms: int = 0) -> dict:
        """The bound per example: ``{"prior", "decoder", "diffusion", "total"}``, nats ``[B]``.

        Args:
          x0_fn: the model, ``x0_hat(x_t, t)``.
          x0: data in [-1, 1] on the 8-bit grid, ``[B, ...]``.
          rng: PRNG key for ``x_t`` and the sampled timesteps.
          num_terms: 0 for the exact sum over ``t = 1..T-1``; otherwise the number of
            strata (one sampled timestep each) of an unbiased estimate of that sum.
        """
        batch = x0.shape[0]
        dec_rng, t_rng, terms_rng = jax.random.split(rng, 3)
        decoder = self.term_nats(x0_fn, x0, jnp.zeros((batch,), jnp.int32), dec_rng)
        num = self.timesteps - 1
        if num_terms <= 0 or num_terms >= num:
            ts = jnp.arange(1, self.timesteps, dtype=jnp.int32)
            weights = jnp.ones((num,), jnp.float32)
        else:
            edges = np.linspace(1, self.timesteps, num_terms + 1).round().astype(np.int32)
            ts = jax.random.randint(t_rng, (num_terms,), edges[:-1], edges[1:])
            weights = jnp.asarray(edges[1:] - edges[:-1], jnp.float32)
        keys = jax.random.split(terms_rng, ts.shape[0])

        def one(args):
            t, key = args
            return self.term_nats(x0_fn, x0, jnp.full((batch,), t, jnp.int32), key)

        per_t = jax.lax.map(one, (ts, keys))  # [K, B]
        diffusion = jnp.sum(weights[:, None] * per_t, axis=0)
        prior = self.prior_nats(x0)
        return {
            "prior": prior,
            "decoder": decoder,
            "diffusion": diffusion,
            "total": prior + decoder + diffusion,
        }


def nats_to_bits_per_dim(nats: jax.Array, num_dims: int) -> jax.Array:
    return nats / (num_dims * math.log(2.0))
