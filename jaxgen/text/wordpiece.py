"""BERT's WordPiece tokenizer: basic tokenisation then greedy longest-match sub-words.

It reproduces the Hugging Face ``BertTokenizer``/``tokenizers`` pipeline for
uncased BERT models:

1. clean: drop NUL, U+FFFD and control characters; every whitespace becomes a space;
2. put spaces around CJK ideographs;
3. lowercase and strip accents (NFD, drop non-spacing marks) when asked;
4. split on whitespace and make every punctuation character its own word;
5. split each word into the longest vocabulary prefixes, later pieces written
   ``##rest``; a word that cannot be split (or has over 100 characters) is ``[UNK]``.

Sequences are ``[CLS] pieces [SEP]`` truncated to ``max_len`` and padded with ``[PAD]``.
"""

from __future__ import annotations

import json
import os
import unicodedata
from collections.abc import Sequence

import numpy as np

from jaxgen.errors import UserError

_CJK_RANGES = (
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F),
)  # fmt: skip


def _is_cjk(cp: int) -> bool:
    return any(lo <= cp <= hi for lo, hi in _CJK_RANGES)


def _is_whitespace(ch: str) -> bool:
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def _is_control(ch: str) -> bool:
    return ch not in "\t\n\r" and unicodedata.category(ch) in ("Cc", "Cf")


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


class WordPieceTokenizer:
    """Uncased/cased BERT tokenizer from a vocabulary list.

    Args:
      vocab: the tokens, id = position.
      lowercase: lowercase the text (uncased models).
      strip_accents: remove accents; None follows ``lowercase`` as in BERT.
      max_len: longest encoding, ``[CLS]`` and ``[SEP]`` included.
    """

    def __init__(
        self,
        vocab: Sequence[str],
        lowercase: bool = True,
        strip_accents: bool | None = None,
        max_len: int = 512,
        unk_token: str = "[UNK]",
        cls_token: str = "[CLS]",
        sep_token: str = "[SEP]",
        pad_token: str = "[PAD]",
        max_chars_per_word: int = 100,
    ):
        self.vocab = list(vocab)
        self.ids = {t: i for i, t in enumerate(self.vocab)}
        for token in (unk_token, cls_token, sep_token, pad_token):
            if token not in self.ids:
                raise UserError(f"WordPiece vocabulary lacks the special token {token}")
        self.lowercase = lowercase
        self.strip_accents = lowercase if strip_accents is None else strip_accents
        self.max_len = int(max_len)
        self.unk_id, self.cls_id = self.ids[unk_token], self.ids[cls_token]
        self.sep_id, self.pad_id = self.ids[sep_token], self.ids[pad_token]
        self.max_chars_per_word = max_chars_per_word

    # --- basic tokenisation -------------------------------------------------
    def _normalize(self, text: str) -> str:
        chars = []
        for ch in text:
            cp = ord(ch)
            if cp == 0 or cp == 0xFFFD or _is_control(ch):
                continue
            if _is_whitespace(ch):
                chars.append(" ")
            elif _is_cjk(cp):
                chars.append(f" {ch} ")
            else:
                chars.append(ch)
        text = "".join(chars)
        if self.strip_accents:
            text = "".join(
                c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn"
            )
        return text.lower() if self.lowercase else text

    def basic_tokenize(self, text: str) -> list[str]:
        """Words and punctuation marks, after cleaning and normalisation."""
        words = []
        for chunk in self._normalize(text).split():
            current = ""
            for ch in chunk:
                if _is_punctuation(ch):
                    if current:
                        words.append(current)
                    words.append(ch)
                    current = ""
                else:
                    current += ch
            if current:
                words.append(current)
        return words

    def _wordpiece(self, word: str) -> list[int]:
        if len(word) > self.max_chars_per_word:
            return [self.unk_id]
        pieces, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.ids:
                    pieces.append(self.ids[piece])
                    break
                end -= 1
            if end == start:
                return [self.unk_id]
            start = end
        return pieces

    # --- public API -----------------------------------------------------------
    def tokenize(self, text: str) -> list[str]:
        """WordPiece tokens of ``text`` (no special tokens)."""
        return [self.vocab[i] for w in self.basic_tokenize(text) for i in self._wordpiece(w)]

    def encode(self, text: str) -> list[int]:
        """``[CLS] pieces [SEP]`` ids, truncated to ``max_len``."""
        pieces = [i for w in self.basic_tokenize(text) for i in self._wordpiece(w)]
        return [self.cls_id, *pieces[: self.max_len - 2], self.sep_id]

    def __call__(
        self, texts: Sequence[str], pad_to_longest: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """Ids int32 ``[B, L]`` and mask bool ``[B, L]``; ``L`` is the longest or ``max_len``."""
        if isinstance(texts, str):
            raise TypeError("pass a list of texts, not one string")
        encoded = [self.encode(t) for t in texts]
        length = max((len(e) for e in encoded), default=2) if pad_to_longest else self.max_len
        ids = np.full((len(encoded), length), self.pad_id, np.int32)
        mask = np.zeros((len(encoded), length), bool)
        for row, (e, m) in enumerate(zip(encoded, mask, strict=True)):
            ids[row, : len(e)] = e
            m[: len(e)] = True
        return ids, mask

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)


def load_wordpiece(model_dir: str, max_len: int = 512) -> WordPieceTokenizer:
    """The tokenizer of a Hugging Face model folder: ``tokenizer.json`` or ``vocab.txt``.

    Lowercasing comes from ``tokenizer.json``'s normalizer, else from
    ``tokenizer_config.json``'s ``do_lower_case`` (default True).
    """
    tok_json = os.path.join(model_dir, "tokenizer.json")
    vocab_txt = os.path.join(model_dir, "vocab.txt")
    if os.path.exists(tok_json):
        try:
            with open(tok_json, encoding="utf-8") as f:
                spec = json.load(f)
            model = spec["model"]
            if model.get("type") != "WordPiece":
                raise UserError(f"{tok_json}: model type {model.get('type')!r}, expected WordPiece")
            by_id = sorted(model["vocab"].items(), key=lambda kv: kv[1])
            vocab = [t for t, _ in by_id]
            if [i for _, i in by_id] != list(range(len(vocab))):
                raise UserError(f"{tok_json}: vocabulary ids are not 0..{len(vocab) - 1}")
            norm = spec.get("normalizer") or {}
            return WordPieceTokenizer(
                vocab,
                lowercase=bool(norm.get("lowercase", True)),
                strip_accents=norm.get("strip_accents"),
                max_len=max_len,
                unk_token=model.get("unk_token", "[UNK]"),
                max_chars_per_word=int(model.get("max_input_chars_per_word", 100)),
            )
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
            raise UserError(f"{tok_json} is not a WordPiece tokenizer.json ({e})") from None
    if not os.path.exists(vocab_txt):
        raise UserError(f"{model_dir} has neither tokenizer.json nor vocab.txt")
    with open(vocab_txt, encoding="utf-8") as f:
        vocab = [line.rstrip("\n") for line in f]
    lowercase = True
    cfg_path = os.path.join(model_dir, "tokenizer_config.json")
    if os.path.exists(cfg_path):
        with open(cfg_path, encoding="utf-8") as f:
            cfg = json.load(f)
        lowercase = bool(cfg.get("do_lower_case", True))
        strip = cfg.get("strip_accents")
        return WordPieceTokenizer(vocab, lowercase, strip, max_len=max_len)
    return WordPieceTokenizer(vocab, lowercase, max_len=max_len)
