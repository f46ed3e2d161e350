"""The state of a sweep's run directories, judged from the files on disk.

Which stages of a run are still to do (:func:`pending_stages`), whether it is finished, the
``sweep.json`` record of its launch arguments, and the checkpoints link and ``config.json`` of
a sampling-only run (:func:`prepare_shared`). Layout: ``<root>/<run>/``.
"""

from __future__ import annotations

import json
import os

from experiments import rundir
from experiments.commands import config_spec, override_flags, override_values, stages_of, workdir
from experiments.spec import Run, Sweep
from jaxgen.errors import UserError
from jaxgen.overrides import apply_overrides


def training_dir(sweep: Sweep, root: str, run: Run) -> str:
    """Where ``run``'s checkpoints and resolved training config are written."""
    owner = sweep.run(run.shares_training_with) if run.shares_training_with else run
    return workdir(root, owner)


def draws_samples(config: dict) -> bool:
    """Whether the family of a run's ``config.json`` draws images (``--mode=sample`` is an
    error for one that does not: a classifier, CLIP); a family it cannot find is taken to."""
    from jaxgen.methods import describe_family

    try:
        return describe_family(config).is_generator
    except UserError:
        return True


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
    if draws_samples(config) and not os.path.isfile(rundir.sample_path(wd, step)):
        pending.append("sample")
    return pending


def is_finished(sweep: Sweep, root: str, run: Run) -> bool:
    """Latest checkpoint step == ``train.num_steps`` and the eval file of that step exists."""
    return not any(s in ("train", "eval") for s in pending_stages(sweep, root, run))


def record(sweep: Sweep, run: Run, root: str, preset: str) -> dict:
    """The ``sweep.json`` of ``run``: the sweep, the run and its launch arguments."""
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


def write_json(path: str, payload) -> None:
    """Writes ``payload`` to ``path`` atomically (a temporary file, then a rename)."""
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
    config = apply_overrides(config, override_values(run, root))
    write_json(os.path.join(wd, "config.json"), config)
