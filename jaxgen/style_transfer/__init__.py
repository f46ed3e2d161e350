"""Neural style transfer (Gatys et al. 2016): optimise the pixels of one image.

Modules: ``losses`` (content, Gram-matrix style and total-variation losses), ``network``
(VGG19 or the random multi-scale fallback, from ``config.model``), ``weights`` (VGG19 weight
files), ``inputs`` (content/style images), ``color`` (luminance-only transfer), ``optimize``
(L-BFGS/Adam, coarse to fine) and ``runner`` (``run(config, workdir, mode)`` for the launcher).
"""
