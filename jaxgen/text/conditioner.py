"""Text conditioning of a generator: captions in the data, a text encoder, prompts at sampling.

A family with ``cond=text`` holds one :class:`TextConditioner`. It adds text fields to
every training example, owns the text encoder's parameters (or its frozen pretrained
weights), and turns those fields into a :class:`~jaxgen.text.encoder.TextEmbedding`
inside the family's loss and sampler:

* a text encoder trained jointly with the generator (``text.encoder=transformer``): the
  examples carry ``tokens`` int32 ``[L]``; the encoder's parameters are a subtree of the
  family's parameters (:meth:`TextConditioner.init_params`), so they are optimised,
  averaged and checkpointed with the generator;
* a frozen pretrained encoder (``text.encoder=bert``, e.g. all-MiniLM-L6-v2): its outputs
  depend on the caption only, so each distinct caption is encoded once on the host and
  cached; the examples carry ``text_tokens`` float32 ``[L, D]``, ``text_mask`` bool ``[L]``
  and ``text_pooled`` float32 ``[D]``, and the training step does no text-encoder work.

Classifier-free guidance drops the text of some examples: :func:`drop_text` replaces
their embedding with the null text (no real token, zero pooled vector).
"""

from __future__ import annotations

import json
import logging
import threading

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxgen.checkpoints import list_steps, newest_saved_item
from jaxgen.errors import UserError
from jaxgen.text.conditioning import (
    build_text_encoder,
    build_tokenizer,
    caption_corpus,
    caption_of,
    default_text_config,
)
from jaxgen.text.encoder import TextEmbedding
from jaxgen.text.tokenizer import Tokenizer

log = logging.getLogger("jaxgen")

TOKEN_FIELD = "tokens"
FROZEN_FIELDS = ("text_tokens", "text_mask", "text_pooled")
PARAMS_KEY = "text_encoder"


def text_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """``config.text`` over the defaults of :func:`default_text_config`."""
    merged = default_text_config()
    if "text" in config:
        merged.update(config.text)
    return merged


def drop_text(emb: TextEmbedding, drop: jax.Array) -> TextEmbedding:
    """The null text where ``drop`` (bool ``[B]``) is True, ``emb`` elsewhere."""
    keep = ~drop
    return TextEmbedding(
        tokens=jnp.where(keep[:, None, None], emb.tokens, 0.0),
        mask=emb.mask & keep[:, None],
        pooled=jnp.where(keep[:, None], emb.pooled, 0.0),
    )


# Frozen-encoder outputs per text, shared by every conditioner of the same text config in
# this process (a run's trainer, its sampler and the API load the same encoder).
_FROZEN_ENCODINGS: dict[str, dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}


def _frozen_encodings(cfg: ml_collections.ConfigDict) -> dict:
    """The process-wide ``text -> (tokens, mask, pooled)`` table of one frozen encoder."""
    key = json.dumps(cfg.to_dict(), sort_keys=True, default=str)
    return _FROZEN_ENCODINGS.setdefault(key, {})


class TextConditioner:
    """Tokenizer, text encoder and text fields of a text-conditioned family.

    Attributes:
      tokenizer: the tokenizer (saved beside the run's checkpoints, see
        :mod:`jaxgen.text.assets`).
      frozen: True for a pretrained encoder kept fixed (outputs cached per caption).
      width: ``D``, the width of the token and pooled embeddings.
      max_len: ``L``, tokens per caption.
      fields: the names of the text fields in a batch.
    """

    def __init__(self, config: ml_collections.ConfigDict, data_name: str):
        self.cfg = text_config(config)
        self.data_name = data_name
        self.tokenizer = build_tokenizer(self.cfg, data_name)
        self.module, self._frozen_vars = build_text_encoder(self.cfg, self.tokenizer)
        self.frozen = self._frozen_vars is not None
        self.max_len = int(self.cfg.max_len)
        self.fields = FROZEN_FIELDS if self.frozen else (TOKEN_FIELD,)
        self._cache = _frozen_encodings(self.cfg) if self.frozen else {}
        self._lock = threading.Lock()
        self._encode_fn = None
        if self.frozen:
            self.width = int(self._frozen_vars["params"]["bert"]["embeddings"]["word_embeddings"][
                "embedding"].shape[-1])  # fmt: skip
        else:
            self.width = int(self.cfg.width)

    def set_tokenizer(self, tokenizer) -> None:
        """Replaces the tokenizer by the one saved with a run (same vocabulary size)."""
        self.tokenizer = tokenizer
        if not self.frozen:
            self.module = self.module.clone(vocab_size=tokenizer.vocab_size)

    # --- the data pipeline ------------------------------------------------------
    def _tokenize(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        ids, mask = self.tokenizer(texts, pad_to_longest=False)
        return ids[:, : self.max_len], mask[:, : self.max_len]

    def _encode_frozen(self, texts: list[str], with_corpus: bool) -> dict[str, np.ndarray]:
        """Frozen-encoder fields of ``texts``, each distinct text encoded once per process.

        ``with_corpus``: encode the data's whole caption corpus along with the first miss (the
        data pipeline asks one caption at a time, and one 64-row call per caption would be 64
        times the work); prompts alone need only themselves.
        """
        missing = {t for t in texts if t not in self._cache}
        if missing:
            with self._lock:
                if self._encode_fn is None:
                    self._encode_fn = jax.jit(self.module.apply)
                if with_corpus:
                    missing |= set(self._corpus())
                missing = sorted(t for t in missing if t not in self._cache)
                for start in range(0, len(missing), 64):
                    chunk = missing[start : start + 64]
                    ids, mask = self._tokenize(chunk)
                    pad = 64 - len(chunk)  # one compiled shape
                    ids = np.pad(ids, ((0, pad), (0, 0)))
                    mask = np.pad(mask, ((0, pad), (0, 0)))
                    emb = jax.device_get(self._encode_fn(self._frozen_vars, ids, mask))
                    for i, text in enumerate(chunk):
                        self._cache[text] = (
                            np.asarray(emb.tokens[i], np.float32),
                            np.asarray(emb.mask[i], bool),
                            np.asarray(emb.pooled[i], np.float32),
                        )
        rows = [self._cache[t] for t in texts]
        return {name: np.stack([r[k] for r in rows]) for k, name in enumerate(FROZEN_FIELDS)}

    def _corpus(self) -> tuple[str, ...]:
        try:
            return caption_corpus(self.data_name)
        except UserError:  # a source with its own captions: encode them as they come
            return ()

    def text_fields(self, texts: list[str], with_corpus: bool = False) -> dict[str, np.ndarray]:
        """The batch fields of ``texts`` (``[N, ...]`` arrays named :attr:`fields`).

        ``with_corpus``: a frozen encoder also encodes the data's caption corpus at once (for
        the data pipeline, which asks for them one by one).
        """
        texts = list(texts)
        if self.frozen:
            return self._encode_frozen(texts, with_corpus)
        ids, _ = self._tokenize(texts)
        return {TOKEN_FIELD: ids}

    def example_transform(self):
        """Per-example transform: ``{"image", "label", *fields}`` from a captioned item."""
        seed = int(self.cfg.caption_seed)

        def transform(item: dict) -> dict:
            fields = self.text_fields([caption_of(item, seed)], with_corpus=True)
            return {
                "image": item["image"],
                "label": np.asarray(item["label"], np.int32),
                **{k: v[0] for k, v in fields.items()},
            }

        return transform

    # --- inside the model ---------------------------------------------------------
    def init_params(self, rng: jax.Array) -> dict:
        """``{PARAMS_KEY: variables}`` for a jointly trained encoder, ``{}`` for a frozen one."""
        if self.frozen:
            return {}
        tokens = jnp.zeros((1, self.max_len), jnp.int32)
        return {PARAMS_KEY: self.module.init(rng, tokens)["params"]}

    def embed(self, params: dict, batch: dict) -> TextEmbedding:
        """The text embedding of a batch: ``tokens [B, L, D]``, ``mask [B, L]``, ``pooled [B, D]``.

        Args:
          params: the family's parameters (the encoder's are under ``PARAMS_KEY``).
          batch: holds :attr:`fields` (from the pipeline or :meth:`text_fields`).
        """
        if self.frozen:
            tokens, mask, pooled = (batch[k] for k in FROZEN_FIELDS)
            return TextEmbedding(tokens=tokens, mask=mask.astype(bool), pooled=pooled)
        ids = batch[TOKEN_FIELD]
        return self.module.apply({"params": params[PARAMS_KEY]}, ids, ids != self.tokenizer.pad_id)

    def null_embedding(self, num: int) -> TextEmbedding:
        """The embedding of ``num`` empty texts: no real token, zero vectors."""
        return TextEmbedding(
            tokens=jnp.zeros((num, self.max_len, self.width), jnp.float32),
            mask=jnp.zeros((num, self.max_len), bool),
            pooled=jnp.zeros((num, self.width), jnp.float32),
        )

    def null_fields(self, num: int) -> dict[str, np.ndarray]:
        """Fields of ``num`` empty texts (the unconditional model's input)."""
        if self.frozen:
            return {
                "text_tokens": np.zeros((num, self.max_len, self.width), np.float32),
                "text_mask": np.zeros((num, self.max_len), bool),
                "text_pooled": np.zeros((num, self.width), np.float32),
            }
        return {TOKEN_FIELD: np.full((num, self.max_len), self.tokenizer.pad_id, np.int32)}

    def saved_tokenizer_json(self) -> str | None:
        """JSON of a corpus-built tokenizer; None for one read from a model folder."""
        return self.tokenizer.to_json() if isinstance(self.tokenizer, Tokenizer) else None


TOKENIZER_FILE = "tokenizer.json"


def sync_tokenizer(text: TextConditioner, workdir: str, write: bool) -> None:
    """Keeps a run's tokenizer with its checkpoints: ``<workdir>/tokenizer.json``.

    The first run writes it (when ``write``, i.e. on the main process); later runs on the
    same workdir (resume, sampling, evaluation) read it back, so the token ids stay those
    the model was trained with even if the corpus or the code's vocabulary changes.
    Tokenizers read from a pretrained model folder are not copied. ``workdir`` is a local
    path or a ``gs://`` / ``s3://`` URL.
    """
    from jaxgen import paths

    path = paths.join(workdir, TOKENIZER_FILE)
    if paths.exists(path):
        text.set_tokenizer(Tokenizer.load(path))
        return
    saved = text.saved_tokenizer_json()
    if saved is not None and list_steps(workdir):
        saved = _checkpoint_tokenizer(workdir)
        text.set_tokenizer(Tokenizer.from_json(saved))
    if write and saved is not None:
        paths.write_text(path, saved)


def _checkpoint_tokenizer(workdir: str) -> str:
    """The tokenizer JSON saved with the newest checkpoint of a trained ``workdir`` whose
    ``tokenizer.json`` is gone.

    Raises:
      UserError: when the checkpoints predate saving it: a tokenizer built again from the
        corpus and today's code may number the words otherwise, silently.
    """
    saved = newest_saved_item(workdir, "tokenizer")
    if saved is None:
        raise UserError(
            f"--workdir={workdir} holds checkpoints but not {TOKENIZER_FILE}, the vocabulary "
            "its text encoder was trained with (the checkpoints predate saving it with them); "
            "put the file back: a tokenizer built again may number the words otherwise"
        )
    log.warning(
        "--workdir=%s has no %s; using the tokenizer saved with its newest checkpoint",
        workdir, TOKENIZER_FILE,
    )  # fmt: skip
    return json.dumps(saved)
