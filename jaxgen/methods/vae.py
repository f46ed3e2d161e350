"""Variational autoencoder (Kingma & Welling 2014), beta-VAE and conditional VAE.

Reads as the objective does, per image ``x`` with ``D = H * W * C`` values:

  q(z|x) = N(mean(x), diag(exp(log_var(x))))        encoder
  z = mean + exp(log_var / 2) * eps, eps ~ N(0, I)   reparameterisation
  log p(x|z) = sum_d log DLogistic(x_d; mu_d(z), s_d(z))   8-bit likelihood
  ELBO = E_q[log p(x|z)] - KL(q(z|x) || N(0, I))
  loss = (-E_q[log p(x|z)] + beta * KL) / D          nats per dimension

The likelihood is the discretized logistic of PixelCNN++ (one component per
value), so it is a proper distribution over the 256 pixel values and bits/dim
are comparable with other families. The negative log-likelihood is estimated
with the importance-weighted bound (IWAE, Burda et al. 2016) with ``k``
samples: ``log p(x) >= E[log 1/k sum_i p(x, z_i) / q(z_i|x)]``.
"""

from __future__ import annotations

import dataclasses
import math
import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.distributions import (
    discretized_logistic_log_prob,
    gaussian_kl_to_standard,
    gaussian_log_prob,
)
from jaxgen.errors import UserError
from jaxgen.images import make_grid, save_png, to_uint8
from jaxgen.methods.base import Method, images_to_symmetric
from jaxgen.models.vae_nets import Decoder, Encoder, VAENetConfig


@dataclasses.dataclass(frozen=True)
class VAEConfig:
    net: VAENetConfig
    beta: float = 1.0
    iwae_k: int = 64  # importance samples for the NLL estimate

    @classmethod
    def from_config(cls, model, num_classes: int) -> VAEConfig:
        channels = tuple(int(c) for c in model.channels)
        net = VAENetConfig(
            channels=channels,
            latent_dim=int(model.latent_dim),
            latent_channels=int(model.latent_channels),
            hidden_dim=int(model.hidden_dim),
            num_classes=num_classes,
        )
        if model.beta < 0:
            raise UserError(f"config key model.beta={model.beta}: expected >= 0")
        return cls(net=net, beta=float(model.beta), iwae_k=int(model.iwae_k))


def _sum_except_batch(x: jax.Array) -> jax.Array:
    return x.reshape(x.shape[0], -1).sum(-1)


class VAE(Method):
    """The VAE family; ``cond=class`` makes it conditional.

    With ``precision=bfloat16`` the networks run on bfloat16 inputs and weights;
    the likelihood and KL are summed in float32.
    """

    supports_bfloat16 = True

    def __init__(self, config, data):
        super().__init__(config, data)
        num_classes = data.num_classes if data.cond == "class" else 0
        self.cfg = VAEConfig.from_config(config.model, num_classes)
        factor = 2 ** len(self.cfg.net.channels)
        height, width, _ = data.image_shape
        if height % factor or width % factor:
            raise UserError(
                f"config key data.image_size={height}: must be divisible by {factor} "
                f"(2 ** len(model.channels))"
            )
        self.encoder = Encoder(self.cfg.net)
        self.decoder = Decoder(self.cfg.net, data.image_shape)
        self.num_dims = int(np.prod(data.image_shape))

    def _labels(self, batch):
        return batch["label"] if self.cfg.net.num_classes else None

    # --- public pieces (also used by latent diffusion) ---------------------
    def latent_shape(self) -> tuple[int, ...]:
        if self.cfg.net.latent_channels:
            h, w, _ = self.data.image_shape
            f = 2 ** len(self.cfg.net.channels)
            return (h // f, w // f, self.cfg.net.latent_channels)
        return (self.cfg.net.latent_dim,)

    def encode(self, params, images: jax.Array, labels=None):
        """uint8 images [B, H, W, C] -> posterior (mean, log_var), each [B, *latent_shape]."""
        return self.encoder.apply(
            {"params": params["encoder"]}, images_to_symmetric(images), labels
        )

    def decode(self, params, z: jax.Array, labels=None) -> jax.Array:
        """Latents [B, *latent_shape] -> mean images, float32 [B, H, W, C] in [0, 1]."""
        mean, _ = self.decoder.apply({"params": params["decoder"]}, z, labels)
        return (mean + 1.0) / 2.0

    # --- Method interface ------------------------------------------------
    def init_params(self, rng, batch):
        enc_rng, dec_rng = jax.random.split(rng)
        x = images_to_symmetric(batch["image"][:1])
        labels = self._labels(batch)
        labels = None if labels is None else labels[:1]
        enc = self.encoder.init(enc_rng, x, labels)["params"]
        z = jnp.zeros((1, *self.latent_shape()))
        dec = self.decoder.init(dec_rng, z, labels)["params"]
        return {"encoder": enc, "decoder": dec}

    def _terms(self, params, batch, rng):
        """Per-image reconstruction log-likelihood and KL, in nats, each [B]."""
        x = images_to_symmetric(batch["image"], self.compute_dtype)
        labels = self._labels(batch)
        mean, log_var = self.encoder.apply({"params": params["encoder"]}, x, labels)
        z = mean + jnp.exp(0.5 * log_var) * jax.random.normal(rng, mean.shape, mean.dtype)
        px_mean, px_log_scale = self.decoder.apply({"params": params["decoder"]}, z, labels)
        f32 = jnp.float32
        log_px = _sum_except_batch(
            discretized_logistic_log_prob(
                x.astype(f32), px_mean.astype(f32), px_log_scale.astype(f32)
            )
        )
        kl = _sum_except_batch(gaussian_kl_to_standard(mean.astype(f32), log_var.astype(f32)))
        return log_px, kl

    def loss(self, params, batch, rng):
        log_px, kl = self._terms(params, batch, rng)
        loss = jnp.mean(-log_px + self.cfg.beta * kl) / self.num_dims
        elbo = log_px - kl
        metrics = {
            "reconstruction_nats": -jnp.mean(log_px),
            "kl_nats": jnp.mean(kl),
            "elbo_bits_per_dim": -jnp.mean(elbo) / (self.num_dims * math.log(2.0)),
        }
        return loss, metrics

    def sample(self, params, rng, num, conditioning=None):
        """Decoder means for z ~ N(0, I) (the pixel noise of p(x|z) is left out)."""
        z = jax.random.normal(rng, (num, *self.latent_shape()))
        labels = None if conditioning is None else conditioning.get("label")
        return self.decode(params, z, labels if self.cfg.net.num_classes else None)

    def likelihood(self, params, batch, rng):
        """ELBO and the IWAE bound (k = ``model.iwae_k``) per image, in nats and bits/dim."""
        x = images_to_symmetric(batch["image"])
        labels = self._labels(batch)
        mean, log_var = self.encoder.apply({"params": params["encoder"]}, x, labels)
        k = self.cfg.iwae_k

        def log_weight(sample_rng):
            z = mean + jnp.exp(0.5 * log_var) * jax.random.normal(sample_rng, mean.shape)
            px_mean, px_log_scale = self.decoder.apply({"params": params["decoder"]}, z, labels)
            log_px = _sum_except_batch(discretized_logistic_log_prob(x, px_mean, px_log_scale))
            log_pz = _sum_except_batch(gaussian_log_prob(z, 0.0, 0.0))
            log_qz = _sum_except_batch(gaussian_log_prob(z, mean, log_var))
            return log_px + log_pz - log_qz  # [B]

        log_w = jax.lax.map(log_weight, jax.random.split(rng, k))  # [k, B]
        log_px_iwae = jax.scipy.special.logsumexp(log_w, axis=0) - math.log(k)
        to_bpd = 1.0 / (self.num_dims * math.log(2.0))
        return {
            "elbo": jnp.mean(log_w, axis=0),
            "nll_iwae": -log_px_iwae,
            "bits_per_dim": -log_px_iwae * to_bpd,
            "elbo_bits_per_dim": -jnp.mean(log_w, axis=0) * to_bpd,
        }

    def write_extras(self, params, real, rng, out_dir, step):
        """A strip of decoded linear interpolations between two test images' posterior means."""
        del rng
        labels = jnp.asarray(real["label"]) if self.cfg.net.num_classes else None
        mean, _ = self.encode(params, jnp.asarray(real["image"]), labels)
        weights = jnp.linspace(0.0, 1.0, 10)
        z = (1 - weights).reshape(-1, *[1] * (mean.ndim - 1)) * mean[0] + weights.reshape(
            -1, *[1] * (mean.ndim - 1)
        ) * mean[1]
        strip_labels = None if labels is None else jnp.where(weights < 0.5, labels[0], labels[1])
        decoded = to_uint8(jax.device_get(self.decode(params, z, strip_labels)))
        images = np.concatenate([real["image"][:1], decoded, real["image"][1:2]])
        save_png(os.path.join(out_dir, f"interpolation_{step}.png"), make_grid(images, columns=12))
