"""Fréchet distance against network evaluations (NFE) for every diffusion sampler.

  python benchmarks/samplers.py --workdir=runs/ddpm                   # a trained ddpm run
  python benchmarks/samplers.py --workdir=runs/ddpm --num=2000 --nfe=10,20,50,100,1000

Loads the run's latest checkpoint (EMA parameters) and, for each sampler of
:mod:`jaxgen.samplers` and each NFE budget, draws ``--num`` samples from the same
seed and computes the Fréchet distance to ``--num`` test images in the features of
the domain classifier (``--features``, as in the run's ``quality`` evaluator). The
number of steps is the most that fits the budget (Heun: ``(NFE + 1) // 2`` steps,
``2 * steps - 1`` evaluations); the NFE actually spent is reported. Prints one JSON
record per cell, a Markdown table at the end, and appends the records to ``--out``
(default ``<workdir>/benchmarks/samplers.jsonl``).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time

import jax
import ml_collections
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import hardware, write_record  # noqa: E402
from jaxgen.errors import UserError  # noqa: E402
from jaxgen.images import to_uint8  # noqa: E402
from jaxgen.samplers import SAMPLERS  # noqa: E402
from jaxgen.sampling import SampleOptions  # noqa: E402

DEFAULT_NFE = (10, 20, 50, 100, 1000)


def load_run(workdir: str):
    """``(experiment, sampling params, step)`` of the latest checkpoint of a ddpm run."""
    from jaxgen.experiment import Experiment

    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        raise UserError(f"--workdir={workdir!r}: no config.json (not a run directory)")
    with open(path) as f:
        config = ml_collections.ConfigDict(json.load(f))
    if config.family != "ddpm":
        raise UserError(f"--workdir={workdir!r}: family {config.family!r}, expected 'ddpm'")
    exp = Experiment(config, workdir)
    checkpoints = exp.checkpoints(read_only=True)
    try:
        step, state, _ = checkpoints.restore_latest(exp.abstract_sharded_state(), fall_back=True)
    finally:
        checkpoints.close()
    return exp, exp.method.sampling_params(state), step


def generate(exp, params, options, num: int, chunk: int, seed: int) -> np.ndarray:
    """uint8 ``[num, H, W, C]`` samples drawn with the resolved ``options``
    (:class:`~jaxgen.sampling.SampleOptions`) in chunks with a per-chunk key."""
    fn = jax.jit(functools.partial(exp.method.sample, options=options), static_argnums=2)
    conditioning = exp.conditioning(num)
    out = []
    for start in range(0, num, chunk):
        count = min(chunk, num - start)
        cond = None if conditioning is None else {
            k: v[start : start + count] for k, v in conditioning.items()
        }  # fmt: skip
        images = fn(params, jax.random.fold_in(jax.random.PRNGKey(seed), start), count, cond)
        out.append(to_uint8(jax.device_get(images)))
    return np.concatenate(out)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--num", type=int, default=1000, help="samples (and test images) per cell")
    parser.add_argument("--nfe", default=",".join(map(str, DEFAULT_NFE)))
    parser.add_argument("--samplers", default=",".join(SAMPLERS))
    parser.add_argument("--features", default="domain", help="domain | inception | pixels")
    parser.add_argument("--chunk", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)

    from jaxgen.evaluate.features import get_extractor
    from jaxgen.evaluate.metrics import frechet_distance_from_features

    exp, params, step = load_run(args.workdir)
    budgets = [int(x) for x in args.nfe.split(",") if x]
    names = [x for x in args.samplers.split(",") if x]
    for name in names:
        if name not in SAMPLERS:
            raise UserError(f"--samplers: {name!r} is not one of {sorted(SAMPLERS)}")
    extractor = get_extractor(ml_collections.ConfigDict({"features": args.features}),
                              exp.config.data.name)  # fmt: skip
    num_real = min(args.num, len(exp.eval_source))
    real = np.stack([exp.eval_source[i]["image"] for i in range(num_real)])
    real_features = extractor(real)["features"]
    out = args.out or os.path.join(args.workdir, "benchmarks", "samplers.jsonl")
    info = hardware()
    configured = SampleOptions.from_config(exp.config.sample)  # guidance, eta, spacing kept
    records = []
    for name in names:
        spec = SAMPLERS[name]
        for budget in budgets:
            steps = spec.steps_for_nfe(budget)
            if spec.spacing == "uniform" and exp.method.dcfg.process == "vp":
                steps = min(steps, exp.method.dcfg.timesteps)
            options = configured.replace(sampler=name, steps=steps)
            options = exp.method.resolve_sample_options(options)
            start = time.perf_counter()
            images = generate(exp, params, options, args.num, args.chunk, args.seed)
            seconds = time.perf_counter() - start
            fd = frechet_distance_from_features(real_features, extractor(images)["features"])
            record = dict(
                benchmark="diffusion_samplers", workdir=os.path.abspath(args.workdir),
                checkpoint_step=step, sampler=name, nfe_budget=budget, steps=steps,
                nfe=spec.nfe(steps), fd=fd, features=extractor.key, num_samples=args.num,
                num_real=num_real, seconds=seconds, **info,
            )  # fmt: skip
            write_record(record, out)
            records.append(record)
    print(markdown_table(records))
    return records


def markdown_table(records: list[dict]) -> str:
    """Rows: samplers; columns: NFE budgets; cells: FD (actual NFE where it differs)."""
    budgets = sorted({r["nfe_budget"] for r in records})
    lines = ["| sampler | " + " | ".join(f"NFE {b}" for b in budgets) + " |",
             "| --- |" + " --- |" * len(budgets)]  # fmt: skip
    for name in dict.fromkeys(r["sampler"] for r in records):
        cells = []
        for b in budgets:
            r = next((r for r in records if r["sampler"] == name and r["nfe_budget"] == b), None)
            if r is None:
                cells.append("")
            else:
                extra = f" ({r['nfe']})" if r["nfe"] != b else ""
                cells.append(f"{r['fd']:.2f}{extra}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    try:
        main()
    except UserError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        sys.exit(2)
