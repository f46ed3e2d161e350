"""Dotted config keys (``train.batch_size``) looked up in nested mappings, standard library only."""

from __future__ import annotations

MISSING = object()


def lookup(tree, key: str):
    """The value at dotted ``key`` in ``tree`` (a ConfigDict or dict), or :data:`MISSING` when a
    part of the path is absent."""
    node = tree
    for part in key.split("."):
        if not hasattr(node, "keys") or part not in node:
            return MISSING
        node = node[part]
    return node
