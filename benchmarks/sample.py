"""Sampling throughput of a diffusion config: images/s for every sampler and step count.

  python benchmarks/sample.py --config=configs/ddpm.py:preset=cpu
  python benchmarks/sample.py --config=configs/ddpm.py --samplers=ddim,dpm_solver_pp \
      --steps=10,25,50 --num=256 --out=benchmarks/results/sample.jsonl

For each sampler of ``jaxgen.samplers.SAMPLERS`` (``--samplers``) and each step count
(``--steps``; 0 is the sampler's default, which for ``ddpm`` is every timestep) the config's
sampler options with that ``sampler`` and ``steps`` are passed to the family's whole ``sample``
function (noise, the sampler's scan over network evaluations, decoding, guidance as
configured), which is jitted for a batch of ``--num`` images, compiled (timed), run once, then
timed over ``--repeats`` runs.
Weights are a fresh initialisation (the cost does not depend on their values). One JSON record
per (sampler, steps) with images/s, network evaluations (NFE), compile time and the hardware.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import hardware, peak_memory_bytes, write_record  # noqa: E402
from benchmarks.train_step import apply_overrides  # noqa: E402
from jaxgen.cli import load_config_file  # noqa: E402
from jaxgen.errors import UserError  # noqa: E402
from jaxgen.experiment import Experiment  # noqa: E402
from jaxgen.samplers import SAMPLERS, get_sampler  # noqa: E402
from jaxgen.sampling import SampleOptions  # noqa: E402


def time_sampler(exp: Experiment, params, sampler: str, steps: int, num: int, repeats: int):
    """Times ``exp.method.sample`` with ``sampler``/``steps``; returns a record (no hardware)."""
    cfg = exp.config
    options = SampleOptions.from_config(cfg.sample).replace(sampler=sampler, steps=steps)
    options = exp.method.resolve_sample_options(options)
    spec, grid, _ = exp.method.sampler_plan(options)  # the grid gives the real steps
    conditioning = exp.conditioning(num)
    fn = jax.jit(exp.method.sample, static_argnums=(2,), static_argnames=("options",))
    rng = jax.random.PRNGKey(cfg.seed)
    start = time.perf_counter()
    compiled = fn.lower(params, rng, num, conditioning, options=options).compile()
    compile_seconds = time.perf_counter() - start
    images = jax.block_until_ready(compiled(params, rng, conditioning))  # warm-up run
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(params, jax.random.fold_in(rng, i + 1), conditioning))
        times.append(time.perf_counter() - start)
    seconds = float(np.median(times))
    images = np.asarray(images)
    num_steps = int(grid.num_levels)
    nfe = spec.nfe(num_steps)
    return {
        "benchmark": "sample",
        "family": cfg.family,
        "sampler": sampler,
        "steps": num_steps,
        "nfe": nfe,
        "guidance": options.guidance,
        "num": num,
        "image_shape": list(images.shape[1:]),
        "seconds_per_batch": seconds,
        "images_per_sec": num / seconds,
        "seconds_per_image": seconds / num,
        "network_evals_per_sec": nfe * num / seconds,
        "compile_seconds": compile_seconds,
        "finite_in_unit_range": bool(
            np.isfinite(images).all() and images.min() >= 0.0 and images.max() <= 1.0
        ),
        "timed_runs": repeats,
    }


def parse_list(text: str, kind=str) -> list:
    return [kind(x) for x in text.split(",") if x.strip()]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="configs/<family>.py[:args] (diffusion)")
    parser.add_argument("--set", action="append", default=[], help="config override key=value")
    parser.add_argument("--samplers", default=",".join(SAMPLERS), help="comma-separated names")
    parser.add_argument("--steps", default="20", help="comma-separated; 0: sampler default")
    parser.add_argument("--num", type=int, default=64, help="images per sampling call")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs after the warm-up")
    parser.add_argument("--out", default=None, help="append the JSON records to this file")
    args = parser.parse_args(argv)
    try:
        samplers = parse_list(args.samplers)
        steps_list = parse_list(args.steps, int)
        for name in samplers:
            get_sampler(name)
        if args.num < 1 or args.repeats < 1 or not steps_list or min(steps_list) < 0:
            raise UserError("--num and --repeats must be >= 1 and --steps non-negative")
        config = load_config_file(args.config)
        apply_overrides(config, args.set)
        config.evals = {}  # timing the samplers only: the evaluators' weight files are not needed
        with tempfile.TemporaryDirectory() as workdir:
            exp = Experiment(config, workdir)
            if not hasattr(exp.method, "sampler_plan"):
                raise UserError(f"--config={args.config}: family {config.family!r} has no samplers")
            params = exp.method.sampling_params(exp.init_state())
            num_params = int(sum(np.size(x) for x in jax.tree.leaves(params)))
            for name in samplers:
                for steps in steps_list:
                    record = time_sampler(exp, params, name, steps, args.num, args.repeats)
                    memory, memory_kind = peak_memory_bytes()
                    record.update(
                        {memory_kind: memory, "params": num_params, "config_spec": args.config},
                        overrides=args.set,
                        **hardware(),
                    )
                    write_record(record, args.out)
    except UserError as e:
        print(f"sample.py: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
