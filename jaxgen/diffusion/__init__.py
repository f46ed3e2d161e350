"""Diffusion-model math, independent of networks and training loops.

* :mod:`~jaxgen.diffusion.schedules`: DDPM's linear and cosine beta schedules.
* :mod:`~jaxgen.diffusion.process`: noise processes (discrete VP, EDM) and sampling grids.
* :mod:`~jaxgen.diffusion.objectives`: eps / x0 / v / EDM parameterizations, loss targets, guidance.
* :mod:`~jaxgen.diffusion.likelihood`: the variational bound in bits/dim.
* :mod:`~jaxgen.diffusion.config`: the ``model.diffusion`` section, validated; importance-sampled
  training timesteps.

Latent diffusion's frozen VAE lives with the families, in :mod:`jaxgen.methods.latent`.
"""
