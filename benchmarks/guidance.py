"""Evaluators of one trained conditional run at several guidance scales and seeds.

  python benchmarks/guidance.py --workdir=runs/ddpm_text --guidance=3,5 --seeds=0,1
  python benchmarks/guidance.py --workdir=runs/ddpm_text --guidance=5 --seeds=1 \\
      --evals=prompts,quality,c2st --out=benchmarks/results/text_guidance_cpu.jsonl

For each guidance scale and seed, the run's own evaluators named by ``--evals`` (keys of its
``config.evals``) run on its newest checkpoint with ``sample.guidance`` and ``seed`` replaced,
as ``jaxgen.load(workdir, config=...).evaluate(...)`` does: nothing is trained and nothing in
the run directory is written. One JSON record per (guidance, seed) is printed, with the
hardware, and appended to ``--out`` when given. The seed draws the evaluators' samples, so
two seeds show how much of a difference between scales is sampling noise.
"""

from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v]


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def evaluate_at(workdir: str, guidance: float, seed: int, evals: list[str]) -> dict[str, float]:
    """The ``evals`` of the run in ``workdir`` with ``sample.guidance=guidance``, ``seed=seed``."""
    import jaxgen
    from jaxgen.saved_config import load_workdir_config

    config = load_workdir_config(workdir)
    with config.unlocked():
        config.sample.guidance = guidance
        config.seed = seed
    results = jaxgen.load(workdir, config=config).evaluate(evals)
    return {k: float(v) for k, v in results.items()}


def main(argv=None) -> int:
    from benchmarks.common import hardware, write_record

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="a trained conditional run")
    parser.add_argument("--guidance", type=_floats, default=[1.0, 3.0, 5.0])
    parser.add_argument("--seeds", type=_ints, default=[0])
    parser.add_argument("--evals", default="prompts", help="comma-separated config.evals keys")
    parser.add_argument("--out", default="", help="JSON-lines file to append to")
    args = parser.parse_args(argv)
    from jaxgen.errors import UserError

    info = hardware()
    for guidance in args.guidance:
        for seed in args.seeds:
            try:
                results = evaluate_at(args.workdir, guidance, seed, args.evals.split(","))
            except UserError as e:  # a workdir without a run, an evaluator it does not have
                parser.error(str(e))
            record = dict(benchmark="guidance", workdir=args.workdir, guidance=guidance,
                          seed=seed, **results, **info)  # fmt: skip
            write_record(record, args.out or None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
