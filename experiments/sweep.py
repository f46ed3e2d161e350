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
* sample is done when ``samples/samples_<N>.npz`` exists (never run for the ``classifier`` and
  ``clip`` families, which draw no images).

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
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments import rundir
from experiments.spec import Ref, Run, Sweep, load_sweep
from jaxgen.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRESETS = ("smoke", "cpu", "full")
STAGES = ("train", "eval", "sample")
FAMILIES_WITHOUT_SAMPLES = ("classifier", "clip")  # --mode=sample is an error for them

# runner(argv, log_path) -> exit status; argv is command(): [*prefix, "python", "launch.py", ...]
Runner = Callable[[list[str], str], int]


# --- commands ------------------------------------------------------------------------------
def _text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(_text(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    return str(value)


def config_spec(run: Run, preset: str) -> str:
    """``configs/<family>.py:preset=<p>,key=value,...`` of ``run``."""
    pairs = [f"preset={preset}"] + [f"{k}={_text(v)}" for k, v in run.args.items()]
    return f"{run.config}:{','.join(pairs)}"


def override_flags(run: Run, root: str) -> list[str]:
    flags = []
    for key, value in run.overrides.items():
        if isinstance(value, Ref):
            value = os.path.join(root, value.name)
        flags.append(f"--config.{key}={_text(value)}")
    return flags


def workdir(root: str, run: Run) -> str:
    return os.path.join(root, run.name)


def command(run: Run, root: str, preset: str, mode: str, prefix=()) -> list[str]:
    """The launcher argv of one stage of ``run``: ``[*prefix, "python", "launch.py", ...]``.

    The sample stage times the compiled sampler (``sample.timing_repeats``, off by default)
    for the tables' inference-time column, unless the run sets it itself.
    """
    timing = []
    if mode == "sample" and "sample.timing_repeats" not in run.overrides:
        timing = [f"--config.sample.timing_repeats={1 if preset == 'smoke' else 3}"]
    return [
        *prefix,
        "python",
        "launch.py",
        f"--config={config_spec(run, preset)}",
        f"--workdir={workdir(root, run)}",
        f"--mode={mode}",
        *override_flags(run, root),
        *timing,
    ]


def check_configs(sweep: Sweep, preset: str) -> None:
    """Loads every run's config file with its arguments and checks that each override names an
    existing key, so that a typo fails before anything runs."""
    import ml_collections

    from jaxgen.cli import load_config_file

    for run in sweep.runs:
        spec = config_spec(run, preset)
        config = load_config_file(os.path.join(REPO, spec))
        for key in run.overrides:
            node = config
            for part in key.split("."):
                if not isinstance(node, (ml_collections.ConfigDict, dict)) or part not in node:
                    raise UserError(
                        f"sweep {sweep.name!r}, run {run.name!r}: --config.{key}: {run.config} "
                        "has no such key"
                    )
                node = node[part]


def stages_of(run: Run) -> tuple[str, ...]:
    return STAGES[1:] if run.shares_training_with else STAGES


# --- state of a run directory ----------------------------------------------------------------
def training_dir(sweep: Sweep, root: str, run: Run) -> str:
    """Where ``run``'s checkpoints and resolved training config are written."""
    owner = sweep.run(run.shares_training_with) if run.shares_training_with else run
    return workdir(root, owner)


def pending_stages(sweep: Sweep, root: str, run: Run) -> list[str]:
    """The stages of ``run`` still to do, judged from the files on disk."""
    train_dir = training_dir(sweep, root, run)
    config_file = os.path.join(train_dir, "config.json")
    step = rundir.latest_checkpoint_step(train_dir)
    if step is None or not os.path.isfile(config_file):
        return list(stages_of(run))
    config = rundir.read_json(config_file)
    if step < int(rundir.get_key(config, "train.num_steps", 0)):
        return list(stages_of(run))
    wd = workdir(root, run)
    pending = []
    if rundir.get_key(config, "evals") and not os.path.isfile(rundir.eval_path(wd, step)):
        pending.append("eval")
    draws = config.get("family") not in FAMILIES_WITHOUT_SAMPLES
    if draws and not os.path.isfile(rundir.sample_path(wd, step)):
        pending.append("sample")
    return pending


def is_finished(sweep: Sweep, root: str, run: Run) -> bool:
    """Latest checkpoint step == ``train.num_steps`` and the eval file of that step exists."""
    return not any(s in ("train", "eval") for s in pending_stages(sweep, root, run))


def record(sweep: Sweep, run: Run, root: str, preset: str) -> dict:
    return {
        "sweep": sweep.name,
        "sweep_file": sweep.path,
        "sweep_arg": sweep.arg,
        "run": run.name,
        "preset": preset,
        "config": config_spec(run, preset),
        "overrides": override_flags(run, root),
        "shares_training_with": run.shares_training_with,
        "description": run.description,
    }


def check_record(run: Run, root: str, rec: dict) -> None:
    """Refuses a run directory started with other launch arguments."""
    path = os.path.join(workdir(root, run), "sweep.json")
    if not os.path.isfile(path):
        return
    old = rundir.read_json(path)
    for key in ("config", "overrides", "shares_training_with"):
        if old.get(key) != rec[key]:
            raise UserError(
                f"{workdir(root, run)} holds run {run.name!r} started with {key}="
                f"{old.get(key)!r}, not {rec[key]!r}; use another --root or remove that directory"
            )


def _write_json(path: str, payload) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


def prepare_shared(sweep: Sweep, root: str, run: Run) -> None:
    """Links ``<run>/checkpoints`` to the base run's and writes the variant's ``config.json``:
    the base run's resolved config with the variant's overrides applied."""
    base = sweep.run(run.shares_training_with)
    wd, base_dir = workdir(root, run), workdir(root, base)
    os.makedirs(wd, exist_ok=True)
    link = os.path.join(wd, "checkpoints")
    target = os.path.join("..", base.name, "checkpoints")
    if os.path.islink(link):
        if os.readlink(link) != target:
            raise UserError(f"{link} links to {os.readlink(link)!r}, not {target!r}")
    elif os.path.exists(link):
        raise UserError(f"{link} exists and is not a link to {base_dir}/checkpoints")
    else:
        os.symlink(target, link)
    config = rundir.read_json(os.path.join(base_dir, "config.json"))
    for key, value in run.overrides.items():
        if isinstance(value, Ref):
            value = os.path.join(root, value.name)
        _set_key(config, key, value)
    _write_json(os.path.join(wd, "config.json"), config)


def _set_key(tree: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
    old = node.get(leaf)
    if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    node[leaf] = list(value) if isinstance(value, tuple) else value


# --- local execution ----------------------------------------------------------------------------
def _with_interpreter(argv: list[str]) -> list[str]:
    """``argv`` with the ``python`` before ``launch.py`` replaced by this interpreter."""
    i = argv.index("launch.py") - 1
    return [*argv[:i], sys.executable, *argv[i + 1 :]]


def subprocess_runner(argv: list[str], log_path: str) -> int:
    """Runs a launcher command from the repository root, appending its output to ``log_path``."""
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path, "a") as log:
        log.write(f"$ {shlex.join(argv)}\n")
        log.flush()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        proc = subprocess.run(
            _with_interpreter(argv), cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env
        )
    return proc.returncode


def _tail(path: str, lines: int = 15) -> str:
    try:
        with open(path) as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


def run_sweep(
    sweep: Sweep,
    root: str,
    preset: str,
    only: list[str] | None = None,
    runner: Runner = subprocess_runner,
    out=None,
    prefix=(),
) -> dict[str, str]:
    """Runs the pending stages of every run (of ``only``, when given) in dependency order.

    Returns run name -> ``finished`` (now), ``skipped`` (finished before), ``failed`` (a
    launcher command failed, or exited 0 without finishing its stage, e.g. training stopped by
    a signal: run the sweep again to resume) or ``blocked`` (a run it depends on is not
    finished).
    """
    selected = set(only or sweep.names())
    runs = [r for r in sweep.runs if r.name in selected]  # dependency order
    records = {r.name: record(sweep, r, root, preset) for r in runs}
    for r in runs:
        check_record(r, root, records[r.name])
    outcome: dict[str, str] = {}

    def say(text: str) -> None:
        print(text, file=out or sys.stdout, flush=True)

    for i, run in enumerate(runs, 1):
        head = f"[{i}/{len(runs)}] {run.name}"
        blocked = [
            d
            for d in run.dependencies()
            if outcome.get(d) in ("failed", "blocked") or not is_finished(sweep, root, sweep.run(d))
        ]
        if blocked:
            outcome[run.name] = "blocked"
            say(f"{head}: blocked, {', '.join(blocked)} has not finished")
            continue
        if not pending_stages(sweep, root, run):
            outcome[run.name] = "skipped"
            say(f"{head}: finished before, skipped")
            continue
        _write_json(os.path.join(workdir(root, run), "sweep.json"), records[run.name])
        if run.shares_training_with:
            prepare_shared(sweep, root, run)
        outcome[run.name] = "finished"
        for stage in STAGES:
            if stage not in pending_stages(sweep, root, run):
                continue
            log_path = os.path.join(workdir(root, run), "logs", f"{stage}.log")
            say(f"{head}: {stage} (log: {log_path})")
            start = time.time()
            status = runner(command(run, root, preset, stage, prefix), log_path)
            if status != 0:
                outcome[run.name] = "failed"
                say(f"{head}: {stage} FAILED (exit status {status}); end of {log_path}:")
                say(_tail(log_path))
                break
            if stage in pending_stages(sweep, root, run):
                outcome[run.name] = "failed"
                step = rundir.latest_checkpoint_step(training_dir(sweep, root, run))
                say(
                    f"{head}: {stage} exited 0 but did not finish (latest checkpoint step: "
                    f"{step}); run the sweep again to resume"
                )
                break
            say(f"{head}: {stage} done in {time.time() - start:.1f} s")
    return outcome


def dry_run(sweep: Sweep, root: str, preset: str, only=None, out=None, prefix=()):
    """Prints the commands a local sweep would run now (one ``# <run>: ...`` header per run)."""
    out = out or sys.stdout
    names = set(only or sweep.names())
    for run in sweep.runs:
        if run.name not in names:
            continue
        pending = pending_stages(sweep, root, run)
        if not pending:
            print(f"# {run.name}: finished, skipped", file=out)
            continue
        print(f"# {run.name}: {', '.join(pending)}", file=out)
        if run.shares_training_with:
            link = os.path.join(workdir(root, run), "checkpoints")
            target = f"../{run.shares_training_with}/checkpoints"
            print(shlex.join(["ln", "-sfn", target, link]), file=out)
        for stage in pending:
            print(shlex.join(command(run, root, preset, stage, prefix)), file=out)


# --- command line ------------------------------------------------------------------------------
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
            from experiments import slurm  # imports this module: loaded when needed

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
