"""How far the frozen text encoder alone can carry prompt following on held-out paraphrases.

  python benchmarks/text_encoder_ceiling.py          # all-MiniLM-L6-v2, frozen (text_encoder=bert)
  python benchmarks/text_encoder_ceiling.py --out runs/bench.jsonl

A text-conditioned generator sees a prompt only through the text encoder's embedding. For each
Fashion-MNIST prompt set of ``jaxgen.data.captions.prompt_sets`` (training captions, held-out
paraphrases of known words, held-out paraphrases with new words) this prints the share of
prompts whose pooled embedding (cosine similarity) is nearest

* ``nearest_caption``: a training caption of the prompted class, and
* ``nearest_centroid``: the mean embedding of the prompted class's training captions,

with the prompts that miss. A generator that follows its conditioning perfectly draws a prompt
that misses from another class, so the share bounds its prompt-following on that set from
above (before the judging classifier's own errors: the ``prompts`` evaluator's figures are
further capped by the domain classifier's accuracy).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def minilm_embedder():
    """``embed(texts) -> float [len(texts), D]``: unit-norm pooled embeddings of the frozen
    MiniLM that ``cond=text`` uses (``text_encoder=bert``), loaded once."""
    import jax.numpy as jnp

    from configs.ddpm import get_config
    from jaxgen.text import conditioning

    text_cfg = get_config("preset=cpu,cond=text,text_encoder=bert").text
    tokenizer = conditioning.build_tokenizer(text_cfg, "fashion_mnist")
    module, variables = conditioning.build_text_encoder(text_cfg, tokenizer)

    def embed(texts: list[str]) -> np.ndarray:
        ids, mask = tokenizer(texts, pad_to_longest=False)
        pooled = np.asarray(module.apply(variables, jnp.asarray(ids), jnp.asarray(mask)).pooled)
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)

    return embed


def ceiling(sets: dict[str, list[tuple[str, int]]], embed) -> dict[str, dict]:
    """Per prompt set: ``nearest_caption`` and ``nearest_centroid`` shares and the misses
    ``[(prompt, label, nearest caption's label)]``; ``embed(texts) -> [N, D]`` unit vectors."""
    train_texts = [p for p, _ in sets["train"]]
    train_labels = np.array([y for _, y in sets["train"]])
    train = embed(train_texts)
    classes = np.unique(train_labels)
    centroids = np.stack([train[train_labels == k].mean(0) for k in classes])
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    out = {}
    for name, rows in sets.items():
        labels = np.array([y for _, y in rows])
        emb = embed([p for p, _ in rows])
        sims = emb @ train.T
        if name == "train":  # a training caption is its own nearest neighbour: leave it out
            np.fill_diagonal(sims, -np.inf)
        by_caption = train_labels[sims.argmax(1)]
        by_centroid = classes[(emb @ centroids.T).argmax(1)]
        out[name] = dict(
            num_prompts=len(rows),
            nearest_caption=float((by_caption == labels).mean()),
            nearest_centroid=float((by_centroid == labels).mean()),
            misses=[
                (p, int(y), int(a)) for (p, y), a in zip(rows, by_caption, strict=True) if a != y
            ],
        )
    return out


def main(argv=None) -> int:
    from benchmarks.common import hardware, write_record
    from jaxgen.data import captions

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="", help="JSON-lines file to append to")
    args = parser.parse_args(argv)
    results = ceiling(captions.prompt_sets(), minilm_embedder())
    for name, r in results.items():
        print(
            f"{name}: {r['num_prompts']} prompts, nearest caption of the prompted class "
            f"{r['nearest_caption']:.1%}, nearest class centroid {r['nearest_centroid']:.1%}"
        )
        for prompt, label, got in r["misses"]:
            print(f"  miss: {prompt!r} (class {label}) is nearest class {got}")
        record = dict(benchmark="text_encoder_ceiling", text_encoder="bert",
                      prompt_set=name, **r, **hardware())  # fmt: skip
        write_record(record, args.out or None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
