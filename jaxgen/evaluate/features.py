"""Feature extractors for the sample metrics.

Extractors (``evals.<name>.features``):
  * ``domain``: the small classifier trained on the run's dataset by
    ``configs/classifier.py`` (weights ``jaxgen/evaluate/weights/<data>_classifier.npz``
    or ``evals.<name>.classifier_weights``): penultimate-layer features and logits.
  * ``inception``: the FID InceptionV3 (pool3, 2048-d, and the 1008 logits); weights
    from ``evals.<name>.inception_weights`` (see :mod:`jaxgen.evaluate.inception_weights`).
  * ``pixels``: the flattened image in [0, 1] (no logits).
  * ``contrastive``: a residual GroupNorm network trained without labels (SimCLR) by
    ``scripts/train_feature_net.py`` (weights ``jaxgen/evaluate/weights/<data>_contrastive.npz``
    or ``evals.<name>.feature_net_weights``): the pooled output of each stage, scaled and
    concatenated (:mod:`jaxgen.evaluate.feature_net_weights`), no logits. Independent of
    ``domain`` in architecture and recipe, and not made invariant to noise or blur.

Features of real data, computed once per dataset, split, image size, extractor (with a
fingerprint of its weights) and number of images, are cached by
:mod:`jaxgen.evaluate.feature_cache`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import re
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen import parallel
from jaxgen.errors import UserError
from jaxgen.preemption import check_active
from jaxgen.progress import Progress
from jaxgen.weight_files import read_npz_with_meta

EXTRACTORS = ("domain", "inception", "pixels", "contrastive")
WEIGHTS_DIR = os.path.join(os.path.dirname(__file__), "weights")


def fit_to(images: np.ndarray, shape: tuple[int, int, int] | None) -> np.ndarray:
    """uint8 ``[N, H, W, C]`` resized (bilinear, as the data pipeline's
    :class:`~jaxgen.data.pipeline.ResizedSource`) to ``shape``'s height and width; unchanged
    when they already match or ``shape`` is None."""
    images = np.asarray(images)
    if shape is None or images.ndim != 4 or tuple(images.shape[1:3]) == tuple(shape[:2]):
        return images
    from PIL import Image

    h, w = int(shape[0]), int(shape[1])
    out = []
    for image in images:
        pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
        out.append(np.asarray(pil.resize((w, h), Image.BILINEAR), np.uint8).reshape(h, w, -1))
    return np.stack(out) if out else images.reshape(0, h, w, images.shape[-1])


@dataclasses.dataclass(frozen=True)
class Extractor:
    """A jitted feature function with a name that identifies it in caches and results.

    Attributes:
      name: ``domain``, ``inception`` or ``pixels``.
      weights: path of the weight file ('' for pixels).
      fingerprint: first 12 hex digits of the weight file's SHA-256 ('' for pixels).
      num_classes: width of the logits (0: no logits).
      image_shape: the (H, W, C) it accepts, or None for any.
      apply: ``apply(float32 [B, H, W, C] in [0, 1]) -> (features [B, D], logits [B, K] | None)``.
      batch_size: images per call of ``apply``.
    """

    name: str
    weights: str
    fingerprint: str
    num_classes: int
    image_shape: tuple[int, int, int] | None
    apply: Callable
    batch_size: int = 256

    @property
    def key(self) -> str:
        return f"{self.name}-{self.fingerprint}" if self.fingerprint else self.name

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """uint8 ``[N, H, W, C]`` -> ``{"features": float32 [N, D], "logits": [N, K] (if any)}``.

        Images of another height and width (28 x 28 digits for the 8 x 8 digits classifier)
        are resized to the extractor's input first; another channel count is an error.
        """
        images = fit_to(images, self.image_shape)
        if self.image_shape is not None and tuple(images.shape[1:]) != tuple(self.image_shape):
            raise UserError(
                f"{self.name} feature extractor ({self.weights}) expects images of shape "
                f"{tuple(self.image_shape)}, got {tuple(images.shape[1:])}"
            )
        mesh = parallel.make_mesh()
        batch = parallel.round_up(self.batch_size, mesh.size)  # rows split over every device
        progress = Progress(f"{self.name} features on {mesh.size} device(s)", len(images))
        feats, logits = [], []
        for start in range(0, len(images), batch):
            check_active()
            chunk = images[start : start + batch]
            # Padded to one compiled shape for every call (the pad rows repeat the last image).
            rows = parallel.shard_rows(chunk, mesh, batch)
            f, lg = parallel.gather_rows(self.apply(rows.astype(jnp.float32) / 255.0))
            feats.append(np.asarray(f)[: len(chunk)])
            if lg is not None:
                logits.append(np.asarray(lg)[: len(chunk)])
            progress.update(start + len(chunk))
        out = {"features": np.concatenate(feats).astype(np.float32)}
        if logits:
            out["logits"] = np.concatenate(logits).astype(np.float32)
        return out


def file_fingerprint(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]


# --- the domain classifier's weight file -----------------------------------------------


def default_classifier_weights(data_name: str) -> str:
    """``jaxgen/evaluate/weights/<data>_classifier.npz`` (``:`` and ``/`` become ``_``)."""
    return os.path.join(WEIGHTS_DIR, f"{re.sub(r'[^A-Za-z0-9_.-]', '_', data_name)}_classifier.npz")


def save_classifier(path: str, params, meta: dict) -> None:
    """Writes ``params`` (flattened ``params/<module>/<leaf>``) and ``meta`` (JSON) to ``path``.

    ``meta`` holds at least ``num_classes``, ``channels``, ``feature_dim`` and ``image_shape``.
    """
    from jaxgen.evaluate.inception_weights import flatten

    flat = {f"params/{k}": np.asarray(v, np.float32) for k, v in flatten(params).items()}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    np.savez_compressed(path, meta=np.asarray(json.dumps(meta, sort_keys=True)), **flat)


def _classifier_net(meta: dict, path: str):
    """The :class:`ClassifierNet` ``meta`` describes and its parameter shapes
    (``{"<module>/<leaf>": shape}``), traced without computing anything."""
    from jaxgen.evaluate.inception_weights import flatten
    from jaxgen.models.classifier import ClassifierNet

    try:
        net = ClassifierNet(
            num_classes=int(meta["num_classes"]),
            channels=tuple(int(c) for c in meta["channels"]),
            feature_dim=int(meta["feature_dim"]),
        )
        image = jax.ShapeDtypeStruct((1, *(int(d) for d in meta["image_shape"])), jnp.float32)
        shapes = jax.eval_shape(net.init, jax.random.key(0), image)["params"]
    except Exception as e:  # non-integer sizes, a non-positive width or image size, ...
        detail = " ".join(str(e).split())[:200]
        raise UserError(
            f"classifier weights {path}: its meta describes no valid model ({detail})"
        ) from None
    return net, {k: tuple(v.shape) for k, v in flatten(shapes).items()}


def load_classifier(path: str) -> tuple[dict, dict]:
    """``(params, meta)`` from a file written by :func:`save_classifier`.

    Raises:
      UserError: naming ``path``: unreadable, no ``meta``, or parameters whose names and
        shapes do not fit the model ``meta`` describes (the first mismatch is named).
    """
    from jaxgen.evaluate.inception_weights import unflatten

    required = {"num_classes", "channels", "feature_dim", "image_shape"}
    flat, meta = read_npz_with_meta(
        path, "classifier weights", required, lambda meta: _classifier_net(meta, path)[1]
    )
    return unflatten(flat), meta


@functools.lru_cache(maxsize=8)
def _domain_extractor(path: str, mtime: float) -> Extractor:
    del mtime  # part of the cache key only
    params, meta = load_classifier(path)
    net, _ = _classifier_net(meta, path)
    # Parameters are an argument, not constants folded into the compiled program.
    jitted = jax.jit(functools.partial(net.apply, return_features=True))
    apply = functools.partial(jitted, {"params": jax.tree.map(jnp.asarray, params)})
    return Extractor(
        name="domain",
        weights=path,
        fingerprint=file_fingerprint(path),
        num_classes=int(meta["num_classes"]),
        image_shape=tuple(meta["image_shape"]),
        apply=apply,
    )


@functools.lru_cache(maxsize=4)
def _contrastive_extractor(path: str, mtime: float) -> Extractor:
    del mtime
    from jaxgen.evaluate import feature_net_weights

    params, meta = feature_net_weights.load(path)
    net, _ = feature_net_weights.network(meta, path)
    features = feature_net_weights.feature_fn(net, [float(c) for c in meta["stage_scales"]])
    jitted = jax.jit(lambda variables, x: (features(variables, x), None))
    return Extractor(
        name="contrastive",
        weights=path,
        fingerprint=file_fingerprint(path),
        num_classes=0,
        image_shape=tuple(meta["image_shape"]),
        apply=functools.partial(jitted, {"params": jax.tree.map(jnp.asarray, params)}),
    )


@functools.lru_cache(maxsize=2)
def _inception_extractor(path: str, mtime: float) -> Extractor:
    del mtime
    from jaxgen.evaluate.inception_weights import load_inception_variables
    from jaxgen.models.inception import NUM_LOGITS, InceptionV3

    variables = load_inception_variables(path)
    net = InceptionV3()
    return Extractor(
        name="inception",
        weights=path,
        fingerprint=file_fingerprint(path),
        num_classes=NUM_LOGITS,
        image_shape=None,
        apply=functools.partial(jax.jit(net.apply), jax.tree.map(jnp.asarray, variables)),
        batch_size=50,
    )


def _pixels(x: jax.Array) -> tuple[jax.Array, None]:
    return x.reshape(x.shape[0], -1), None


def get_extractor(cfg, data_name: str) -> Extractor:
    """The extractor named by ``cfg.features`` (default ``domain``) for dataset ``data_name``;
    ``cfg.batch_size`` (optional) sets the images per call."""
    extractor = _get_extractor(cfg, data_name)
    batch_size = int(cfg.get("batch_size", 0) or 0)
    return dataclasses.replace(extractor, batch_size=batch_size) if batch_size > 0 else extractor


def _weights_path(cfg, data_name: str) -> str:
    """The existing weight file of ``cfg``'s extractor ('' for ``pixels``).

    Raises:
      UserError: an unknown extractor, or a weight file that is not set or does not exist.
    """
    name = cfg.get("features", "domain")
    if name == "pixels":
        return ""
    if name == "domain":
        path = cfg.get("classifier_weights", "") or default_classifier_weights(data_name)
        if not os.path.isfile(path):
            raise UserError(
                f"no domain classifier for data {data_name!r}: {path} does not exist; train "
                f"one with `python launch.py --config=configs/classifier.py:data={data_name} "
                "--workdir=<dir>` and `python scripts/export_classifier.py --workdir=<dir>`"
            )
        return path
    if name == "inception":
        from jaxgen.evaluate.inception_weights import require_file

        path = cfg.get("inception_weights", "")
        require_file(path)
        return path
    if name == "contrastive":
        from jaxgen.evaluate.feature_net_weights import default_weights

        path = cfg.get("feature_net_weights", "") or default_weights(data_name)
        if not os.path.isfile(path):
            raise UserError(
                f"no contrastive feature net for data {data_name!r}: {path} does not exist; "
                f"train one with `python scripts/train_feature_net.py --data={data_name}`"
            )
        return path
    raise UserError(f"evals option features={name!r}: expected one of {EXTRACTORS}")


def check_weights(cfg, data_name: str) -> str:
    """Checks, without building the network, that the weight file of ``cfg``'s extractor
    exists, loads, and holds the names and shapes the network expects; returns its path
    ('' for ``pixels``). The ``quality`` evaluator's second extractor (``features2``) is
    checked the same way, and its ``realism_k`` / ``realism_keep`` / ``density_k`` options.

    Raises:
      UserError: naming the file and what is wrong with it, or the bad option.
    """
    if cfg.get("type", "") == "quality":
        from jaxgen.evaluate.realism import density_k
        from jaxgen.evaluate.realism import options as realism_options

        realism_options(cfg)
        density_k(cfg)
    if cfg.get("features2", ""):
        import ml_collections

        if cfg.features2 == cfg.get("features", "domain"):
            raise UserError(f"features2={cfg.features2!r}: the same extractor as features")
        if cfg.get("num_real", None) == 0:
            raise UserError(f"features2={cfg.features2!r} needs real images; num_real=0 reads none")
        second = ml_collections.ConfigDict(dict(cfg.to_dict(), features=cfg.features2))
        second.features2 = ""
        try:
            check_weights(second, data_name)
        except UserError as e:
            raise UserError(f"second extractor (features2={cfg.features2!r}): {e}") from None
    path = _weights_path(cfg, data_name)
    if cfg.get("features", "domain") == "domain":
        load_classifier(path)
    elif cfg.get("features") == "contrastive":
        from jaxgen.evaluate import feature_net_weights

        feature_net_weights.load(path)
    elif path:
        from jaxgen.evaluate.inception_weights import load_inception_variables

        load_inception_variables(path)
    return path


def feature_dim(cfg, data_name: str, image_shape=None) -> int | None:
    """Width of the features ``cfg``'s extractor gives, known without running it: 2048 for
    ``inception``, the classifier's ``feature_dim`` for ``domain``, ``H * W * C`` of
    ``image_shape`` for ``pixels`` (None when ``image_shape`` is not given).

    Raises:
      UserError: as :func:`check_weights`, for a missing or unreadable weight file.
    """
    name = cfg.get("features", "domain")
    if name == "pixels":
        return int(np.prod(image_shape)) if image_shape is not None else None
    path = _weights_path(cfg, data_name)
    if name == "domain":
        return int(load_classifier(path)[1]["feature_dim"])
    if name == "contrastive":
        from jaxgen.evaluate import feature_net_weights

        return int(feature_net_weights.load(path)[1]["feature_dim"])
    from jaxgen.models.inception import FEATURE_DIM

    return FEATURE_DIM


def _get_extractor(cfg, data_name: str) -> Extractor:
    path = _weights_path(cfg, data_name)
    name = cfg.get("features", "domain")
    if name == "pixels":
        return Extractor("pixels", "", "", 0, None, jax.jit(_pixels))
    if name == "domain":
        return _domain_extractor(os.path.abspath(path), os.path.getmtime(path))
    if name == "contrastive":
        return _contrastive_extractor(os.path.abspath(path), os.path.getmtime(path))
    return _inception_extractor(os.path.abspath(path), os.path.getmtime(path))
