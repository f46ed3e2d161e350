"""Using jaxgen from Python: train a config, load a trained run, sample, score.

    import jaxgen

    jaxgen.train("configs/vae.py:preset=smoke", "runs/vae")
    run = jaxgen.load("runs/vae")                    # newest checkpoint, EMA parameters
    images = run.sample(16, seed=0)                  # uint8 [16, H, W, C]
    bits = run.likelihood(images)["bits_per_dim"]    # float64 [16]
    metrics = run.evaluate()                         # the run's config.evals

Everything goes through the launcher's own code (``jaxgen.run``, ``Experiment``), so a run
loaded here samples exactly what ``--mode=sample`` would with the same settings, and bad
input raises the launcher's :class:`~jaxgen.errors.UserError` (one line: what and where).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import ml_collections
import numpy as np

from jaxgen import paths, runtime
from jaxgen.errors import UserError
from jaxgen.sampling import SampleOptions

PARAMS = ("ema", "raw")


def _config(config: ml_collections.ConfigDict | str) -> ml_collections.ConfigDict:
    if isinstance(config, str):
        from jaxgen.cli import load_config_file

        return load_config_file(config)
    return config


def train(config: ml_collections.ConfigDict | str, workdir: str) -> None:
    """Trains ``config`` in ``workdir`` as ``launch.py --mode=train`` does (resuming from the
    newest checkpoint there); ``config`` is a ConfigDict or ``"configs/<family>.py[:args]"``.

    Raises:
      UserError: bad input, found before anything is written.
      Preempted: SIGTERM/SIGINT arrived; the workdir is resumable by the same call.
    """
    from jaxgen.run import run

    runtime.initialize()
    run(_config(config), workdir, "train")


def load(
    workdir: str,
    step: int | None = None,
    params: str = "ema",
    config: ml_collections.ConfigDict | None = None,
) -> Run:
    """A trained run, restored for sampling and scoring.

    Args:
      workdir: the run's folder (or ``gs://`` / ``s3://`` URL).
      step: the checkpoint to restore; None: the newest that restores.
      params: ``"ema"`` (the parameters ``--mode=sample`` uses) or ``"raw"`` (the trained
        parameters themselves).
      config: the config to build the model from; None: the one the run was trained with.
    """
    from jaxgen.run import restore_for_inference
    from jaxgen.saved_config import load_workdir_config
    from jaxgen.workdir import start_warnings_afresh

    if params not in PARAMS:
        raise UserError(f"params={params!r}: expected one of {PARAMS}")
    runtime.initialize()
    start_warnings_afresh()
    workdir = paths.normalize(workdir)
    config = config if config is not None else load_workdir_config(workdir)
    exp, step, state = restore_for_inference(config, workdir, step)
    if params == "raw":
        state = state.replace(ema_params=state.params)
    return Run(exp, step, state)


class Run:
    """A restored run: its config, checkpoint step and parameters (see :func:`load`)."""

    def __init__(self, exp, step: int, state):
        self._exp = exp
        self.step = step
        self.state = state

    @property
    def config(self) -> ml_collections.ConfigDict:
        return self._exp.config

    @property
    def family(self) -> str:
        return self._exp.config.family

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self._exp.spec.image_shape

    @property
    def class_names(self) -> tuple[str, ...]:
        return self._exp.data_description.class_names

    def _conditioning(self, exp, n: int, label, prompt) -> dict | None:
        cond = exp.spec.cond
        if label is not None and cond != "class":
            raise UserError(f"label=: this {self.family} run is not class-conditioned")
        if prompt is not None and cond != "text":
            raise UserError(f"prompt=: this {self.family} run is not text-conditioned")
        if cond == "class" and label is not None:
            labels = np.broadcast_to(np.asarray(label, np.int32), (n,))
            bad = labels[(labels < 0) | (labels >= exp.spec.num_classes)]
            if bad.size:
                raise UserError(f"label={int(bad[0])}: expected 0..{exp.spec.num_classes - 1}")
            return {"label": jax.numpy.asarray(labels)}
        if cond == "text" and prompt is not None:
            prompts = [prompt] * n if isinstance(prompt, str) else list(prompt)
            if len(prompts) != n:
                raise UserError(f"prompt=: {len(prompts)} prompts for {n} samples")
            return exp.method.text_conditioning(prompts)
        conditioning = exp.conditioning(n)  # the classes in turn, or the default prompts
        if conditioning is not None:
            conditioning.pop("prompts", None)
            conditioning.pop("prompt_labels", None)
        return conditioning

    def sample(
        self,
        n: int,
        seed: int | None = None,
        label: int | Sequence[int] | None = None,
        prompt: str | Sequence[str] | None = None,
        sampler: str | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        eta: float | None = None,
        final_snr: float | None = None,
        drs_percentile: float | None = None,
    ) -> np.ndarray:
        """``n`` samples, uint8 ``[n, H, W, C]``.

        Args:
          seed: samples are a function of the seed (and ``sample.batch_size``), not of the
            number of devices; None: the run's ``seed``, which gives the images
            ``--mode=sample`` writes for ``sample.num = n``.
          label: a class (int) or one per sample; None: the classes in turn (class runs).
          prompt: a prompt (str) or one per sample; None: training-style captions (text runs).
          sampler, steps, guidance, eta, final_snr, drs_percentile:
            :class:`~jaxgen.sampling.SampleOptions`
            for this call in place of the run's ``config.sample`` ones (None: the run's own);
            see docs/contract.md for each family's samplers.
        """
        if n < 1:
            raise UserError(f"n={n}: expected at least one sample")
        exp = self._exp
        options = SampleOptions.from_config(self.config.sample).replace(
            sampler=sampler,
            steps=steps,
            guidance=guidance,
            eta=eta,
            final_snr=final_snr,
            drs_percentile=drs_percentile,
        )
        options = exp.method.resolve_sample_options(options)
        conditioning = self._conditioning(exp, n, label, prompt)
        from jaxgen.experiment import SAMPLE_STREAM

        seed = self.config.seed if seed is None else seed
        rng = jax.random.fold_in(jax.random.PRNGKey(seed), SAMPLE_STREAM)
        return exp.sample_images(self.state, n, rng, conditioning, options=options)

    def likelihood(
        self,
        images: np.ndarray,
        labels: Sequence[int] | None = None,
        prompts: Sequence[str] | None = None,
        seed: int = 0,
        batch_size: int = 256,
    ) -> dict[str, np.ndarray]:
        """Per-image likelihood terms of uint8 ``[N, H, W, C]`` images, float64 ``[N]`` each:
        ``bits_per_dim`` (and e.g. ``nll`` in nats, or a VAE's ``elbo`` and ``nll_iwae``).

        Class runs need ``labels``, text runs ``prompts``. Raises UserError for a family
        without a likelihood (GANs, EDM, latent diffusion).
        """
        from jaxgen.evaluate.likelihood import per_example_likelihood

        exp = self._exp
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.shape[1:] != tuple(self.image_shape):
            raise UserError(
                f"images: expected uint8 [N, {', '.join(map(str, self.image_shape))}], "
                f"got {images.dtype} {list(images.shape)}"
            )
        if not exp.method.has_likelihood:
            raise UserError(f"family {self.family!r} has no likelihood")
        n = len(images)
        batch = {"image": images, "label": np.zeros(n, np.int32)}
        if exp.spec.cond == "class":
            if labels is None:
                raise UserError("labels=: this run is class-conditioned; give one per image")
            batch["label"] = np.asarray(labels, np.int32).reshape(n)
        if exp.spec.cond == "text":
            if prompts is None or len(prompts) != n:
                raise UserError("prompts=: this run is text-conditioned; give one per image")
            batch.update(exp.method.text.text_fields(list(prompts)))
        fields = exp.data_description.fields
        batch = {k: v for k, v in batch.items() if k in fields}
        chunks = per_example_likelihood(
            exp.method.likelihood,
            exp.method.sampling_params(self.state),
            lambda start, stop: {k: v[start:stop] for k, v in batch.items()},
            n,
            batch_size,
            jax.random.PRNGKey(seed),
            self.family,
        )
        terms: dict[str, list[np.ndarray]] = {}
        for _, chunk in chunks:
            for k, v in chunk.items():
                terms.setdefault(k, []).append(v)
        return {k: np.concatenate(v) for k, v in terms.items()}

    def evaluate(self, evals: Sequence[str] | None = None) -> dict[str, float]:
        """Runs the config's evaluators (``config.evals``; ``evals`` names a subset) on this
        checkpoint, as ``--mode=eval`` does, and returns their results; writes nothing."""
        exp = self._exp
        if evals is not None:
            unknown = sorted(set(evals) - set(exp.config.evals))
            if unknown:
                raise UserError(
                    f"evals={unknown}: the run's config.evals has {sorted(exp.config.evals)}"
                )
            config = exp.config.copy_and_resolve_references()
            with config.unlocked():
                for name in list(config.evals):
                    if name not in evals:
                        del config.evals[name]
            from jaxgen.experiment import Experiment

            exp = Experiment(config, exp.workdir, training=False)
        return exp.evaluate(self.state, self.step, final=True)
