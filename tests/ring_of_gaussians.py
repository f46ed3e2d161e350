"""A toy for GAN tests: 8 Gaussians on a ring of radius 2, and a small MLP for both players."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxgen.gan.step import Objective, two_player_step

MODES = 8
CENTRES = 2.0 * np.stack(
    [np.cos(2 * np.pi * np.arange(MODES) / MODES), np.sin(2 * np.pi * np.arange(MODES) / MODES)],
    -1,
)  # [8, 2]


class MLP(nn.Module):
    """Two ReLU layers of 64, then ``out`` linear outputs."""

    out: int

    @nn.compact
    def __call__(self, x):
        for _ in range(2):
            x = nn.relu(nn.Dense(64)(x))
        return nn.Dense(self.out)(x)


def ring(rng: jax.Array, n: int, std: float) -> jax.Array:
    """``n`` points ``[n, 2]``: a uniform mode plus ``N(0, std^2 I)``."""
    k = jax.random.randint(rng, (n,), 0, MODES)
    angle = 2 * jnp.pi * k / MODES
    centres = 2.0 * jnp.stack([jnp.cos(angle), jnp.sin(angle)], -1)
    return centres + std * jax.random.normal(jax.random.fold_in(rng, 1), (n, 2))


def nearest_mode(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(index [N], distance [N])`` of the mode nearest each point of ``x [N, 2]``."""
    dist = np.linalg.norm(np.asarray(x)[:, None] - CENTRES[None], axis=-1)
    return dist.argmin(1), dist.min(1)


def train_on_ring(players, g_net, d_net, steps: int, std: float, key: jax.Array, metric=""):
    """``steps`` two-player steps of ``players`` (whose functions apply ``g_net`` and
    ``d_net``) on batches of 128 ring points: non-saturating loss, lazy R1 (gamma 0.1 every 4
    updates), Adam 1e-3 (b1 0.5). Returns ``(params, trace)``: the players' parameters and
    the named metric at every step ``[steps]`` (None without ``metric``)."""
    objective = Objective(loss="nonsaturating", r1_gamma=0.1, r1_every=4)
    tx = optax.adam(1e-3, b1=0.5)
    params = {
        "generator": g_net.init(key, jnp.zeros((1, players.z_dim + players.info_codes))),
        "discriminator": d_net.init(jax.random.fold_in(key, 1), jnp.zeros((1, 2))),
    }
    opt_state = {name: tx.init(p) for name, p in params.items()}

    def body(carry, t):
        params, opt_state = carry
        rng = jax.random.fold_in(key, t)
        real = ring(jax.random.fold_in(rng, 7), 128, std)
        params, opt_state, _, metrics = two_player_step(
            players, objective, tx, tx, params, opt_state, {}, real, None, rng, t
        )
        return (params, opt_state), metrics[metric] if metric else None

    (params, _), trace = jax.jit(lambda c: jax.lax.scan(body, c, jnp.arange(steps)))(
        (params, opt_state)
    )
    return params, trace
