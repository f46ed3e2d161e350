"""Images per second of the plain and the fast (cached) PixelCNN samplers.

  python benchmarks/ar_sampling.py                      # preset=cpu models, 28x28x1 and 32x32x3
  python benchmarks/ar_sampling.py --variants=gated --rows=4 --batch=16

Models have the ``preset=cpu`` sizes of ``configs/pixelcnn.py`` with random
weights (sampling cost does not depend on the weights); for RGB, the widths of
PixelCNN and Gated PixelCNN are rounded up to multiples of the colour groups
(32 -> 36 features, 64 -> 66 output features). Each sampler is compiled
and run once, then timed over ``--repeats`` runs. Whole images are drawn by the
family's ``sample`` with the sampler's :class:`~jaxgen.sampling.SampleOptions` (the
path of ``--mode=sample``); ``--rows`` times only the first rows of each image (the
sampler itself, stopped early) and scales to the whole image (both samplers do the
same work for every row). Also checks that both samplers drew the same pixels.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs.pixelcnn import get_config  # noqa: E402
from jaxgen.data.spec import DataSpec  # noqa: E402
from jaxgen.methods.pixelcnn import PixelCNN  # noqa: E402
from jaxgen.pixelcnn.sampling import SAMPLERS  # noqa: E402
from jaxgen.sampling import SampleOptions  # noqa: E402

SHAPES = {"28x28": (28, 28, 1), "32x32": (32, 32, 3)}


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def sampling_fn(method, name: str, batch: int, rows: int):
    """Jitted ``(params, rng) -> int32 [batch, H, W, C]`` samples of sampler ``name``: the
    family's ``sample``, or with ``rows`` the sampler drawing only the first ``rows`` rows."""
    options = method.resolve_sample_options(SampleOptions(sampler=name))
    if rows:
        pixels = rows * method.data.image_shape[1]
        sampler = SAMPLERS[options.sampler]
        return jax.jit(lambda p, r: sampler(method.model, p, r, batch, {}, num_pixels=pixels))

    def whole(params, rng):
        images = method.sample(params, rng, batch, options=options)  # float32, k / 255
        return jnp.round(images * 255.0).astype(jnp.int32)

    return jax.jit(whole)


def time_sampler(method, params, name, batch, rows, repeats):
    """(seconds per image for the whole image, int32 samples)."""
    height = method.data.image_shape[0]
    fn = sampling_fn(method, name, batch, rows)
    out = jax.block_until_ready(fn(params, jax.random.PRNGKey(0)))  # compile + warm up
    start = time.perf_counter()
    for _ in range(repeats):
        out = jax.block_until_ready(fn(params, jax.random.PRNGKey(0)))
    seconds = (time.perf_counter() - start) / repeats
    return seconds * (height / rows if rows else 1.0) / batch, np.asarray(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="pixelcnn,gated,pixelcnn_pp")
    parser.add_argument("--sizes", default="28x28,32x32")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rows", type=int, default=0, help="time only this many rows (0: all)")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    print(f"device: {jax.devices()[0].device_kind}, {os.cpu_count()} CPU cores visible")
    print("variant      size   C  plain img/s  fast img/s  speedup  same pixels")
    for variant in args.variants.split(","):
        for size in args.sizes.split(","):
            shape = SHAPES[size]
            config = get_config(f"preset=cpu,variant={variant}")
            m = config.model
            m.features = round_up(m.features, 2 * shape[2])
            m.output_features = round_up(m.output_features, shape[2])
            method = PixelCNN(config, DataSpec(shape, 0))
            batch = {"image": jnp.zeros((1, *shape), jnp.uint8)}
            params = method.init_params(jax.random.PRNGKey(0), batch)
            plain, a = time_sampler(method, params, "plain", args.batch, args.rows, args.repeats)
            fast, b = time_sampler(method, params, "fast", args.batch, args.rows, args.repeats)
            print(
                f"{variant:12s} {size:6s} {shape[2]}  {1 / plain:11.3f}  {1 / fast:10.2f}"
                f"  {plain / fast:7.1f}  {bool(np.array_equal(a, b))}",
                flush=True,
            )


if __name__ == "__main__":
    main()
