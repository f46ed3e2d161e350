"""Draws of a trained run under several sampling seeds, and sampler settings compared on them.

  python benchmarks/peers/seed_draws.py runs/ddpm --seeds=0,1,2,3,4
  python benchmarks/peers/seed_draws.py runs/ddpm --seeds=0,1,2 --variant=eta=0.5 \
      --variant=steps=100,eta=0 --out=runs/ddpm/seed_draws.jsonl

For every seed of ``--seeds`` the run (its newest checkpoint, EMA parameters, as
``launch.py --mode=sample`` draws) samples ``--num`` images with its own ``config.sample``
options, and again with each ``--variant`` (``key=value`` pairs of
:class:`jaxgen.api.Run.sample`'s ``sampler``, ``steps``, ``guidance``, ``eta``, ``final_snr``,
``drs_percentile``, typed as :class:`jaxgen.sampling.SampleOptions` types them).
Seed ``s`` is :meth:`jaxgen.api.Run.sample`'s ``seed=s``: seed 0 of the run's own options is
the set ``--mode=sample`` writes for ``sample.num = --num`` when the run's seed is 0. Every set
is scored as ``score_samples.py`` scores a file (against the first ``--num-ref`` test images,
both feature spaces) and written as one JSON record (``benchmark="seed_draws"``, ``variant``,
``sample_seed``) to ``--out``. A (variant, seed) whose record ``--out`` already holds for the
same run, checkpoint, ``--num`` and ``--num-ref`` is read back, not sampled again, so an
interrupted comparison resumes.

Printed: per variant and metric the mean over seeds and their standard deviation; and per
variant, the difference from the run's own options on the same seeds (mean and standard
error over seeds), marked ``*`` where it exceeds two standard errors. The same seed gives both
settings the same starting noise, which removes part of the draw-to-draw spread from the
difference: on the DDPM cpu preset's weights the domain recall of single draws of 2,000 spreads
by about 0.015 (benchmarks/README.md, "How much one draw says"), as much as the gaps between
many sampler settings. Needs jax, not torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import os
import sys
from collections.abc import Callable

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks.peers import records  # noqa: E402
from benchmarks.peers.score_samples import Scorer, reference_images  # noqa: E402
from jaxgen.api import Run  # noqa: E402
from jaxgen.sampling import SampleOptions  # noqa: E402

BENCHMARK = "seed_draws"
RUN_OPTIONS = "run"  # the variant name of the run's own config.sample options
# The SampleOptions fields that Run.sample takes as keywords, with their types.
VARIANT_TYPES = {
    f.name: {"str": str, "int": int, "float": float}[f.type]
    for f in dataclasses.fields(SampleOptions)
    if f.name in inspect.signature(Run.sample).parameters
}


def parse_variant(text: str) -> dict:
    """``"eta=0.5,steps=100"`` -> ``{"eta": 0.5, "steps": 100}``; ValueError naming the bad
    part otherwise."""
    options = {}
    for part in text.split(","):
        key, eq, value = part.partition("=")
        if not eq or key not in VARIANT_TYPES:
            raise ValueError(
                f"--variant={text}: {part!r} is not key=value with a key of {list(VARIANT_TYPES)}"
            )
        try:
            options[key] = VARIANT_TYPES[key](value)
        except ValueError:
            raise ValueError(
                f"--variant={text}: {key}={value!r} is not a {VARIANT_TYPES[key].__name__}"
            ) from None
    return options


def draw_all(
    sample: Callable[[int, dict], np.ndarray],
    scorer: Scorer,
    seeds: list[int],
    variants: dict[str, dict],
    done: dict[tuple[str, int], dict],
    write: Callable[[dict], None],
) -> dict[tuple[str, int], dict]:
    """Scores ``sample(seed, options)`` for every seed and variant (``{name: options}``) not
    already in ``done`` (``{(variant, seed): scores}``), passing each new record (the scores
    with ``variant``, ``sample_seed`` and ``options``) to ``write``; returns every pair's
    scores."""
    scores = dict(done)
    for seed in seeds:
        for name, options in variants.items():
            if (name, seed) in scores:
                continue
            scores[name, seed] = scorer.score(sample(seed, options))
            write(dict(scores[name, seed], variant=name, sample_seed=seed, options=options))
    return scores


def paired_differences(
    scores: dict[tuple[str, int], dict], variant: str, seeds: list[int]
) -> dict[str, tuple[float, float]]:
    """``{metric: (mean, standard error)}`` over ``seeds`` of ``variant``'s score minus the
    run's own options' score on the same seed (standard error 0 for one seed)."""
    out = {}
    for key in records.metric_keys():
        diffs = np.asarray([scores[variant, s][key] - scores[RUN_OPTIONS, s][key] for s in seeds])
        spread = diffs.std(ddof=1) / np.sqrt(len(diffs)) if len(diffs) > 1 else 0.0
        out[key] = (float(diffs.mean()), float(spread))
    return out


def report(scores: dict[tuple[str, int], dict], variants: list[str], seeds: list[int]) -> str:
    """The printed summary: means and spreads over seeds, then the paired differences."""
    lines = [f"{len(seeds)} seeds ({','.join(map(str, seeds))}); each: mean over seeds +- std"]
    lines.append("| metric | " + " | ".join(variants) + " |")
    lines.append("|---|" + "---:|" * len(variants))
    summaries = [records.summarize_draws([scores[name, s] for s in seeds]) for name in variants]
    for key in records.metric_keys():
        cells = [
            f"{summary[key]:.4g}" + (f" +- {summary[key + '_std']:.3g}" if len(seeds) > 1 else "")
            for summary in summaries
        ]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    for name in variants[1:]:
        diffs = paired_differences(scores, name, seeds)
        parts = []
        for key, (mean, se) in diffs.items():
            mark = "*" if se and abs(mean) > records.CLEAR_LEAD_SE * se else ""
            parts.append(f"{key} {mean:+.4g} (se {se:.2g}){mark}")
        lines.append(f"{name} minus {RUN_OPTIONS}, same seeds: " + "; ".join(parts))
    return "\n".join(lines)


def _saved_scores(path: str, identity: dict) -> dict[tuple[str, int], dict]:
    """``{(variant, seed): scores}`` of the records in ``path`` that match ``identity``."""
    saved = {}
    for record in records.json_objects(path):
        if record.get("benchmark") == BENCHMARK and all(
            record.get(k) == v for k, v in identity.items()
        ):
            saved[record["variant"], record["sample_seed"]] = {
                k: record[k] for k in records.metric_keys() if k in record
            }
    return saved


def main(argv=None) -> int:
    from benchmarks.common import hardware, write_record

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", help="a trained run's folder")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated sampling seeds")
    parser.add_argument("--variant", action="append", default=[],
                        help="sample options to compare, e.g. eta=0.5,steps=100")  # fmt: skip
    parser.add_argument("--num", type=int, default=2000, help="images per draw")
    parser.add_argument("--num-ref", type=int, default=2000, help="test images of reference")
    parser.add_argument("--out", default="", help="JSON-lines file to append to and resume from")
    args = parser.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
        variants = {RUN_OPTIONS: {}} | {v: parse_variant(v) for v in args.variant}
        reference = reference_images(args.num_ref)
    except ValueError as e:
        parser.error(str(e))

    import jaxgen
    from jaxgen.errors import UserError

    try:
        run = jaxgen.load(args.workdir)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    identity = dict(workdir=os.path.abspath(args.workdir), step=run.step, num=args.num,
                    num_ref=args.num_ref)  # fmt: skip
    info = hardware()

    def write(record: dict) -> None:
        write_record(dict(record, benchmark=BENCHMARK, **identity, **info), args.out or None)

    scores = draw_all(
        lambda seed, options: run.sample(args.num, seed=seed, **options),
        Scorer(reference),
        seeds,
        variants,
        _saved_scores(args.out, identity) if args.out else {},
        write,
    )
    print(report(scores, list(variants), seeds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
