"""``run(config, workdir, mode)`` of the ``style_transfer`` family (called by ``jaxgen.run``).

Style transfer optimises one image instead of training a model, so it has its own loop:

* ``--mode=train``: runs the optimisation and writes, in ``workdir``, ``config.json``,
  ``metrics.jsonl`` (``content_loss``, ``style_loss``, ``tv_loss``, ``loss``,
  ``steps_per_sec``, and the current ``height``/``width``), ``tb/``, ``samples/step_<N>.png``
  (the image every ``train.sample_every`` steps), ``stylized.png`` and ``stylized.json`` (which
  feature network was used and why, the settings, the final losses and the time). There is
  no checkpoint: a second run in the same workdir starts over and replaces these files of its
  own (``config.json`` keeps the first launch's config; ``launches.jsonl`` has every launch's).
  The workdir of another family is refused before anything is written (``jaxgen.run``).
* ``--mode=eval``: recomputes the three losses of the existing ``stylized.png`` under the
  given config and writes ``eval/step_<N>.json``.
* ``--mode=sample``: does not apply (there is no model to draw from): a UserError.

All inputs (settings, images, weight file) are checked before anything is written.
"""

from __future__ import annotations

import json
import logging
import sys
import time

import ml_collections
import numpy as np
from PIL import Image

from jaxgen import parallel, paths
from jaxgen.errors import UserError
from jaxgen.images import save_png, to_uint8
from jaxgen.metric_writer import MetricWriter
from jaxgen.style_transfer import inputs, network, optimize
from jaxgen.workdir import record_launch
from jaxgen.workdir_lock import owned_workdir

log = logging.getLogger(__name__)
MODES = ("train", "eval", "sample")


def settings_from_config(config: ml_collections.ConfigDict) -> optimize.Settings:
    """The typed optimisation settings of a ``configs/style_transfer.py`` config."""
    return optimize.Settings(
        size=int(config.data.image_size),
        num_scales=int(config.style.num_scales),
        num_steps=int(config.train.num_steps),
        init=config.style.init,
        optimizer=config.style.optimizer,
        learning_rate=float(config.optimizer.learning_rate),
        lbfgs_memory=int(config.style.lbfgs_memory),
        keep_colors=bool(config.style.keep_colors),
        style_scale=float(config.style.style_scale),
        seed=int(config.seed),
        log_every=int(config.train.log_every),
        sample_every=int(config.train.sample_every),
    )


# The data keys a style transfer run reads none of, at the values configs/style_transfer.py
# leaves them; only data.image_size (the output's longer side) applies.
UNREAD_DATA_KEYS = {"name": "none", "dir": "", "cond": "none"}


def check_no_dataset(data: ml_collections.ConfigDict) -> None:
    """Refuses a dataset asked of a run that reads none (its images are style.content and
    style.style), rather than ignoring it."""
    for key, unread in UNREAD_DATA_KEYS.items():
        if data.get(key, unread) != unread:
            raise UserError(
                f"config key data.{key}={data[key]!r}: style transfer reads no dataset; its "
                "images are style.content and style.style"
            )


def run(config: ml_collections.ConfigDict, workdir: str, mode: str = "train") -> dict[str, float]:
    """Runs ``mode`` (see module docstring); returns the final loss terms."""
    if mode == "sample":
        raise UserError(
            "--mode=sample does not apply to style_transfer (there is no model to sample); "
            "--mode=train writes stylized.png"
        )
    if mode not in MODES:
        raise UserError(f"--mode={mode!r}: expected one of {MODES}")
    check_no_dataset(config.data)
    settings = settings_from_config(config)
    settings.validate()
    content = inputs.load_image(config.style.content, "style.content")
    style = inputs.load_image(config.style.style, "style.style")
    net = network.build_network(config.model)
    optimize.check_sizes(content, style, net, settings)
    if mode == "eval":
        return _evaluate(config, workdir, settings, content, style, net)
    with owned_workdir(workdir, mode):
        return _train(config, workdir, settings, content, style, net)


def _train(config, workdir, settings, content, style, net) -> dict[str, float]:
    is_main = parallel.is_main_process()
    if is_main:
        _clear_previous_run(workdir)
        record_launch(workdir, config, "train", {}, sys.argv[1:])
    writer = MetricWriter(workdir, is_main)
    clock = {"time": time.perf_counter(), "step": 0}

    def on_log(step: int, terms: dict[str, float], shape: tuple[int, int]) -> None:
        now = time.perf_counter()
        scalars = {**terms, "height": shape[0], "width": shape[1]}
        if step > 0:  # step 0 is the initial image
            scalars["steps_per_sec"] = (step - clock["step"]) / max(now - clock["time"], 1e-9)
        clock.update(time=now, step=step)
        writer.write_scalars(step, scalars)
        log.info(
            "step %d (%dx%d): loss %.4g content %.4g style %.4g tv %.4g",
            step, *shape, terms["loss"], terms["content_loss"], terms["style_loss"],
            terms["tv_loss"],
        )  # fmt: skip

    def on_sample(step: int, image: np.ndarray) -> None:
        if is_main:
            pixels = to_uint8(image)
            save_png(paths.join(workdir, "samples", f"step_{step}.png"), pixels)
            writer.write_image(step, "stylized", pixels)

    result = optimize.stylize(content, style, net, settings, on_log=on_log, on_sample=on_sample)
    if is_main:
        pixels = to_uint8(result.image)
        save_png(paths.join(workdir, "stylized.png"), pixels)
        writer.write_image(result.steps, "stylized", pixels)
        metadata = {
            **net.metadata,
            "content": config.style.content,
            "style": config.style.style,
            "height": int(pixels.shape[0]),
            "width": int(pixels.shape[1]),
            "steps": result.steps,
            "seconds": round(result.seconds, 3),
            "optimizer": settings.optimizer,
            "init": settings.init,
            "num_scales": settings.num_scales,
            "keep_colors": settings.keep_colors,
            "loss_weights": {
                "content": net.content_weight,
                "style": net.style_weight,
                "tv": net.tv_weight,
            },
            "final": result.terms,
        }
        paths.write_text(paths.join(workdir, "stylized.json"), json.dumps(metadata, indent=2))
        log.info(
            "style transfer (%s features): wrote %s in %.1f s",
            net.name, paths.join(workdir, "stylized.png"), result.seconds,
        )  # fmt: skip
    writer.close()
    return result.terms


def _evaluate(config, workdir, settings, content, style, net) -> dict[str, float]:
    path = paths.join(workdir, "stylized.png")
    if not paths.is_file(path):
        raise UserError(f"--mode=eval: {path} does not exist; run --mode=train first")
    with Image.open(paths.binary_reader(path)) as im:
        image = np.asarray(im.convert("RGB"), np.float32) / 255.0
    shape = inputs.output_shape(content, settings.size)
    if image.shape[:2] != shape:
        raise UserError(
            f"--mode=eval: {path} is {image.shape[1]}x{image.shape[0]}, but this config "
            f"(data.image_size={settings.size}) makes {shape[1]}x{shape[0]} images"
        )
    terms = optimize.evaluate(image, content, style, net, settings)
    step = settings.num_steps
    meta_path = paths.join(workdir, "stylized.json")
    if paths.is_file(meta_path):
        step = int(json.loads(paths.read_text(meta_path)).get("steps", step))
    if parallel.is_main_process():
        paths.write_text(
            paths.join(workdir, "eval", f"step_{step}.json"), json.dumps(terms, indent=2)
        )
    return terms


def _clear_previous_run(workdir: str) -> None:
    """Removes the outputs of an earlier run, so the loss curve and samples are this run's."""
    paths.makedirs(workdir)
    stale = [paths.join(workdir, n) for n in ("metrics.jsonl", "stylized.png", "stylized.json")]
    stale += paths.glob(paths.join(workdir, "samples"), "step_*.png")
    stale += paths.glob(paths.join(workdir, "tb"), "events.out.tfevents.*")
    for path in stale:
        if paths.is_file(path):
            paths.remove(path)


def describe(config):
    """What the comparison tables print for a style-transfer run (``config``: its saved
    config, a dict or ConfigDict): the generic description; it draws no images from a model.
    The family's counterpart of :meth:`jaxgen.methods.base.Method.describe`."""
    from jaxgen.methods.description import describe_config

    return describe_config(config, is_generator=False)
