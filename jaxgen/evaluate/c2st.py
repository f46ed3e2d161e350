"""Classifier two-sample test (Lopez-Paz & Oquab, "Revisiting Classifier Two-Sample
Tests", ICLR 2017).

A fresh classifier learns to tell held-out real images from generated ones (here on
their features: a one-hidden-layer MLP on standardised features). Its accuracy on a
test half that it never saw estimates how distinguishable the two distributions are:
0.5 when they are the same, 1.0 when they are separable. ``fooled`` is the share of
generated test images the classifier calls real (0.5 ideal, 0 when it catches all).
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax


class _MLP(nn.Module):
    hidden: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return nn.Dense(1)(nn.relu(nn.Dense(self.hidden)(x)))[:, 0]


@functools.partial(jax.jit, static_argnames=("hidden", "steps", "learning_rate", "weight_decay"))
def _fit_and_score(x_train, y_train, x_test, seed, *, hidden, steps, learning_rate, weight_decay):
    """Trains the MLP on ``x_train [N, D]``, ``y_train [N]`` (full-batch AdamW, ``steps``
    steps) and returns its logits of ``x_test [M, D]``: one compiled program."""
    model = _MLP(hidden)
    params = model.init(jax.random.key(seed), x_train[:1])
    tx = optax.adamw(learning_rate, weight_decay=weight_decay)

    def loss_fn(p):
        return optax.sigmoid_binary_cross_entropy(model.apply(p, x_train), y_train).mean()

    def step(carry, _):
        p, opt = carry
        grads = jax.grad(loss_fn)(p)
        updates, opt = tx.update(grads, opt, p)
        return (optax.apply_updates(p, updates), opt), None

    (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), None, length=steps)
    return model.apply(params, x_test)


def classifier_two_sample_test(
    real: np.ndarray,
    generated: np.ndarray,
    seed: int = 0,
    hidden: int = 128,
    steps: int = 500,
    learning_rate: float = 1e-3,
    weight_decay: float = 1e-4,
) -> dict[str, float]:
    """Trains on half of each set, tests on the other half.

    Args:
      real: ``[N, D]`` features of held-out real images (label 1).
      generated: ``[M, D]`` features of generated images (label 0). Both sets are cut
        to ``min(N, M)`` rows so that chance accuracy is 0.5.
      seed: shuffling and initialisation seed.
      hidden, steps, learning_rate, weight_decay: the MLP and its full-batch AdamW.

    Returns:
      ``accuracy`` (test accuracy), ``fooled`` (share of generated test rows classified
      as real), ``num_train`` and ``num_test`` (rows, both classes together).
    """
    rng = np.random.default_rng(seed)
    n = min(len(real), len(generated))
    if n < 4:
        raise ValueError(f"C2ST needs at least 4 samples of each set, got {n}")
    real = np.asarray(real, np.float32)[rng.permutation(len(real))[:n]]
    generated = np.asarray(generated, np.float32)[rng.permutation(len(generated))[:n]]
    half = n // 2
    x_train = np.concatenate([real[:half], generated[:half]])
    y_train = np.concatenate([np.ones(half), np.zeros(half)]).astype(np.float32)
    x_test = np.concatenate([real[half:], generated[half:]])
    y_test = np.concatenate([np.ones(n - half), np.zeros(n - half)]).astype(np.float32)
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    logits = _fit_and_score(
        jnp.asarray(x_train), jnp.asarray(y_train), jnp.asarray(x_test), seed, hidden=hidden,
        steps=steps, learning_rate=learning_rate, weight_decay=weight_decay,
    )  # fmt: skip
    called_real = np.asarray(logits) > 0.0
    return {
        "accuracy": float((called_real == (y_test > 0.5)).mean()),
        "fooled": float(called_real[y_test < 0.5].mean()),
        "num_train": float(len(x_train)),
        "num_test": float(len(x_test)),
    }
