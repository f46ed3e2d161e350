"""The train-step table of every family: ``preset=cpu`` and the default (published) configs.

  python benchmarks/families.py --out benchmarks/results/families_cpu.jsonl
  python benchmarks/families.py --table benchmarks/results/families_cpu.jsonl   # Markdown only

Runs ``benchmarks/train_step.py`` once per config, each in its own process (one compiled
step, then ``--steps`` timed steps), appends the records to ``--out`` and prints the
Markdown table of images/s, step time, compile time, GFLOPs per step and peak memory with
the hardware the records name. The default configs are full-size models: on a CPU a step
takes seconds to minutes, so few steps are timed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CONFIGS = (
    ("VAE", "configs/vae.py:preset=cpu"),
    ("Diffusion", "configs/ddpm.py:preset=cpu"),
    ("GAN", "configs/gan.py:preset=cpu"),
    ("PixelCNN++", "configs/pixelcnn.py:preset=cpu"),
    ("Classifier", "configs/classifier.py:preset=cpu"),
    ("CLIP", "configs/clip.py:preset=cpu"),
    ("Diffusion, text", "configs/ddpm.py:preset=cpu,cond=text"),
    ("VAE", "configs/vae.py"),
    ("Diffusion", "configs/ddpm.py:data=fashion_mnist"),
    ("GAN", "configs/gan.py:data=fashion_mnist"),
    # Batch 96 of the full PixelCNN++ needs 33 GB of activations: 8 micro-batches of 12.
    ("PixelCNN++", "configs/pixelcnn.py:data=fashion_mnist", ("train.grad_accum_steps=8",)),
    ("CLIP", "configs/clip.py"),
)


def run_one(config: str, steps: int, out: str, overrides=()) -> dict | None:
    """One ``train_step.py`` process; its JSON record, or None when it failed."""
    cmd = [sys.executable, os.path.join(REPO, "benchmarks", "train_step.py"), f"--config={config}",
           f"--steps={steps}", "--warmup=1", f"--out={out}"]  # fmt: skip
    cmd += [f"--set={pair}" for pair in overrides]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"{config}: failed\n{proc.stderr[-1500:]}", file=sys.stderr)
        return None
    lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
    return json.loads(lines[-1]) if lines else None


def table(records: list[dict]) -> str:
    """Markdown: one row per record, the hardware named in the caption."""
    hardware = sorted({r.get("hardware", "?") for r in records})
    rows = [
        f"Measured on: {'; '.join(hardware)}.",
        "",
        "| config | params | batch | images/s | step (s) | compile (s) | GFLOP/step "
        "| achieved GFLOP/s | peak memory (MiB) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in records:
        peak = r.get("device_peak_bytes") or r.get("host_peak_rss_bytes") or 0
        flops = r.get("flops_per_step") or 0
        rows.append(
            f"| `{r['config_spec']}`{''.join(f' `{o}`' for o in r.get('overrides', []))} | "
            f"{r.get('params', 0) / 1e6:.2f}M | {r.get('batch_size', '?')} | "
            f"{r['images_per_sec']:.1f} | "
            f"{r['step_seconds']:.3f} | {r['compile_seconds']:.1f} | {flops / 1e9:.1f} | "
            f"{flops / r['step_seconds'] / 1e9:.0f} | {peak / 2**20:.0f} |"
        )
    return "\n".join(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="", help="JSON-lines file the records are appended to")
    parser.add_argument("--steps", type=int, default=5, help="timed steps of preset=cpu configs")
    parser.add_argument("--full-steps", type=int, default=2, help="timed steps of full configs")
    parser.add_argument("--only", default="", help="run only configs containing this text")
    parser.add_argument("--table", default="", help="print the table of an existing file, no runs")
    args = parser.parse_args(argv)
    if args.table:
        with open(args.table) as f:
            print(table([json.loads(x) for x in f if x.strip()]))
        return 0
    out = args.out or os.devnull
    records = []
    for _, config, *overrides in CONFIGS:
        if args.only and args.only not in config:
            continue
        steps = args.steps if "preset=cpu" in config else args.full_steps
        record = run_one(config, steps, out, overrides[0] if overrides else ())
        if record is not None:
            records.append(record)
            print(json.dumps(record), flush=True)
    print(table(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
