"""A trained VAE run used as the latent space of latent diffusion (Rombach et al. 2022).

``model.autoencoder`` names the VAE run's workdir; its ``config.json`` rebuilds the VAE and its
latest checkpoint's EMA parameters are loaded (frozen). Images are encoded to a draw of the
posterior ``q(z | x)`` times ``model.latent_scale``; generated latents are divided by the scale
and decoded to the VAE decoder's mean image.

With ``dtype=bfloat16`` (the diffusion run's ``precision``) the frozen encoder and decoder run
on a bfloat16 copy of the parameters; the posterior draw and the latents are float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from jaxgen.data.spec import DataSpec
from jaxgen.errors import UserError
from jaxgen.methods.gradients import cast_floating
from jaxgen.methods.vae import VAE


class LatentAutoencoder:
    """Frozen encoder and decoder of a VAE run; latents are ``[B, *latent_shape]`` float32.

    ``dtype``: what the VAE's networks compute in (float32 or bfloat16).
    """

    def __init__(self, workdir: str, data: DataSpec, scale: float = 1.0, dtype=jnp.float32):
        from jaxgen.checkpoints import load_params_from
        from jaxgen.workdir import trained_config

        saved = trained_config(workdir)  # what its checkpoints were last trained with
        if saved is None:
            raise UserError(
                f"config key model.autoencoder={workdir!r}: no config.json there (expected a VAE "
                "run's workdir)"
            )
        vae_config = ml_collections.ConfigDict(saved)
        if vae_config.get("family") != "vae":
            raise UserError(
                f"config key model.autoencoder={workdir!r}: the run's family is "
                f"{vae_config.get('family')!r}, expected 'vae'"
            )
        if vae_config.data.get("cond", "none") != "none":
            raise UserError(
                f"config key model.autoencoder={workdir!r}: the VAE is conditional "
                f"(cond={vae_config.data.cond!r}); latent diffusion needs an unconditional one"
            )
        if scale <= 0:
            raise UserError(f"config key model.latent_scale={scale}: expected > 0")
        self.vae = VAE(vae_config, DataSpec(data.image_shape, 0, "none"))
        self.latent_shape = tuple(self.vae.latent_shape())
        if len(self.latent_shape) != 3:
            raise UserError(
                f"config key model.autoencoder={workdir!r}: the VAE has a flat latent of shape "
                f"{self.latent_shape}; latent diffusion needs a spatial one "
                "(set model.latent_channels > 0 in the VAE run)"
            )
        h, w, c = data.image_shape
        example = {"image": jnp.zeros((1, h, w, c), jnp.uint8), "label": jnp.zeros((1,), jnp.int32)}
        abstract = jax.eval_shape(self.vae.init_params, jax.random.PRNGKey(0), example)
        self._set_params(load_params_from(workdir, abstract, key="ema_params"), scale, dtype)

    def _set_params(self, params, scale: float, dtype) -> None:
        self.params = params  # float32 {"encoder", "decoder"}
        self.compute_params = cast_floating(params, dtype)  # the float32 ones themselves
        self.scale = float(scale)

    @classmethod
    def from_vae(cls, vae, params, scale: float = 1.0, dtype=jnp.float32) -> LatentAutoencoder:
        """The autoencoder of an in-memory unconditional :class:`~jaxgen.methods.vae.VAE` with
        spatial latents and its float32 ``params``, without a run's workdir (e.g. for tests)."""
        self = cls.__new__(cls)
        self.vae, self.latent_shape = vae, tuple(vae.latent_shape())
        self._set_params(params, scale, dtype)
        return self

    def encode(self, images: jax.Array, rng: jax.Array) -> jax.Array:
        """uint8 images ``[B, H, W, C]`` -> float32 scaled posterior draws ``[B, *latent]``."""
        mean, log_var = self.vae.encode(self.compute_params, images)
        mean, log_var = mean.astype(jnp.float32), log_var.astype(jnp.float32)
        z = mean + jnp.exp(0.5 * log_var) * jax.random.normal(rng, mean.shape, mean.dtype)
        return jax.lax.stop_gradient(self.scale * z)

    def decode(self, latents: jax.Array) -> jax.Array:
        """Scaled latents ``[B, *latent_shape]`` -> float32 images in [0, 1], ``[B, H, W, C]``."""
        return jnp.clip(self.vae.decode(self.compute_params, latents / self.scale), 0.0, 1.0)
