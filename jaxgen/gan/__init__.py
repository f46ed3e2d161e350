"""Adversarial training: losses, regularisers and the two-player step.

The networks' layers are in :mod:`jaxgen.models.layers`.
"""
