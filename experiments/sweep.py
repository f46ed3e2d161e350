"""Runs a sweep through ``launch.py``, or writes a SLURM array script that does.

  python -m experiments.sweep experiments/ablations/vae.py --root runs/vae_sweep
  python -m experiments.sweep experiments/ablations/vae.py --root runs/vae_sweep --dry-run
  python -m experiments.sweep experiments/ablations/diffusion.py --root /scratch/diff \
      --preset full --slurm diffusion.sbatch --sbatch=--gres=gpu:1 --sbatch=--time=48:00:00

Each run lands in ``<root>/<run name>/``. Locally the runs go one after the other; each run is
``--mode=train``, then ``--mode=eval``, then ``--mode=sample``, and a stage already done is
skipped:

* train is done when the latest checkpoint step equals ``train.num_steps`` of the run's
  ``config.json`` (otherwise the launcher resumes from the latest checkpoint);
* eval is done when ``eval/step_<N>.json`` exists for that step ``N`` (training writes it at
  the end when the config declares evaluators, so a fresh run usually skips this stage);
* sample is done when ``samples/samples_<N>.npz`` exists (never run for a family that draws
  no images, ``is_generator = False``: the ``classifier`` and ``clip`` families).

A run is *finished* when its train and eval stages are done. A sampling-only run
(``shares_training_with``) links ``checkpoints`` to its base run's and has only the eval and
sample stages. Launcher output goes to ``<root>/<run>/logs/<mode>.log``. The sweep records the
run's launch arguments in ``<root>/<run>/sweep.json`` and refuses to continue a run directory
that was started with other arguments.

The SLURM script (``experiments/slurm.py``) has one array task per group of dependent runs (a
run, the runs fine-tuned from it and its sampling-only variants), since a task cannot wait for
another task of the same array; every task runs this module with ``--only`` so that the
cluster skips and resumes exactly as a local sweep does. Exit status: 0 when every run
finished, 1 when a launcher command failed, 2 for bad input.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments import slurm
from experiments.commands import (
    PRESETS,
    REPO,
    STAGES,
    check_configs,
    command,
    config_spec,
    override_flags,
    stages_of,
    workdir,
)
from experiments.local import Runner, _with_interpreter, dry_run, run_sweep, subprocess_runner
from experiments.run_state import (
    check_record,
    is_finished,
    pending_stages,
    prepare_shared,
    record,
    training_dir,
)
from experiments.spec import load_sweep
from jaxgen.errors import UserError

__all__ = [  # the names tests and other modules read from here
    "PRESETS", "REPO", "STAGES", "Runner", "_with_interpreter", "check_configs",
    "check_record", "command", "config_spec", "dry_run", "is_finished", "load_sweep", "main",
    "override_flags", "parse_args", "pending_stages", "prepare_shared", "record", "run_sweep",
    "stages_of", "subprocess_runner", "training_dir", "workdir",
]  # fmt: skip


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m experiments.sweep", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("sweep", help="experiments/ablations/<name>.py[:<args>]")
    p.add_argument("--root", required=True, help="runs land in <root>/<run name>/")
    p.add_argument("--preset", default="cpu", help="smoke | cpu | full (default: cpu)")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    p.add_argument("--slurm", metavar="PATH", help="write a SLURM array script, run nothing")
    p.add_argument(
        "--sbatch",
        action="append",
        default=[],
        help="extra #SBATCH options, split like a shell command line (repeat)",
    )
    p.add_argument("--max-parallel", type=int, default=0, help="SLURM array throttle (%%N)")
    p.add_argument("--only", default="", help="comma-separated run names (default: all)")
    p.add_argument("--report", metavar="DIR", help="afterwards write tables and report to DIR")
    p.add_argument(
        "--launcher-prefix",
        default="",
        help="command put before 'python launch.py', e.g. 'srun' for multi-node SLURM tasks",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.preset not in PRESETS:
            raise UserError(f"--preset={args.preset!r}: expected one of {PRESETS}")
        sweep = load_sweep(args.sweep)
        if "://" in args.root:  # jaxgen.paths: a run's workdir may be a URL, a sweep's root not
            raise UserError(
                f"--root={args.root}: a sweep's root must be a local folder (it links "
                "checkpoints between runs and writes the launches' logs there)"
            )
        root = os.path.abspath(args.root)
        only = [n for n in args.only.split(",") if n]
        for name in only:
            sweep.run(name)
        check_configs(sweep, args.preset)
        prefix = tuple(shlex.split(args.launcher_prefix))
        if args.slurm:
            os.makedirs(os.path.join(root, "_slurm"), exist_ok=True)
            script = slurm.slurm_script(
                sweep, args.sweep, root, args.preset, args.sbatch, args.max_parallel, prefix
            )
            with open(args.slurm, "w") as f:
                f.write(script)
            os.chmod(args.slurm, 0o755)
            tasks = len(sweep.groups())
            print(f"wrote {args.slurm} ({tasks} array tasks); submit with: sbatch {args.slurm}")
            return 0
        if args.dry_run:
            dry_run(sweep, root, args.preset, only, prefix=prefix)
            return 0
        outcome = run_sweep(sweep, root, args.preset, only, prefix=prefix)
        failed = sorted(n for n, o in outcome.items() if o in ("failed", "blocked"))
        print(f"sweep {sweep.name}: " + ", ".join(f"{n} {o}" for n, o in outcome.items()))
        if args.report:
            from experiments import report

            report.write_report(args.root, args.report)  # as given: the page names it
            print(f"tables and report in {args.report}")
        return 1 if failed else 0
    except UserError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
