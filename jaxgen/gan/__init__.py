"""Adversarial training: losses, regularisers, normalisation layers and the two-player step."""
