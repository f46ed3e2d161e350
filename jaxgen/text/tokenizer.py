"""Tokenizers that need no download: word-level (vocabulary from a corpus) or byte-level.

Both give ``[BOS] pieces [EOS]`` padded with ``PAD`` (id 0) to ``max_len`` and are
serialised to JSON, so a run saves its tokenizer next to its checkpoint and a later
run reads it back.

* ``word``: text is lowercased and split on whitespace; the punctuation marks
  ``, . ; : ! ? ( )`` at either end of a word are pieces of their own. Words
  outside the vocabulary become ``UNK``. ``decode(encode(t))`` is the canonical
  form of ``t`` (lowercase, single spaces).
* ``byte``: the UTF-8 bytes of the text, id = byte + 4; ``decode(encode(t)) == t``.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import re
from collections.abc import Iterable, Sequence

import numpy as np

from jaxgen.errors import UserError

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
KINDS = ("word", "byte")
FORMAT_VERSION = 1

_EDGE_PUNCT = ",.;:!?()"
_P = re.escape(_EDGE_PUNCT)
_PIECE = re.compile(rf"[{_P}]|[^\s{_P}]+(?:\S*[^\s{_P}])?")
_NO_SPACE_BEFORE = set(",.;:!?)")
_NO_SPACE_AFTER = set("(")


def split_words(text: str) -> list[str]:
    """Lowercases and splits ``text`` into word pieces (see the module docstring)."""
    return _PIECE.findall(text.lower())


def join_words(words: Sequence[str]) -> str:
    """Inverse of :func:`split_words` on canonical text: no space before ``,.;:!?)``."""
    out = ""
    for w in words:
        if out and w not in _NO_SPACE_BEFORE and out[-1] not in _NO_SPACE_AFTER:
            out += " "
        out += w
    return out


@dataclasses.dataclass(frozen=True)
class Tokenizer:
    """A word- or byte-level tokenizer, made by :func:`word_tokenizer` or :func:`byte_tokenizer`.

    Attributes:
      kind: ``word`` or ``byte``.
      max_len: length of every encoded sequence, ``BOS`` and ``EOS`` included.
      words: the word vocabulary (ids ``4 ...``), empty for ``byte``.
    """

    kind: str
    max_len: int
    words: tuple[str, ...] = ()

    def __post_init__(self):
        if self.kind not in KINDS:
            raise UserError(f"tokenizer kind {self.kind!r}: expected one of {KINDS}")
        if int(self.max_len) < 3:
            raise UserError(f"tokenizer max_len={self.max_len}: expected at least 3")
        if self.kind == "byte" and self.words:
            raise UserError("a byte tokenizer has no word vocabulary")
        object.__setattr__(self, "_ids", {w: i + len(SPECIALS) for i, w in enumerate(self.words)})

    @property
    def vocab_size(self) -> int:
        return len(SPECIALS) + (256 if self.kind == "byte" else len(self.words))

    @property
    def pad_id(self) -> int:
        return PAD

    def encode(self, text: str) -> list[int]:
        """``[BOS] pieces [EOS]`` without padding, truncated to ``max_len``."""
        if self.kind == "byte":
            pieces = [b + len(SPECIALS) for b in text.encode("utf-8")]
        else:
            pieces = [self._ids.get(w, UNK) for w in split_words(text)]
        return [BOS, *pieces[: self.max_len - 2], EOS]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``; special tokens are dropped (``UNK`` reads ``<unk>``)."""
        ids = [int(i) for i in ids if int(i) not in (PAD, BOS, EOS)]
        if self.kind == "byte":
            data = bytes(i - len(SPECIALS) for i in ids if i >= len(SPECIALS))
            return data.decode("utf-8", errors="replace")
        return join_words([SPECIALS[i] if i < len(SPECIALS) else self.words[i - 4] for i in ids])

    def __call__(
        self, texts: Sequence[str], pad_to_longest: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Token ids int32 ``[B, L]`` and mask bool ``[B, L]`` (True at real tokens).

        ``L`` is ``max_len``, or the longest encoding when ``pad_to_longest``.
        """
        if isinstance(texts, str):
            raise TypeError("pass a list of texts, not one string")
        encoded = [self.encode(t) for t in texts]
        length = max((len(e) for e in encoded), default=1) if pad_to_longest else self.max_len
        ids = np.full((len(encoded), length), PAD, np.int32)
        for row, e in zip(ids, encoded, strict=True):
            row[: len(e)] = e
        return ids, ids != PAD

    def to_json(self) -> str:
        return json.dumps(
            {"format": FORMAT_VERSION, "kind": self.kind, "max_len": self.max_len,
             "words": list(self.words)}
        )  # fmt: skip

    @classmethod
    def from_json(cls, text: str) -> Tokenizer:
        try:
            d = json.loads(text)
            if d.get("format") != FORMAT_VERSION:
                raise ValueError(f"format {d.get('format')!r}, expected {FORMAT_VERSION}")
            return cls(kind=d["kind"], max_len=int(d["max_len"]), words=tuple(d["words"]))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise UserError(f"not a jaxgen tokenizer JSON: {e}") from None

    def save(self, path: str) -> None:
        """Writes the tokenizer's JSON to ``path`` (a local path or URL)."""
        from jaxgen import paths

        paths.write_text(path, self.to_json())

    @classmethod
    def load(cls, path: str) -> Tokenizer:
        """The tokenizer saved at ``path`` (a local path or URL)."""
        from jaxgen import paths

        try:
            text = paths.read_text(path)
        except OSError as e:
            raise UserError(f"cannot read tokenizer {path}: {e.strerror or e}") from None
        try:
            return cls.from_json(text)
        except UserError as e:
            raise UserError(f"{path}: {e}") from None


def word_tokenizer(corpus: Iterable[str], max_len: int, min_count: int = 1) -> Tokenizer:
    """A word tokenizer whose vocabulary is every word seen ``min_count`` times in ``corpus``.

    Words are sorted by decreasing count, then alphabetically, so the same corpus
    always gives the same ids.
    """
    counts = collections.Counter(w for text in corpus for w in split_words(text))
    words = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
    return Tokenizer("word", max_len, tuple(words))


def byte_tokenizer(max_len: int) -> Tokenizer:
    return Tokenizer("byte", max_len)
