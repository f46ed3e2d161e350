"""What the four PyTorch quality peers share: arguments, data, the timed loop, the output file.

A peer trains for ``--minutes`` of wall clock (``time.monotonic``, checked before every step),
then draws ``--num`` samples and writes them in jaxgen's sample layout
(``<workdir>/samples/samples_<step>.npz``: ``images``, uint8 ``[N, 28, 28, 1]``) plus
``train_minutes`` (float, the training loop's wall clock), ``target_minutes`` (``--minutes``),
``steps`` (optimizer steps), ``params`` (parameters used to generate: the generator's for a
GAN), ``sample_seconds``, ``threads`` and ``torch_version``. Imports torch, numpy and the
repository's torch-free IDX reader.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

LOG_SECONDS = 60.0  # a progress line at most this often


def parse_args(description: str, argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--minutes", type=float, required=True, help="wall clock of training")
    parser.add_argument("--num", type=int, default=2000, help="samples to draw")
    parser.add_argument("--out", required=True, help="the samples .npz to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: all cores)")
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.num < 1:
        parser.error(f"--minutes={args.minutes} and --num={args.num}: expected both > 0")
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads or len(os.sched_getaffinity(0)))
    return args


def train_images() -> torch.Tensor:
    """The 60,000 Fashion-MNIST training images, uint8 ``[N, 1, 28, 28]`` (the files jaxgen
    reads: ``$JAXGEN_DATA_DIR/fashion_mnist`` or the system copy)."""
    from jaxgen.data.sources import fashion_mnist

    images = np.asarray(fashion_mnist("train").images)  # [N, 28, 28, 1] uint8
    return torch.from_numpy(images.reshape(len(images), 1, 28, 28).copy())


def batches(images: torch.Tensor, batch_size: int, seed: int):
    """Endless float32 batches ``[B, 1, 28, 28]`` in [0, 1], reshuffled every epoch."""
    gen = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(images), generator=gen)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            yield images[order[start : start + batch_size]].float() / 255.0


def train_for(minutes: float, step, data) -> tuple[int, float]:
    """Calls ``step(batch) -> loss (float)`` on batches of ``data`` until ``minutes`` of wall
    clock have passed; returns ``(steps, minutes taken)``."""
    start = time.monotonic()
    last_log, steps, losses = start, 0, []
    while time.monotonic() - start < minutes * 60.0:
        losses.append(step(next(data)))
        steps += 1
        if time.monotonic() - last_log >= LOG_SECONDS:
            last_log = time.monotonic()
            print(f"step {steps}  loss {np.mean(losses):.4g}  {(last_log - start) / 60:.1f} min",
                  flush=True)  # fmt: skip
            losses = []
    return steps, (time.monotonic() - start) / 60.0


def count_params(*modules: torch.nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float ``[N, 1, H, W]`` in [0, 1] -> uint8 ``[N, H, W, 1]`` (rounded, clipped)."""
    x = (x.detach().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().numpy()


def sample_in_batches(sample, num: int, batch_size: int) -> np.ndarray:
    """``sample(n) -> float [n, 1, 28, 28]`` in [0, 1], called in batches -> uint8
    ``[num, 28, 28, 1]``; returns it with the seconds it took."""
    start = time.monotonic()
    with torch.no_grad():
        parts = [to_uint8(sample(min(batch_size, num - i))) for i in range(0, num, batch_size)]
    return np.concatenate(parts), time.monotonic() - start


def descend(opt: torch.optim.Optimizer, loss: torch.Tensor, clip_norm: float = 0.0) -> float:
    """One update of ``opt``'s parameters on the scalar ``loss``: zero the gradients,
    backpropagate, clip their global norm to ``clip_norm`` (when > 0), step. Returns the loss."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if clip_norm > 0:
        params = [p for group in opt.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, clip_norm)
    opt.step()
    return loss.item()


def write_samples(args, name: str, images: np.ndarray, sample_seconds: float, steps: int,
                  train_minutes: float, params: int) -> None:  # fmt: skip
    """Writes the samples ``.npz`` whole (a temporary file, then a rename) and prints one
    summary line."""
    assert images.dtype == np.uint8 and images.shape[1:] == (28, 28, 1), images.shape
    out = os.path.abspath(args.out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    tmp = f"{out}.{os.getpid()}.tmp.npz"
    np.savez(tmp, images=images, train_minutes=np.float64(train_minutes),
             target_minutes=np.float64(args.minutes), steps=np.int64(steps),
             params=np.int64(params), sample_seconds=np.float64(sample_seconds),
             threads=np.int64(torch.get_num_threads()),
             torch_version=np.str_(torch.__version__))  # fmt: skip
    os.replace(tmp, out)
    print(f"{name}: {steps} steps in {train_minutes:.2f} min ({torch.get_num_threads()} threads), "
          f"{params} params, {len(images)} samples in {sample_seconds:.1f} s -> {out}",
          flush=True)  # fmt: skip
