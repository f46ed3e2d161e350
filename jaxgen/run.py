"""``run(config, workdir, mode)``: the entry point behind ``launch.py``.

Everything that can be checked before touching the disk is checked first
(mode, config values, data, checkpoints), so bad input leaves the workdir as
it was.
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterable

import jax
import ml_collections
import numpy as np

from jaxgen import parallel, paths
from jaxgen.checkpoints import CheckpointMismatchError, list_steps
from jaxgen.data.description import (
    check_same_training_data,
    training_data_identity,
    write_description,
)
from jaxgen.errors import UserError
from jaxgen.experiment import Experiment
from jaxgen.hardware import hardware
from jaxgen.images import make_grid, save_png
from jaxgen.methods import get_runner
from jaxgen.preemption import StopRequest
from jaxgen.text.conditioner import sync_tokenizer
from jaxgen.trainer import Trainer, run_evals
from jaxgen.validate import check_config_values
from jaxgen.workdir import (
    check_resume_config,
    check_workdir,
    config_changes,
    config_dict,
    flatten,
    record_launch,
    trained_config,
)
from jaxgen.workdir_lock import owned_workdir

log = logging.getLogger("jaxgen")

MODES = ("train", "eval", "sample")
GRID_IMAGES = 64  # the sample grid shows the first 64 images; every image is in the .npz


def _added_keys(changes: dict, known: dict) -> list[str]:
    """``key=today's value`` for each key of ``changes`` (key -> (trained, today's)) that the
    run's flattened config ``known`` lacks: keys added to jaxgen since the run started."""
    return [f"{key}={value!r}" for key, (_, value) in changes.items() if key not in known]


def _with_new_keys(
    error: CheckpointMismatchError, changes: dict, trained: dict | None
) -> CheckpointMismatchError:
    """``error``, naming the keys of ``changes`` that the ``trained`` config lacks (added to
    jaxgen since), whose values today's config files may set to another model."""
    new = _added_keys(changes, flatten(trained or {}))
    if not new:
        return error
    return CheckpointMismatchError(
        f"{error}; keys added since this run started take today's values ({', '.join(new)}): "
        "relaunch with --workdir alone to train on with the run's own config"
    )


# Sections of the config whose keys can change a network's or its inputs' shapes.
SHAPE_SECTIONS = ("model", "data")
MAX_NAMED_KEYS = 6


def _with_trained_values(
    error: CheckpointMismatchError, config: ml_collections.ConfigDict, workdir: str
) -> CheckpointMismatchError:
    """``error``, naming the ``model.*`` and ``data.*`` values the run was trained with where
    ``config`` differs (a run trained with overrides, sampled or evaluated without them), and
    the ones ``config`` sets that the run's config lacks (keys added to jaxgen since, which
    have no trained value)."""
    trained = trained_config(workdir)
    if trained is None:
        return error
    changes = config_changes(trained, config_dict(config))
    known = flatten(trained)
    shaping = {k: v for k, v in changes.items() if k.split(".", 1)[0] in SHAPE_SECTIONS}
    differing = [k for k in shaping if k in known][:MAX_NAMED_KEYS]
    added = _added_keys(shaping, known)
    if not differing and not added:
        return error
    parts = []
    if differing:
        named = ", ".join(f"{k}={changes[k][0]!r}" for k in differing)
        more = sum(k in known for k in shaping) - len(differing)
        parts.append(f"the run was trained with {named}{f' and {more} more' if more else ''}")
    if added:
        parts.append(f"keys added since the run started take today's values ({', '.join(added)})")
    advice = "give those values, or leave" if differing else "leave"
    return CheckpointMismatchError(
        f"{error}; {'; '.join(parts)}: {advice} the config out to use the run's own "
        "(launch.py with --workdir alone)"
    )


def validate_mode(mode: str) -> None:
    if mode not in MODES:
        raise UserError(f"--mode={mode!r}: expected one of {MODES}")


def run(
    config: ml_collections.ConfigDict,
    workdir: str,
    mode: str = "train",
    *,
    allow_config_change: Iterable[str] = (),
    argv: Iterable[str] = (),
    stop: StopRequest | None = None,
):
    """Trains, samples or evaluates ``config`` in ``workdir`` (layout: ``docs/contract.md``).

    Args:
      allow_config_change: config keys a training relaunch may change although they alter
        the model, data or optimisation (``--allow_config_change``).
      argv: the command line, recorded in ``launches.jsonl``.
      stop: the installed SIGTERM/SIGINT handling (a fresh one is installed when None).

    Raises:
      UserError: bad input, found before anything is written.
      Preempted: a stop was requested; the workdir is left resumable.
    """
    validate_mode(mode)
    workdir = paths.normalize(workdir)  # a local path made absolute, or a gs:// / s3:// URL
    if not config.get("family"):
        raise UserError("config key family is empty; use one of the files in configs/")
    check_workdir(workdir, config.family)
    if stop is None:
        with StopRequest() as installed:
            return run(
                config, workdir, mode, allow_config_change=allow_config_change, argv=argv,
                stop=installed,
            )  # fmt: skip
    runner = get_runner(config.family)
    if runner is not None:  # a family without Experiment (style transfer): its checks here
        check_config_values(config)
        return runner(config, workdir, mode)
    if mode == "train":
        with owned_workdir(workdir, mode):
            return train(config, workdir, stop, allow_config_change, argv)
    exp, step, state = restore_for_inference(config, workdir)
    if parallel.is_main_process():
        record_launch(workdir, config, mode, {}, list(argv))
    if mode == "sample":
        return sample(exp, state, step)
    from jaxgen.metric_writer import MetricWriter

    writer = MetricWriter(workdir, parallel.is_main_process())
    try:
        return run_evals(exp, state, step, final=True, writer=writer)
    finally:
        writer.close()


def restore_for_inference(
    config: ml_collections.ConfigDict, workdir: str, step: int | None = None
) -> tuple[Experiment, int, object]:
    """``(experiment, step, state)`` of ``workdir``'s checkpoint ``step`` (None: the newest
    that restores), built without the training data where ``data.json`` describes them."""
    if get_runner(config.family) is not None:
        raise UserError(f"family {config.family!r} keeps no checkpoints to sample or score")
    if not list_steps(workdir):
        raise UserError(
            f"no checkpoint in {paths.join(workdir, 'checkpoints')}; train first (--mode=train)"
        )
    exp = Experiment(config, workdir, training=False)
    checkpoints = exp.checkpoints(read_only=True)
    try:
        return exp, *_restore(checkpoints, exp, step)
    except CheckpointMismatchError as e:
        raise _with_trained_values(e, config, workdir) from None
    finally:
        checkpoints.close()


def _restore(checkpoints, exp: Experiment, step: int | None) -> tuple[int, object]:
    """``(step, state)``: checkpoint ``step`` of ``checkpoints`` (None: the newest that
    restores) in ``exp``'s sharded state."""
    if step is None:
        step, state, _ = checkpoints.restore_latest(exp.abstract_sharded_state(), fall_back=True)
        return step, state
    if step not in checkpoints.all_steps():
        raise UserError(
            f"no checkpoint of step {step} in {checkpoints.directory}; it has "
            f"{checkpoints.all_steps()}"
        )
    state, _ = checkpoints.restore(step, exp.abstract_sharded_state())
    return step, state


def train(
    config: ml_collections.ConfigDict,
    workdir: str,
    stop: StopRequest,
    allow_config_change: Iterable[str],
    argv: Iterable[str],
):
    """Trains in a workdir this process owns: checks, restores, then writes."""
    changes = check_resume_config(workdir, config, allow_config_change)
    exp = Experiment(config, workdir)
    data_identity = training_data_identity(exp.train_source)
    check_same_training_data(workdir, config.data, data_identity)
    trainer = Trainer(exp, stop)
    try:
        state, data_state = trainer.prepare()
    except CheckpointMismatchError as e:
        raise _with_new_keys(e, changes, trained_config(workdir)) from None
    if parallel.is_main_process():
        record_launch(workdir, config, "train", changes, list(argv))
        write_description(workdir, config.data, exp.data_description, data_identity)
    if exp.method.text is not None:
        sync_tokenizer(exp.method.text, workdir, write=parallel.is_main_process())
    return trainer.run(state, data_state)


def sample(exp: Experiment, state, step: int) -> dict[str, np.ndarray]:
    """Writes ``sample.num`` images: ``samples/samples_<step>.npz``, a PNG grid of the first
    64 (``samples_<step>.png``), one PNG per image in ``samples/samples_<step>/`` when
    ``sample.write_pngs``, and ``samples/timing_<step>.json`` (images/s once compiled) when
    ``sample.timing_repeats > 0``."""
    log.info("sampling %d images from the checkpoint of step %d", exp.config.sample.num, step)
    out = exp.generate(state, exp.config.sample.num, exp.sample_rng())
    timing = time_sampling(exp, state, step)
    if parallel.is_main_process():
        out_dir = paths.join(exp.workdir, "samples")
        paths.makedirs(out_dir)
        save_npz(paths.join(out_dir, f"samples_{step}.npz"), out)
        save_png(paths.join(out_dir, f"samples_{step}.png"), make_grid(out["images"][:GRID_IMAGES]))
        if exp.config.sample.get("write_pngs", False):
            save_image_files(paths.join(out_dir, f"samples_{step}"), out["images"])
        write_extras(exp, state, out_dir, step)
        if timing is not None:
            paths.write_text(
                paths.join(out_dir, f"timing_{step}.json"),
                json.dumps(timing, indent=1, sort_keys=True),
            )
        log.info("wrote %d samples to %s", len(out["images"]), out_dir)
    return out


def write_extras(exp: Experiment, state, out_dir: str, step: int) -> None:
    """The family's extra sample outputs; those made from test images (a VAE's
    interpolation strip) are left out, with a log line, when the data cannot be opened."""
    real = None
    if exp.method.extras_use_test_images:
        try:
            real = {
                k: np.stack([exp.eval_source[i][k] for i in range(2)]) for k in ("image", "label")
            }
        except UserError as e:
            log.info("no %s outputs made from test images: %s", exp.config.family, e)
            return
    rng = jax.random.fold_in(exp.sample_rng(), 7)
    exp.method.write_extras(exp.method.sampling_params(state), real, rng, out_dir, step)


def save_image_files(folder: str, images: np.ndarray) -> None:
    """One PNG per uint8 ``[H, W, C]`` image of ``images``, named by index (``00000.png``);
    PNGs of an earlier, larger draw into ``folder`` are removed, so the folder holds exactly
    the ``.npz``'s images in its order."""
    paths.makedirs(folder)
    for stale in paths.glob(folder, "*.png"):
        paths.remove(stale)
    width = max(5, len(str(len(images) - 1)))
    for i, image in enumerate(images):
        save_png(paths.join(folder, f"{i:0{width}d}.png"), image)


def save_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
    """Writes ``arrays`` to ``path`` (a local path or URL) whole or not at all (locally a
    temporary file, then a rename; remotely one object write)."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    paths.write_bytes(path, buffer.getvalue())


def time_sampling(exp: Experiment, state, step: int) -> dict | None:
    """Throughput of ``sample.num`` images through ``exp.generate`` (prompt encoding, sampler,
    decoding), compiled: the median of ``sample.timing_repeats`` further calls, or None when 0.

    The record has the fields of a benchmark record (``experiments/README.md``): ``kind``
    ``sample``, ``images_per_sec``, ``seconds`` (per call), ``batch_size``, the ``sampler``,
    ``steps`` and ``guidance`` the samples were drawn with (the resolved
    :attr:`Experiment.sample_options`: a default sampler or step count is named; None for a
    family without one) and the hardware, so the tables' inference-time column per hardware
    can come from the runs themselves.
    """
    repeats = int(exp.config.sample.get("timing_repeats", 0))
    if repeats <= 0:
        return None
    num = exp.config.sample.num
    seconds = []
    for i in range(repeats):
        rng = jax.random.fold_in(exp.sample_rng(), 1 + i)
        start = time.perf_counter()
        # Host arrays come back: every image is finished when it returns.
        exp.generate(state, num, rng, "timed sampling")
        seconds.append(time.perf_counter() - start)
    median = float(np.median(seconds))
    options = exp.sample_options
    return {
        "kind": "sample",
        "family": exp.config.family,
        "step": step,
        "batch_size": num,
        "sampler": options.sampler or None,
        "steps": options.steps or None,
        "guidance": options.guidance,
        "seconds": median,
        "images_per_sec": num / median,
        "repeats": repeats,
        **hardware(),
    }
