"""What an evaluator may use: the model as functions, its parameters, real data and samples.

Evaluators never see the family (:class:`~jaxgen.methods.base.Method`): whoever builds the
context (``jaxgen.experiment``) hands over the family's functions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxgen.data.spec import DataSpec, select_image_and_label


@dataclasses.dataclass
class EvalContext:
    """Shared by all evaluators of one evaluation round.

    Attributes:
      config: the run's full config.
      params: the parameters used for evaluation (EMA where the family keeps one).
      model_state: non-trainable state of the model.
      spec: image shape, number of classes and conditioning of the data.
      train_source / eval_source: random-access real data (train and eval split).
      rng: a key reserved for evaluation.
      workdir: the run directory (evaluators may cache files under it).
      generate_fn: ``generate_fn(num, rng) -> {"images": uint8 [num, H, W, C],
        "labels": int32 [num] (or absent)}``; read through :meth:`generate`, which caches
        the result per ``num``.
      prompts_fn: ``prompts_fn(prompts, rng) -> uint8 [len(prompts), H, W, C]``, one sample
        per prompt (text-conditioned models only).
      likelihood_fn: ``likelihood_fn(params, batch, rng) -> {term: [B], ...}`` per-example
        likelihood terms (``bits_per_dim``, nats, ...), or None for a model without one.
      batch_transform: the per-example function of the input pipeline, source item ->
        the fields a batch of this model holds (``image``, ``label``, text fields...).
      functions: further functions of the model by name, already bound to ``params``
        (:meth:`~jaxgen.methods.base.Method.eval_functions`), e.g. CLIP's
        ``encode_images`` and ``encode_texts``.
    """

    config: ml_collections.ConfigDict
    params: Any
    model_state: Any
    spec: DataSpec
    train_source: Any
    eval_source: Any
    rng: jax.Array
    workdir: str
    generate_fn: Callable[[int, jax.Array], dict[str, np.ndarray]] | None
    prompts_fn: Callable[[list[str], jax.Array], np.ndarray] | None = None
    likelihood_fn: Callable[[Any, dict, jax.Array], dict | None] | None = None
    batch_transform: Callable[[dict], dict] = select_image_and_label
    functions: dict[str, Callable] = dataclasses.field(default_factory=dict)
    _sample_cache: dict[int, dict[str, np.ndarray]] = dataclasses.field(default_factory=dict)

    def generate(self, num: int) -> dict[str, np.ndarray]:
        """``num`` samples from the model, the same ones for every evaluator."""
        if num not in self._sample_cache:
            self._sample_cache[num] = self.generate_fn(num, jax.random.fold_in(self.rng, num))
        return self._sample_cache[num]

    def real(self, num: int, split: str = "eval") -> dict[str, np.ndarray]:
        """The first ``num`` real images (uint8 [num, H, W, C]) and labels of a split."""
        source = self.eval_source if split == "eval" else self.train_source
        num = min(num, len(source))
        items = [source[i] for i in range(num)]
        return {
            "images": np.stack([x["image"] for x in items]),
            "labels": np.asarray([x["label"] for x in items], np.int32),
        }
