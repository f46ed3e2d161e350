"""Text: tokenizers, text encoders and a BERT loader.

* ``tokenizer``: word-level (from a caption corpus) and byte-level tokenizers, JSON-serialisable.
* ``encoder``: a Flax Transformer text encoder; every encoder returns a ``TextEmbedding``
  (token embeddings ``[B, L, D]``, padding mask ``[B, L]``, pooled ``[B, D]``).
* ``wordpiece``, ``bert``: Hugging Face BERT folders -> Flax BERT
  (sentence embeddings as sentence-transformers, e.g. all-MiniLM-L6-v2).
* ``conditioning``: what a text-conditioned family needs from ``config.text``.
"""
