"""Style-transfer benchmark: final losses and seconds per image at 256 and 512 px.

    python benchmarks/style_transfer.py                      # 256 (preset cpu), 512 (full)
    python benchmarks/style_transfer.py --sizes=256 --weights=vgg19.npz --out=bench.json

Each size runs the preset of that size (256: ``preset=cpu``, 512: the full preset; other
sizes: the full preset at that size) with the default images, in-process, without writing a
workdir. ``seconds`` is the wall time of the whole optimisation of one image, compilation
included; ``final_steps_per_sec`` is the optimiser's rate at the finest scale. Prints a
Markdown table and one JSON object per size.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

from configs.style_transfer import get_config  # noqa: E402
from jaxgen.images import save_png, to_uint8  # noqa: E402
from jaxgen.style_transfer import inputs, network, runner  # noqa: E402
from jaxgen.style_transfer.optimize import stylize  # noqa: E402


def bench(size: int, weights: str, steps: int, images_dir: str = "") -> dict:
    preset = "cpu" if size == 256 else "full"
    config = get_config(f"preset={preset}" + (f",weights={weights}" if weights else ""))
    config.data.image_size = size
    if steps:
        config.train.num_steps = steps
    settings = runner.settings_from_config(config)
    content = inputs.load_image(config.style.content, "style.content")
    style = inputs.load_image(config.style.style, "style.style")
    net = network.build_network(config.model)
    marks = []

    def on_log(step, terms, shape):
        marks.append((time.perf_counter(), step, shape))

    result = stylize(content, style, net, settings, on_log=on_log)
    if images_dir:
        save_png(os.path.join(images_dir, f"stylized_{size}.png"), to_uint8(result.image))
    final = [m for m in marks if m[2] == marks[-1][2] and m[1] > 0]
    rate = (final[-1][1] - final[0][1]) / max(final[-1][0] - final[0][0], 1e-9)
    return {
        "size": size,
        "preset": preset,
        "feature_network": net.name,
        "image": f"{result.image.shape[1]}x{result.image.shape[0]}",
        "num_scales": settings.num_scales,
        "steps": result.steps,
        "seconds": round(result.seconds, 1),
        "final_steps_per_sec": round(rate, 2),
        **{k: float(f"{v:.5g}") for k, v in result.terms.items()},
        "device": jax.devices()[0].device_kind,
        "cpu_count": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="256,512", help="comma-separated output sizes (px)")
    parser.add_argument("--weights", default="", help="VGG19 export; empty: random network")
    parser.add_argument("--steps", type=int, default=0, help="override train.num_steps")
    parser.add_argument("--out", default="", help="also write the rows to this JSON file")
    parser.add_argument("--images", default="", help="write stylized_<size>.png to this folder")
    args = parser.parse_args()
    rows = [bench(int(s), args.weights, args.steps, args.images) for s in args.sizes.split(",")]
    print("| size | network | image | scales | steps | seconds | steps/s (finest) "
          "| content_loss | style_loss | tv_loss |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['size']} | {r['feature_network']} | {r['image']} | {r['num_scales']} "
            f"| {r['steps']} | {r['seconds']} | {r['final_steps_per_sec']} "
            f"| {r['content_loss']:.4g} | {r['style_loss']:.4g} | {r['tv_loss']:.4g} |"
        )
    for r in rows:
        print(json.dumps(r))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
