"""Captions for Fashion-MNIST: noun phrases and templates per class, some held out.

Each class has several noun phrases ("a pair of trousers", "jeans", ...) and every
caption is a template ("a photo of {}") filled with a phrase. Some phrases and some
templates are held out of training: a held-out caption uses a held-out phrase or a
held-out template, so it is a paraphrase the model never saw in training. Some
held-out captions use only words seen in training ("a winter jacket", "a grayscale
picture of a coat"); others bring new words ("jeans"), which only a pretrained text
encoder can know.

Captions are lowercase with single spaces, the canonical form of
:class:`jaxgen.text.tokenizer.Tokenizer`. Which caption an example gets is a pure
function of ``(seed, index)``.
"""

from __future__ import annotations

import functools
import re

import numpy as np

from jaxgen.errors import UserError

# Per class: (phrases used in training, phrases held out), in the order of
# ``jaxgen.data.sources.FASHION_MNIST_CLASSES``.
CLASS_PHRASES: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (("a t-shirt", "a top", "a tee", "a t-shirt top"), ("a short sleeve tee", "a crew neck top")),
    (("a pair of trousers", "trousers", "a pair of pants", "pants"), ("jeans", "a pair of slacks")),
    (("a pullover", "a sweater", "a jumper", "a warm pullover"), ("a warm sweater", "a hoodie")),
    (("a dress", "a gown", "a summer dress"), ("a summer gown", "a frock")),
    (("a coat", "a jacket", "a winter coat"), ("a winter jacket", "an overcoat")),
    (("a sandal", "a pair of sandals", "a flip-flop"), ("a summer sandal", "a pair of flip-flops")),
    (("a shirt", "a button-up shirt", "a blouse"), ("a button-up blouse", "a collared shirt")),
    (("a sneaker", "a pair of sneakers", "a running shoe", "a trainer"), ("a sports shoe",)),
    (("a bag", "a handbag", "a purse", "a leather bag"), ("a leather purse", "a tote bag")),
    (("an ankle boot", "a boot", "a pair of boots"), ("a pair of ankle boots", "a short boot")),
)  # fmt: skip

TRAIN_TEMPLATES = (
    "{}",
    "a photo of {}",
    "a picture of {}",
    "an image of {}",
    "a grayscale photo of {}",
    "a small image of {}",
)
HELDOUT_TEMPLATES = (
    "a grayscale picture of {}",
    "a small photo of {}",
    "a black and white photo of {}",
)

NUM_CLASSES = len(CLASS_PHRASES)


def _check_label(label: int) -> int:
    if not 0 <= int(label) < NUM_CLASSES:
        raise UserError(f"caption label {label}: expected an integer in [0, {NUM_CLASSES})")
    return int(label)


@functools.cache
def train_captions(label: int) -> tuple[str, ...]:
    """Every training caption of class ``label``: training phrases x training templates."""
    phrases, _ = CLASS_PHRASES[_check_label(label)]
    return tuple(t.format(p) for p in phrases for t in TRAIN_TEMPLATES)


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9'-]+", text))


@functools.cache
def train_vocabulary() -> frozenset[str]:
    """The words that occur in some training caption."""
    return frozenset(w for c in range(NUM_CLASSES) for s in train_captions(c) for w in _words(s))


@functools.cache
def heldout_captions(label: int, known_words_only: bool = False) -> tuple[str, ...]:
    """Paraphrases of class ``label`` never used in training.

    Args:
      label: the class index.
      known_words_only: keep only the captions all of whose words occur in some
        training caption (new combinations of known words).
    """
    train_phrases, heldout_phrases = CLASS_PHRASES[_check_label(label)]
    captions = [t.format(p) for p in heldout_phrases for t in TRAIN_TEMPLATES + HELDOUT_TEMPLATES]
    captions += [t.format(p) for p in train_phrases for t in HELDOUT_TEMPLATES]
    if known_words_only:
        vocab = train_vocabulary()
        captions = [c for c in captions if _words(c) <= vocab]
    return tuple(captions)


def all_captions() -> tuple[str, ...]:
    """Every caption of every class, training and held out (the tokenizer corpus)."""
    return tuple(
        c for label in range(NUM_CLASSES) for c in train_captions(label) + heldout_captions(label)
    )


def class_prompts(heldout: bool = False) -> list[list[str]]:
    """Per class, in label order, the captions that name it: the training captions, or
    (``heldout``) the held-out paraphrases."""
    pick = heldout_captions if heldout else train_captions
    return [list(pick(label)) for label in range(NUM_CLASSES)]


def prompt_sets() -> dict[str, list[tuple[str, int]]]:
    """Prompts and the class each one names, ``{set name: [(prompt, label), ...]}`` over the
    classes: ``train`` (training captions), ``heldout_known`` (held-out paraphrases made of
    words seen in training) and ``heldout_new`` (held-out paraphrases with new words)."""
    sets: dict[str, list[tuple[str, int]]] = {"train": [], "heldout_known": [], "heldout_new": []}
    for label in range(NUM_CLASSES):
        known = set(heldout_captions(label, known_words_only=True))
        sets["train"] += [(p, label) for p in train_captions(label)]
        for p in heldout_captions(label):
            sets["heldout_known" if p in known else "heldout_new"].append((p, label))
    return sets


def _mix(seed: int, index: int) -> int:
    """A 64-bit integer hash of ``(seed, index)`` (splitmix64 finaliser)."""
    x = (int(seed) * 0x9E3779B97F4A7C15 + int(index) + 0x632BE59BD9B4E019) & (2**64 - 1)
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & (2**64 - 1)
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & (2**64 - 1)
    return x ^ (x >> 31)


def caption_for(label: int, index: int, seed: int = 0, heldout: bool = False) -> str:
    """The caption of example ``index`` of class ``label``, a pure function of its arguments."""
    pool = heldout_captions(label) if heldout else train_captions(label)
    return pool[_mix(seed, index) % len(pool)]


class CaptionedSource:
    """Wraps a labelled source: every item gains ``caption`` (str) chosen by class.

    Items are ``{"image": uint8 [H, W, C], "label": int32, "caption": str}``. The
    caption of index ``i`` is ``caption_for(label, i, seed, heldout)``.
    """

    def __init__(self, source, seed: int = 0, heldout: bool = False):
        if getattr(source, "num_classes", 0) != NUM_CLASSES:
            raise UserError(
                f"captions exist for the {NUM_CLASSES} Fashion-MNIST classes; this source has "
                f"{getattr(source, 'num_classes', 0)} classes"
            )
        self.source = source
        self.seed = seed
        self.heldout = heldout
        self.image_shape = source.image_shape
        self.num_classes = source.num_classes
        self.class_names = source.class_names

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict[str, object]:
        item = dict(self.source[index])
        label = int(np.asarray(item["label"]))
        item["caption"] = caption_for(label, index, self.seed, self.heldout)
        return item
