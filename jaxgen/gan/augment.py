"""Differentiable augmentations of the discriminator's inputs.

Two uses in :mod:`jaxgen.gan.step`:

* DiffAugment (Zhao, Liu, Lin, Zhu & Han, NeurIPS 2020): every image the discriminator sees,
  real or generated, in its update and in the generator's, is augmented the same way, so the
  discriminator cannot overfit the real images' exact pixels while the generator still
  learns the un-augmented distribution (the transforms are differentiable in the pixels).
* Balanced consistency regularisation (bCR; Zhao, Singh, Lee, Zhang, Odena & Zhang, AAAI
  2021): the discriminator's output on an image and on an augmented copy should agree.

A policy is a tuple of names from :data:`TRANSFORMS`, applied in that order, each with
independent random parameters per image:

* ``color``: brightness ``+ U(-0.5, 0.5)``, saturation (channels scaled about their mean by
  ``U(0, 2)``; nothing for one channel) and contrast (pixels scaled about the image mean by
  ``U(0.5, 1.5)``);
* ``translation``: an integer shift of up to ``round(size / 8)`` pixels along each axis,
  the uncovered border zero (mid-grey for images in ``[-1, 1]``);
* ``cutout``: a square of half the image's side set to zero, its centre anywhere;
* ``flip``: a left-right mirror with probability 1/2.

The magnitudes are those of the DiffAugment paper's code.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxgen.errors import UserError

TRANSFORMS = ("color", "translation", "cutout", "flip")
TRANSLATION_RATIO = 0.125
CUTOUT_RATIO = 0.5


def parse_policy(text: str, key: str) -> tuple[str, ...]:
    """``"translation,cutout"`` -> ``("translation", "cutout")``; "" -> ``()``; an unknown
    name is a UserError naming config key ``key``."""
    names = tuple(name.strip() for name in str(text).split(",") if name.strip())
    unknown = [name for name in names if name not in TRANSFORMS]
    if unknown:
        raise UserError(
            f"config key {key}={text!r}: unknown transform {unknown[0]!r}; expected "
            f"comma-separated names from {TRANSFORMS}"
        )
    return names


def _uniform(rng: jax.Array, n: int, dtype) -> jax.Array:
    return jax.random.uniform(rng, (n, 1, 1, 1), dtype)


def _color(x: jax.Array, rng: jax.Array) -> jax.Array:
    b_rng, s_rng, c_rng = jax.random.split(rng, 3)
    n = x.shape[0]
    x = x + (_uniform(b_rng, n, x.dtype) - 0.5)
    mean = jnp.mean(x, axis=3, keepdims=True)
    x = (x - mean) * (_uniform(s_rng, n, x.dtype) * 2.0) + mean
    mean = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
    return (x - mean) * (_uniform(c_rng, n, x.dtype) + 0.5) + mean


def _translation(x: jax.Array, rng: jax.Array) -> jax.Array:
    n, h, w, c = x.shape
    sh, sw = int(h * TRANSLATION_RATIO + 0.5), int(w * TRANSLATION_RATIO + 0.5)
    dy = jax.random.randint(jax.random.fold_in(rng, 0), (n,), -sh, sh + 1)
    dx = jax.random.randint(jax.random.fold_in(rng, 1), (n,), -sw, sw + 1)
    padded = jnp.pad(x, ((0, 0), (sh, sh), (sw, sw), (0, 0)))

    def crop(image, oy, ox):  # the window moved by (-dy, -dx): the content moves by (dy, dx)
        return jax.lax.dynamic_slice(image, (oy, ox, 0), (h, w, c))

    return jax.vmap(crop)(padded, sh - dy, sw - dx)


def _cutout(x: jax.Array, rng: jax.Array) -> jax.Array:
    n, h, w, _ = x.shape
    ch, cw = int(h * CUTOUT_RATIO + 0.5), int(w * CUTOUT_RATIO + 0.5)
    top = jax.random.randint(jax.random.fold_in(rng, 0), (n, 1), 0, h + (1 - ch % 2)) - ch // 2
    left = jax.random.randint(jax.random.fold_in(rng, 1), (n, 1), 0, w + (1 - cw % 2)) - cw // 2
    rows, cols = jnp.arange(h)[None, :], jnp.arange(w)[None, :]
    in_rows = (rows >= top) & (rows < top + ch)  # [n, h]
    in_cols = (cols >= left) & (cols < left + cw)  # [n, w]
    hole = in_rows[:, :, None] & in_cols[:, None, :]
    return jnp.where(hole[..., None], jnp.zeros((), x.dtype), x)


def _flip(x: jax.Array, rng: jax.Array) -> jax.Array:
    flip = jax.random.bernoulli(rng, 0.5, (x.shape[0], 1, 1, 1))
    return jnp.where(flip, x[:, :, ::-1, :], x)


_APPLY = {"color": _color, "translation": _translation, "cutout": _cutout, "flip": _flip}


def augment(x: jax.Array, rng: jax.Array, policy: tuple[str, ...]) -> jax.Array:
    """``x`` ``[N, H, W, C]`` with each transform of ``policy`` applied to every image with
    its own random parameters; differentiable in ``x``. An empty policy returns ``x``."""
    for i, name in enumerate(policy):
        x = _APPLY[name](x, jax.random.fold_in(rng, i))
    return x
