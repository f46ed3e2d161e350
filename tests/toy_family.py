"""A family defined outside ``jaxgen/``: every pixel channel an independent categorical.

``config.family = "tests.toy_family:ToyMethod"`` names it by import path
(:func:`jaxgen.methods.get_method_class`), so it trains, samples, evaluates and appears in the
comparison tables with nothing in ``jaxgen/`` or ``experiments/`` edited
(``tests/test_toy_family.py``; config: ``tests/toy_config.py``).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxgen.methods.base import Method

LEVELS = 256  # 8-bit pixel values


class ToyMethod(Method):
    """``p(x) = prod_{h,w,c} softmax(logits[h, w, c])[x_hwc]``; params ``{"logits": float32
    [H, W, C, 256]}``. The likelihood is exact, in nats and bits per dimension."""

    @property
    def has_likelihood(self) -> bool:
        return True

    def init_params(self, rng, batch):
        del rng, batch
        return {"logits": jnp.zeros((*self.data.image_shape, LEVELS), jnp.float32)}

    def _nll(self, params, images) -> jax.Array:
        """uint8 ``[B, H, W, C]`` -> negative log-likelihood ``[B]`` in nats (float32)."""
        log_probs = jax.nn.log_softmax(params["logits"].astype(jnp.float32), axis=-1)
        picked = jnp.sum(jax.nn.one_hot(images, LEVELS) * log_probs, axis=-1)  # [B, H, W, C]
        return -jnp.sum(picked, axis=(1, 2, 3))

    def _bits_per_dim(self, nll: jax.Array) -> jax.Array:
        return nll / (math.prod(self.data.image_shape) * math.log(2.0))

    def loss(self, params, batch, rng):
        del rng
        bpd = jnp.mean(self._bits_per_dim(self._nll(params, batch["image"])))
        return bpd, {"bits_per_dim": bpd}

    def likelihood(self, params, batch, rng):
        del rng
        nll = self._nll(params, batch["image"])
        return {"nll": nll, "bits_per_dim": self._bits_per_dim(nll)}

    def sample(self, params, rng, num, conditioning=None, options=None):
        """float32 ``[num, H, W, C]`` in [0, 1]; row ``i`` uses ``fold_in(rng, i)`` only."""
        del conditioning, options
        keys = jax.vmap(lambda i: jax.random.fold_in(rng, i))(jnp.arange(num))
        draw = jax.vmap(lambda key: jax.random.categorical(key, params["logits"], axis=-1))
        return draw(keys).astype(jnp.float32) / (LEVELS - 1)

    @classmethod
    def describe(cls, config):
        generic = super().describe(config)
        return generic.replace(
            architecture="per-pixel categorical, 256 levels",
            training="max. likelihood",
            likelihood_bound="exact",
        )
