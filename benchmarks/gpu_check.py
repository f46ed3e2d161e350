"""The accelerator check: what a GPU does with the published DDPM config, in one command.

  python benchmarks/gpu_check.py --out benchmarks/results/gpu_check.jsonl   # a GPU machine
  python benchmarks/gpu_check.py --tiny                                     # a CPU, as a test

Prints one JSON record per part, each with the hardware:

1. ``train_step``: the DDPM CIFAR-10 UNet (``configs/ddpm.py``: 35.7M parameters, 32x32x3) in
   ``precision=bfloat16`` at the config's batch of 128, through the trainer's own jitted,
   sharded step (``benchmarks/train_step.py``): images/s, compile time, FLOPs per step and
   model-FLOPs utilisation from XLA's cost analysis, peak device memory.
2. ``sample``: DPM-Solver++ (20 steps) drawing ``--samples`` images through the launcher's
   sharded sampling (``Experiment.generate``: rows split over every device), timed on a
   second call after a first that compiles.
3. ``torch_train_step``: the PyTorch peer (``benchmarks/peers/torch_unet.py``, the same UNet
   and step, fused Adam, ``scaled_dot_product_attention``, bf16 autocast) on the same card,
   in a child process so that the two frameworks do not share the GPU's memory.

The data are the procedural ``sprites`` (32x32x3, no download); a step's cost does not depend
on the pixels. ``--tiny`` shrinks the UNet and counts so the script can be checked on a CPU
(about 2.5 minutes on 2 cores, most of it compiling); its figures mean nothing. On an H200 the
whole check is meant to finish in under 8 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

CONFIG = "configs/ddpm.py:data=sprites"
TINY = {"model.unet.ch": 16, "model.unet.num_groups": 8, "train.batch_size": 16}


def _config(tiny: bool):
    from jaxgen.cli import load_config_file

    config = load_config_file(os.path.join(ROOT, CONFIG))
    config.precision = "bfloat16"
    config.evals = {}
    if tiny:
        config.model.unet.ch = TINY["model.unet.ch"]
        config.model.unet.num_groups = TINY["model.unet.num_groups"]
        config.train.batch_size = TINY["train.batch_size"]
    return config


def train_step_record(tiny: bool, steps: int) -> dict:
    from benchmarks.train_step import benchmark

    record = benchmark(_config(tiny), steps=steps, warmup=2, peak=None)
    return dict(record, part="train_step", config=CONFIG)


def sample_record(tiny: bool, num: int) -> dict:
    import tempfile

    import jax

    from benchmarks.common import peak_memory_bytes
    from jaxgen.experiment import Experiment

    config = _config(tiny)
    config.sample.sampler = "dpm_solver_pp"
    config.sample.steps = 20
    config.sample.batch_size = num
    with tempfile.TemporaryDirectory() as workdir:
        exp = Experiment(config, workdir)
        state = exp.init_state()
        start = time.perf_counter()
        exp.generate(state, num, exp.sample_rng())  # compiles
        first = time.perf_counter() - start
        start = time.perf_counter()
        images = exp.generate(state, num, jax.random.fold_in(exp.sample_rng(), 1))["images"]
        seconds = time.perf_counter() - start
    memory, memory_kind = peak_memory_bytes()
    return {
        "part": "sample",
        "sampler": "dpm_solver_pp",
        "steps": 20,
        "num": num,
        "precision": config.precision,
        "devices": exp.mesh.size,
        "images_per_sec": num / seconds,
        "seconds": seconds,
        "first_call_seconds": first,
        "images_shape": list(images.shape),
        memory_kind: memory,
    }


def torch_peer_record(spec: dict) -> dict:
    """The PyTorch UNet and step of ``spec`` (from the jax side) on CUDA when available."""
    import numpy as np
    import torch

    from benchmarks.peers.torch_unet import TorchUNet, TrainStep, count_params

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    model = TorchUNet(in_channels=3, image_size=32, **spec["unet"]).to(device)
    trainer = TrainStep(model, **spec["step"])
    batch = torch.from_numpy(
        np.random.default_rng(0).integers(0, 256, (spec["batch"], 32, 32, 3), dtype=np.uint8)
    ).to(device)

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    def run(n):
        for _ in range(n):
            with torch.autocast(device, dtype=torch.bfloat16):
                trainer.step(batch)
        sync()

    run(3)
    start = time.perf_counter()
    run(spec["steps"])
    seconds = (time.perf_counter() - start) / spec["steps"]
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else None
    return {
        "part": "torch_train_step",
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "torch_version": torch.__version__,
        "params": count_params(model),
        "batch_size": spec["batch"],
        "precision": "bfloat16 autocast",
        "step_seconds": seconds,
        "images_per_sec": spec["batch"] / seconds,
        "device_peak_bytes": peak,
    }


def peer_spec(tiny: bool, steps: int) -> dict:
    """What the PyTorch child needs to build the same UNet and step."""
    import tempfile

    from jaxgen.experiment import Experiment

    config = _config(tiny)
    with tempfile.TemporaryDirectory() as workdir:
        unet = Experiment(config, workdir).method.unet_config
    diffusion = config.model.diffusion
    return {
        "unet": {f: getattr(unet, f) for f in unet.__dataclass_fields__},
        "step": {
            "timesteps": diffusion.timesteps,
            "beta_start": diffusion.beta_start,
            "beta_end": diffusion.beta_end,
            "learning_rate": config.optimizer.learning_rate,
            "grad_clip_norm": config.optimizer.grad_clip_norm,
            "ema_decay": config.train.ema_decay,
        },
        "batch": config.train.batch_size,
        "steps": steps,
    }


def emit(record: dict, out: str | None) -> None:
    from benchmarks.common import hardware, write_record

    write_record({**record, **hardware()}, out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a shrunk UNet, for CPUs and tests")
    parser.add_argument("--samples", type=int, default=0, help="default: 4096 (tiny: 32)")
    parser.add_argument("--steps", type=int, default=0, help="timed train steps (default 20)")
    parser.add_argument("--skip-torch", action="store_true", help="leave out the PyTorch peer")
    parser.add_argument("--out", default=None, help="append the JSON records to this file")
    parser.add_argument("--torch-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.torch_child:
        print("@@" + json.dumps(torch_peer_record(json.loads(args.torch_child))), flush=True)
        return 0
    steps = args.steps or (3 if args.tiny else 20)
    samples = args.samples or (32 if args.tiny else 4096)

    from jaxgen import runtime

    runtime.add_cpu_xla_flags()
    emit(train_step_record(args.tiny, steps), args.out)
    emit(sample_record(args.tiny, samples), args.out)
    if args.skip_torch:
        return 0
    spec = peer_spec(args.tiny, steps)
    child = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--torch-child", json.dumps(spec)],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    lines = [x for x in child.stdout.splitlines() if x.startswith("@@")]
    if child.returncode != 0 or not lines:
        print(f"PyTorch peer failed: {child.stderr.strip()[-1500:]}", file=sys.stderr)
        return 1
    emit(json.loads(lines[-1][2:]), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
