"""``run(config, workdir, mode)``: the entry point behind ``launch.py``.

Everything that can be checked before touching the disk is checked first
(mode, config values, data, checkpoints), so bad input leaves the workdir as
it was.
"""

from __future__ import annotations

import json
import logging
import os
import time

import jax
import ml_collections
import numpy as np

from jaxgen import parallel
from jaxgen.checkpoints import list_steps
from jaxgen.errors import UserError
from jaxgen.experiment import Experiment
from jaxgen.hardware import hardware
from jaxgen.images import make_grid, save_png
from jaxgen.methods import get_runner
from jaxgen.train import Trainer, run_evals

log = logging.getLogger("jaxgen")

MODES = ("train", "eval", "sample")


def validate_mode(mode: str) -> None:
    if mode not in MODES:
        raise UserError(f"--mode={mode!r}: expected one of {MODES}")


def write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
    if parallel.is_main_process():
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(json.dumps(json.loads(config.to_json_best_effort()), indent=2, sort_keys=True))


def run(config: ml_collections.ConfigDict, workdir: str, mode: str = "train"):
    """Trains, samples or evaluates ``config`` in ``workdir``; see DESIGN.md for the layout."""
    validate_mode(mode)
    if not config.get("family"):
        raise UserError("config key family is empty; use one of the files in configs/")
    runner = get_runner(config.family)
    if runner is not None:
        return runner(config, workdir, mode)
    if mode != "train" and not list_steps(workdir):
        raise UserError(
            f"no checkpoint in {os.path.join(workdir, 'checkpoints')}; train first (--mode=train)"
        )
    exp = Experiment(config, workdir)
    if mode == "train":
        write_config(config, workdir)
        return Trainer(exp).run()
    checkpoints = exp.checkpoints(read_only=True)
    try:
        step, state, _ = checkpoints.restore_latest(exp.abstract_sharded_state(), fall_back=True)
    finally:
        checkpoints.close()
    if mode == "sample":
        return sample(exp, state, step)
    from jaxgen.metric_writer import MetricWriter

    writer = MetricWriter(workdir, parallel.is_main_process())
    try:
        return run_evals(exp, state, step, final=True, writer=writer)
    finally:
        writer.close()


def sample(exp: Experiment, state, step: int) -> dict[str, np.ndarray]:
    """Writes ``samples/samples_<step>.npz`` (+ PNG grid) with ``sample.num`` images, and
    ``samples/timing_<step>.json`` (images/s once compiled) unless ``sample.timing_repeats=0``."""
    out = exp.generate(state, exp.config.sample.num, exp.sample_rng())
    timing = time_sampling(exp, state, step)
    if parallel.is_main_process():
        out_dir = os.path.join(exp.workdir, "samples")
        os.makedirs(out_dir, exist_ok=True)
        np.savez(os.path.join(out_dir, f"samples_{step}.npz"), **out)
        save_png(os.path.join(out_dir, f"samples_{step}.png"), make_grid(out["images"]))
        real = {k: np.stack([exp.eval_source[i][k] for i in range(2)]) for k in ("image", "label")}
        exp.method.write_extras(
            exp.method.sampling_params(state), real, jax.random.fold_in(exp.sample_rng(), 7),
            out_dir, step,
        )  # fmt: skip
        if timing is not None:
            with open(os.path.join(out_dir, f"timing_{step}.json"), "w") as f:
                json.dump(timing, f, indent=1, sort_keys=True)
        log.info("wrote %d samples to %s", len(out["images"]), out_dir)
    return out


def time_sampling(exp: Experiment, state, step: int) -> dict | None:
    """Throughput of ``sample.num`` images through ``exp.generate`` (prompt encoding, sampler,
    decoding), compiled: the median of ``sample.timing_repeats`` further calls, or None when 0.

    The record has the fields of a benchmark record (``experiments/README.md``): ``kind``
    ``sample``, ``images_per_sec``, ``seconds`` (per call), ``batch_size``, ``sampler``,
    ``steps``, ``guidance`` and the hardware, so the tables' inference-time column per
    hardware can come from the runs themselves.
    """
    repeats = int(exp.config.sample.get("timing_repeats", 0))
    if repeats <= 0:
        return None
    num = exp.config.sample.num
    seconds = []
    for i in range(repeats):
        rng = jax.random.fold_in(exp.sample_rng(), 1 + i)
        start = time.perf_counter()
        exp.generate(state, num, rng)  # host arrays: every image is finished when it returns
        seconds.append(time.perf_counter() - start)
    median = float(np.median(seconds))
    sample_cfg = exp.config.sample
    return {
        "kind": "sample",
        "family": exp.config.family,
        "step": step,
        "batch_size": num,
        "sampler": sample_cfg.get("sampler") or None,
        "steps": sample_cfg.get("steps") or None,
        "guidance": sample_cfg.get("guidance"),
        "seconds": median,
        "images_per_sec": num / median,
        "repeats": repeats,
        **hardware(),
    }
