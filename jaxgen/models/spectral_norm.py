"""Spectral normalisation (Miyato et al., 2018) with persistent power iteration.

A layer's weight ``W`` (reshaped to a matrix ``[fan_in, out]``) is divided by
an estimate of its largest singular value ``sigma(W) ~= v^T W u``. The
singular-vector estimate ``u`` on the output side (``[1, out]``) and the last
``sigma`` live in the ``"spectral"`` collection; ``u`` is refined by
``n_iters`` power-iteration steps on every call with ``update=True``, so
across training steps the estimate converges (one step per update is what
the paper uses). Callers make ``"spectral"`` mutable when they
pass ``update=True`` and keep the returned collection in the model state.

Every layer here takes ``spectral=False`` to behave as the plain layer, so that
one network definition serves both the normalised and the plain variant.

Precision: the layers compute in the dtype of their input and parameters (bfloat16 for
mixed precision), but the power iteration, ``sigma`` and the division by it are float32,
and the ``"spectral"`` collection (``u``, ``sigma``) is always float32; only the
normalised kernel is cast back to the parameters' dtype.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.models.conv import conv_nhwc

COLLECTION = "spectral"


def _l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x), eps))


def power_iteration(w: jax.Array, u: jax.Array, n_iters: int) -> tuple[jax.Array, jax.Array]:
    """``n_iters`` power-iteration steps on the matrix ``w`` ``[m, n]``.

    Args:
      w: the matrix.
      u: current estimate of the top right-singular vector, ``[1, n]``.

    Returns:
      ``(u, v)``: refined unit vectors ``[1, n]`` and ``[1, m]``.
    """
    v = _l2_normalize(u @ w.T)
    for _ in range(n_iters):
        u = _l2_normalize(v @ w)
        v = _l2_normalize(u @ w.T)
    return u, v


def sigma_estimate(w: jax.Array, u: jax.Array, v: jax.Array) -> jax.Array:
    """``v^T W u``: the largest singular value of ``w`` when ``u``/``v`` have converged."""
    return jnp.squeeze(v @ w @ u.T)


def spectral_normalize(
    module: nn.Module, kernel: jax.Array, update: bool, n_iters: int = 1
) -> jax.Array:
    """``kernel / sigma(kernel)``, keeping ``u`` in ``module``'s ``"spectral"`` collection.

    Args:
      module: the calling linen module (owns the ``u`` variable).
      kernel: weight of any rank; the last axis is the output axis.
      update: refine ``u`` by ``n_iters`` steps and store it (needs a mutable collection).

    Returns:
      The normalised kernel, same shape and dtype. Gradients flow through ``kernel`` only
      (``u`` and ``v`` are constants, as in the paper). ``u``, ``v`` and ``sigma`` are
      float32 whatever the kernel's dtype.
    """
    kernel32 = kernel.astype(jnp.float32)  # a no-op for float32 kernels
    w = kernel32.reshape(-1, kernel.shape[-1])
    u_var = module.variable(
        COLLECTION,
        "u",
        lambda: _l2_normalize(jax.random.normal(module.make_rng("params"), (1, w.shape[1]))),
    )
    sigma_var = module.variable(COLLECTION, "sigma", lambda: jnp.ones((), jnp.float32))
    u = u_var.value
    if update and not module.is_initializing():
        u, _ = power_iteration(jax.lax.stop_gradient(w), u, n_iters)
        u_var.value = u
    v = jax.lax.stop_gradient(_l2_normalize(u @ w.T))
    sigma = sigma_estimate(w, jax.lax.stop_gradient(u), v)
    if update and not module.is_initializing():
        sigma_var.value = jax.lax.stop_gradient(sigma)
    return (kernel32 / sigma).astype(kernel.dtype)


class SNDense(nn.Module):
    """Dense layer ``[..., in] -> [..., features]``, spectrally normalised when ``spectral``."""

    features: int
    spectral: bool = True
    use_bias: bool = True
    n_iters: int = 1
    kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x: jax.Array, update: bool = False) -> jax.Array:
        kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features))
        if self.spectral:
            kernel = spectral_normalize(self, kernel, update, self.n_iters)
        y = x @ kernel
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,))
        return y


class SNConv(nn.Module):
    """2-D convolution, NHWC ``[B, H, W, in] -> [B, H', W', features]``, optionally normalised."""

    features: int
    kernel_size: Sequence[int] = (3, 3)
    strides: Sequence[int] = (1, 1)
    padding: str | Sequence[tuple[int, int]] = "SAME"
    spectral: bool = True
    use_bias: bool = True
    n_iters: int = 1
    kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x: jax.Array, update: bool = False) -> jax.Array:
        shape = (*self.kernel_size, x.shape[-1], self.features)
        kernel = self.param("kernel", self.kernel_init, shape)
        if self.spectral:
            kernel = spectral_normalize(self, kernel, update, self.n_iters)
        y = conv_nhwc(x, kernel, tuple(self.strides), self.padding)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,))
        return y


class SNEmbed(nn.Module):
    """Embedding table ``[num_embeddings, features]`` looked up by int ids, maybe normalised."""

    num_embeddings: int
    features: int
    spectral: bool = True
    n_iters: int = 1

    @nn.compact
    def __call__(self, ids: jax.Array, update: bool = False) -> jax.Array:
        table = self.param(
            "embedding", nn.initializers.normal(0.02), (self.num_embeddings, self.features)
        )
        if self.spectral:
            table = spectral_normalize(self, table, update, self.n_iters)
        return jnp.take(table, ids, axis=0)
