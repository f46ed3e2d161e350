"""Train-step throughput of any config: images/s, step and compile time, memory, FLOPs, MFU.

  python benchmarks/train_step.py --config=configs/vae.py:preset=cpu
  python benchmarks/train_step.py --config=configs/ddpm.py --set precision=bfloat16 \
      --set train.batch_size=128 --out benchmarks/results/train_step.jsonl

The step is the trainer's own jitted, sharded, donated ``train_step`` on real
batches from the config's data pipeline. Compile time is measured with the
persistent cache off. FLOPs per step come from XLA's cost analysis of the
compiled step; model FLOPs utilisation divides the achieved FLOP/s by the
devices' dense peak (``--peak-tflops`` or the table in ``benchmarks/common.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import hardware, peak_memory_bytes, peak_tflops, write_record  # noqa: E402
from jaxgen import overrides as overrides_lib  # noqa: E402
from jaxgen import parallel  # noqa: E402
from jaxgen.cli import load_config_file  # noqa: E402
from jaxgen.errors import UserError  # noqa: E402
from jaxgen.experiment import Experiment  # noqa: E402
from jaxgen.trainer import Trainer  # noqa: E402


def apply_overrides(config, pairs: list[str]) -> None:
    """``--set key.sub=value`` strings -> ``config``, typed like the current value, as the
    launcher's ``--config.key.sub=value`` (:func:`jaxgen.overrides.apply_overrides`): an
    unknown key or a value of the wrong type is a one-line UserError."""
    overrides = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq:
            raise UserError(f"--set {pair!r}: expected key=value")
        overrides[key] = value
    overrides_lib.apply_overrides(config, overrides)


def flops_of(compiled) -> float | None:
    """XLA's cost-analysis FLOPs of a compiled function (a loop's body counted once)."""
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list):
        analysis = analysis[0] if analysis else None
    return float(analysis["flops"]) if analysis and "flops" in analysis else None


@contextlib.contextmanager
def _unrolled_scans():
    """Every ``lax.scan`` (and Flax's ``nn.scan``, built on it) traced fully unrolled."""
    scan = jax.lax.scan

    def unrolled(*args, **kwargs):
        return scan(*args, **{**kwargs, "unroll": True})

    jax.lax.scan = unrolled
    try:
        yield
    finally:
        jax.lax.scan = scan


def step_flops(step_fn, state, batch, compiled) -> float | None:
    """FLOPs of one step, loops included.

    XLA's cost analysis counts a ``while`` loop's body once, not once per iteration, so a
    step with scans (gradient accumulation, a GAN's discriminator updates, scanned blocks)
    is traced again with the scans unrolled and compiled for counting only.
    """
    if " scan[" not in str(jax.make_jaxpr(step_fn)(state, batch)):
        return flops_of(compiled)
    jax.clear_caches()  # the jit cache would hand back the looped trace
    with _unrolled_scans():
        return flops_of(step_fn.lower(state, batch).compile())


def benchmark(config, steps: int, warmup: int, peak: float | None) -> dict:
    jax.config.update("jax_enable_compilation_cache", False)
    config.evals = {}  # timing the step only: the evaluators' weight files are not needed
    with tempfile.TemporaryDirectory() as workdir:
        exp = Experiment(config, workdir)
        trainer = Trainer(exp)
        state = exp.init_state()
        pipeline = exp.pipeline()
        batches = [parallel.global_batch(next(pipeline), exp.mesh) for _ in range(2)]
        start = time.perf_counter()
        compiled = trainer.step_fn.lower(state, batches[0]).compile()
        compile_seconds = time.perf_counter() - start
        for i in range(warmup):
            state, metrics = compiled(state, batches[i % 2])
        jax.block_until_ready(state)
        times = []
        for i in range(steps):
            start = time.perf_counter()
            state, metrics = compiled(state, batches[i % 2])
            jax.block_until_ready(metrics)
            times.append(time.perf_counter() - start)
        flops = step_flops(trainer.step_fn, state, batches[0], compiled)
    step_seconds = float(np.median(times))
    memory, memory_kind = peak_memory_bytes()
    peak = peak or peak_tflops(config.precision)
    record = {
        "benchmark": "train_step",
        "family": config.family,
        "batch_size": config.train.batch_size,
        "precision": config.precision,
        "params": int(sum(np.size(x) for x in jax.tree.leaves(state.params))),
        "step_seconds": step_seconds,
        "images_per_sec": config.train.batch_size / step_seconds,
        "images_per_sec_per_device": config.train.batch_size / step_seconds / jax.device_count(),
        "compile_seconds": compile_seconds,
        "flops_per_step": flops,
        memory_kind: memory,
        "mfu": (flops / step_seconds / (peak * 1e12 * jax.device_count()))
        if flops and peak
        else None,
        "timed_steps": steps,
    }
    return record


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="configs/<family>.py[:args]")
    parser.add_argument("--set", action="append", default=[], help="config override key=value")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument("--out", default=None, help="append the JSON record to this file")
    args = parser.parse_args(argv)
    from jaxgen import runtime

    runtime.add_cpu_xla_flags()  # the XLA flags launch.py sets, before the backend starts
    try:
        config = load_config_file(args.config)
        apply_overrides(config, args.set)
    except UserError as e:
        print(f"error: {overrides_lib.one_line(e)}", file=sys.stderr)
        return 2
    record = benchmark(config, args.steps, args.warmup, args.peak_tflops)
    record.update(config_spec=args.config, overrides=args.set, **hardware())
    write_record(record, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
