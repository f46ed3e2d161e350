"""Mixed precision (``precision=bfloat16``) in every family; attention through
``jax.nn.dot_product_attention``.

Per family, on a tiny smoke-preset model (8 x 8 images, one fixed batch of 8), the
bfloat16 training step must

(a) keep parameters, optimizer state, EMA and model state float32;
(b) compute in bfloat16: at least ``Case.min_bf16_share`` of the matrix-multiply and
    convolution FLOPs of the step's jaxpr (backward pass included) have only bfloat16
    operands, and none has only float32 ones unless the family keeps some by design;
(c) train: at a fixed PRNG key (the step counter is reset before every step, so every
    update sees the same noise, dropout and latents, and the loss is a function of the
    parameters only) the loss on the fixed batch goes down;
(d) give, at the trained parameters and the same batch and key, a loss within
    ``Case.rtol`` of the float32 loss.

One compiled step per family serves (a) to (d) (:func:`run`); sampling is checked by
tracing only. JAX's persistent compilation cache (on through ``conftest.py``) makes
later runs of the file fast.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections import defaultdict

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend.core import ClosedJaxpr, Jaxpr

from jaxgen.data.spec import DataSpec
from jaxgen.errors import UserError
from jaxgen.gan.losses import get_loss
from jaxgen.methods import get_method_class
from jaxgen.methods.base import Method, images_to_symmetric
from tests.conftest import load_config

BATCH = 8
# Every optimizer gets a learning rate at which a few steps show progress, and a long
# schedule (the smoke preset's 4 steps would decay it to 0 after 4 updates).
TRAIN = (("optimizer.learning_rate", 2e-3), ("train.num_steps", 1000))
GAN_TRAIN = (*TRAIN, ("optimizer.d_learning_rate", 2e-3))
UNET = (*TRAIN, ("model.unet.ch_mult", (1,)))


@dataclasses.dataclass(frozen=True)
class Case:
    """A family's tiny configuration and its thresholds.

    ``rtol`` bounds ``|loss_bf16 - loss_f32| / max(|loss_f32|, 1)`` (for a GAN its
    discriminator and generator losses, the latter near 0 for a fresh hinge pair, hence
    the floor of 1). bfloat16 keeps 8 significant bits: each rounding is off by up to
    2^-9 = 0.2% relative; through a few layers the network outputs differ by about 1%,
    and a loss averaged over a batch of pixels averages much of that out. The measured
    differences are 0.002% to 0.2% (the SN-GAN's generator loss); 2% leaves a margin of
    ten times for other seeds and XLA versions, and is the bound of the VAE's test in
    ``test_scaling.py``.

    ``min_bf16_share``: share of the step's matmul/conv FLOPs with only bfloat16 operands.
    The rest is "mixed": the float32 logit cotangents times bfloat16 queries/keys in the
    backward pass of :func:`jax.nn.dot_product_attention` (whose softmax is float32).
    ``float32_matmuls``: the family keeps some matmuls float32 by design.
    """

    config: str
    shape: tuple[int, int, int]
    cond: str = "none"
    overrides: tuple[tuple[str, object], ...] = TRAIN
    steps: int = 6
    rtol: float = 0.02
    min_bf16_share: float = 0.9
    float32_matmuls: bool = False


CASES = {
    # DDPM (eps prediction) conditioned on text: self-attention and cross-attention to the
    # jointly trained text encoder (in bfloat16 too) in the UNet's middle block. One-level
    # UNets: faster to trace than the smoke preset's two levels, the same kinds of layers.
    "ddpm_eps_text": Case("configs/ddpm.py:preset=smoke,cond=text", (8, 8, 1), "text", UNET),
    "edm_class": Case("configs/ddpm.py:preset=smoke,edm=true,cond=class", (8, 8, 1), "class", UNET),
    "pixelcnn_pp": Case("configs/pixelcnn.py:preset=smoke,variant=pixelcnn_pp", (8, 8, 3)),
    "gated_pixelcnn": Case(
        "configs/pixelcnn.py:preset=smoke,variant=gated", (8, 8, 3), "none",
        (("model.features", 12), ("model.output_features", 12), *TRAIN),
    ),
    # The spectral norm's power iteration (matrix-vector products) is float32. With width-4
    # networks on micro-batches of 4 images it is 10% of the FLOPs, at real sizes nothing.
    "dcgan": Case(
        "configs/gan.py:preset=smoke,cond=class", (8, 8, 1), "class", GAN_TRAIN,
        min_bf16_share=0.85, float32_matmuls=True,
    ),
    "sngan_resnet": Case(
        "configs/gan.py:preset=smoke,arch=resnet", (8, 8, 1), "none",
        (("model.g_width", 8), ("model.d_width", 8), ("model.d_extra_blocks", 1), *GAN_TRAIN),
        float32_matmuls=True,
    ),
    "vae": Case("configs/vae.py:preset=smoke", (8, 8, 1)),
    "classifier": Case("configs/classifier.py:preset=smoke", (8, 8, 1)),
    # The [B, B] similarity logits of unit vectors (times a scale up to 100) are float32.
    "clip": Case("configs/clip.py:preset=smoke", (8, 8, 1), "text", float32_matmuls=True),
}  # fmt: skip
FAMILIES = list(CASES)


def _config(case: Case, precision: str):
    config = load_config(case.config)
    for key, value in case.overrides:
        *path, leaf = key.split(".")
        node = config
        for part in path:
            node = node[part]
        node[leaf] = value
    config.precision = precision
    return config


def _method(case: Case, precision: str) -> Method:
    config = _config(case, precision)
    return get_method_class(config.family)(config, DataSpec(case.shape, 10, case.cond))


def _batch(method: Method, shape) -> dict[str, jax.Array]:
    """``BATCH`` fixed images with structure (thresholded 2x2-blocky noise: 0 or 255) and
    labels; the text fields of their captions when the family reads text."""
    rng = np.random.default_rng(0)
    coarse = rng.normal(size=(BATCH, shape[0] // 2, shape[1] // 2, shape[2]))
    images = (np.repeat(np.repeat(coarse, 2, 1), 2, 2) > 0).astype(np.uint8) * 255
    labels = np.arange(BATCH, dtype=np.int32) % 10
    if method.text is None:
        return {"image": jnp.asarray(images), "label": jnp.asarray(labels)}
    transform = method.batch_transform()
    items = [transform({"image": images[i], "label": labels[i]}) for i in range(BATCH)]
    return {k: jnp.asarray(np.stack([item[k] for item in items])) for k in items[0]}


def matmul_flops(jaxpr) -> dict[str, float]:
    """FLOPs of the ``dot_general`` and ``conv_general_dilated`` of a jaxpr by operand dtypes:
    ``"bfloat16"`` (both operands), ``"float32"`` (both) or ``"mixed"``.

    Nested jaxprs (jit, scan, cond, custom derivatives, remat) are walked; a scan's body
    counts ``length`` times.
    """
    totals: dict[str, float] = defaultdict(float)

    def walk(jx: Jaxpr, times: float) -> None:
        for eqn in jx.eqns:
            name = eqn.primitive.name
            if name in ("dot_general", "conv_general_dilated"):
                lhs, rhs = eqn.invars[0].aval, eqn.invars[1].aval
                if name == "dot_general":
                    (lhs_contract, _), _ = eqn.params["dimension_numbers"]
                    per_output = math.prod(lhs.shape[d] for d in lhs_contract)
                else:
                    out_features = rhs.shape[eqn.params["dimension_numbers"].rhs_spec[0]]
                    per_output = rhs.size // out_features
                dtypes = {str(lhs.dtype), str(rhs.dtype)}
                kind = dtypes.pop() if len(dtypes) == 1 else "mixed"
                totals[kind] += times * 2.0 * math.prod(eqn.outvars[0].aval.shape) * per_output
            inner = times * (eqn.params["length"] if name == "scan" else 1)
            for value in eqn.params.values():
                for sub in value if isinstance(value, tuple | list) else (value,):
                    if isinstance(sub, ClosedJaxpr):
                        walk(sub.jaxpr, inner)
                    elif isinstance(sub, Jaxpr):
                        walk(sub, inner)

    walk(jaxpr.jaxpr if isinstance(jaxpr, ClosedJaxpr) else jaxpr, 1.0)
    return dict(totals)


def bf16_share(flops: dict[str, float]) -> float:
    return flops.get("bfloat16", 0.0) / sum(flops.values())


def _gan_losses(method, params, model_state, batch, rng):
    """``(d_loss, g_loss)`` of the players at ``params``: the batch against fixed latents."""
    real = images_to_symmetric(batch["image"])
    labels = batch["label"] if method.num_classes else None
    z = jax.random.normal(rng, (real.shape[0], method.config.model.z_dim))
    fake = method.players.generate(params["generator"], z, labels)
    disc = functools.partial(method.players.discriminate, params["discriminator"], model_state)
    out_real, _ = disc(real, labels, False)
    out_fake, _ = disc(fake, labels, False)
    d_loss_fn, g_loss_fn = get_loss(method.config.gan.loss)
    return d_loss_fn(out_real, out_fake), g_loss_fn(out_fake)


@dataclasses.dataclass
class Run:
    """What a family's bfloat16 steps gave."""

    method: Method  # the bfloat16 one
    state: object  # after ``steps`` updates
    losses: list[float]  # at the fixed key before each update and after the last (GAN: D's)
    flops: dict[str, float]  # matmul_flops of the step
    loss_bf16: tuple[float, ...]  # at ``state``'s parameters (GAN: d_loss, g_loss)
    loss_f32: tuple[float, ...]


@functools.cache
def run(name: str) -> Run:
    case = CASES[name]
    bf16 = _method(case, "bfloat16")
    batch = _batch(bf16, case.shape)
    tx = bf16.make_optimizer()
    state = jax.jit(lambda key, b: bf16.init_state(key, b, tx))(jax.random.PRNGKey(0), batch)

    def step(state, batch):
        return bf16.train_step(state.replace(step=jnp.zeros_like(state.step)), batch, tx, 0.9)

    traced = jax.jit(step).trace(state, batch)
    compiled = traced.lower().compile()
    is_gan = bf16.config.family == "gan"
    losses = []
    for i in range(case.steps + 1):
        new, metrics = compiled(state, batch)
        losses.append(float(metrics["d_loss" if is_gan else "loss"]))
        if i < case.steps:
            state = new
    f32 = _method(case, "float32")
    if is_gan:
        probe = jax.random.PRNGKey(5)
        args = (state.params, state.model_state, batch, probe)
        loss_bf16 = jax.jit(functools.partial(_gan_losses, bf16))(*args)
        loss_f32 = jax.jit(functools.partial(_gan_losses, f32))(*args)
    else:  # the key of the step (counter 0) of the last loss
        loss_bf16 = (losses[-1],)
        loss_f32 = (jax.jit(f32.loss)(state.params, batch, jax.random.fold_in(state.rng, 0))[0],)
    return Run(
        method=bf16,
        state=state,
        losses=losses,
        flops=matmul_flops(traced.jaxpr),
        loss_bf16=tuple(float(x) for x in loss_bf16),
        loss_f32=tuple(float(x) for x in loss_f32),
    )


@pytest.mark.parametrize("name", FAMILIES)
def test_state_stays_float32(name):
    state = run(name).state
    for part in ("params", "opt_state", "ema_params", "model_state"):
        leaves = jax.tree.leaves(getattr(state, part))
        floats = [x.dtype for x in leaves if jnp.issubdtype(x.dtype, jnp.floating)]
        assert floats or part == "model_state", part
        assert set(floats) <= {jnp.dtype(jnp.float32)}, (part, set(floats))


@pytest.mark.parametrize("name", FAMILIES)
def test_step_computes_in_bfloat16(name):
    r, case = run(name), CASES[name]
    assert bf16_share(r.flops) >= case.min_bf16_share, r.flops
    if not case.float32_matmuls:
        assert "float32" not in r.flops, r.flops


@pytest.mark.parametrize("name", FAMILIES)
def test_loss_goes_down(name):
    losses = run(name).losses
    assert np.all(np.isfinite(losses)), losses
    assert losses[-1] < 0.99 * losses[0], losses  # at least 1% lower after 6 updates


@pytest.mark.parametrize("name", FAMILIES)
def test_loss_matches_float32(name):
    r = run(name)
    for bf16, f32 in zip(r.loss_bf16, r.loss_f32, strict=True):
        assert abs(bf16 - f32) <= CASES[name].rtol * max(abs(f32), 1.0), (bf16, f32)


@pytest.mark.parametrize("name", ["ddpm_eps_text", "pixelcnn_pp", "dcgan", "vae"])
def test_sampling_networks_run_in_bfloat16_and_images_are_float32(name):
    """Traced only: ``sample`` evaluates its networks in bfloat16, the samplers' state
    (diffusion's ``x_t``) stays float32, and the images ``[N, H, W, C]`` are float32."""
    r = run(name)
    images = np.random.default_rng(0).integers(0, 256, (16, *CASES[name].shape), np.uint8)
    options = r.method.resolve_sample_options()
    # What the experiment does before it samples (the VAE's gmm sampler fits its mixture).
    params = r.method.prepare_sampling(
        r.method.sampling_params(r.state), options, [{"image": x} for x in images]
    )
    jaxpr = jax.make_jaxpr(r.method.sample, static_argnums=2)(params, jax.random.PRNGKey(1), 2)
    (out,) = jaxpr.out_avals
    assert out.dtype == jnp.float32 and out.shape == (2, *CASES[name].shape)
    assert bf16_share(matmul_flops(jaxpr)) >= 0.95
    if r.method.config.family == "ddpm":  # the sampler's lax.scan carries x_t
        carries = [v.aval.dtype for scan in _eqns(jaxpr, "scan")
                   for v in scan.outvars[: scan.params["num_carry"]]]  # fmt: skip
        assert carries and set(carries) == {jnp.dtype(jnp.float32)}, carries


def _eqns(jaxpr, primitive: str) -> list:
    """Every equation of ``primitive`` in ``jaxpr`` and its nested jaxprs."""
    found = []

    def walk(jx: Jaxpr) -> None:
        for eqn in jx.eqns:
            if eqn.primitive.name == primitive:
                found.append(eqn)
            for value in eqn.params.values():
                for sub in value if isinstance(value, tuple | list) else (value,):
                    if isinstance(sub, ClosedJaxpr | Jaxpr):
                        walk(sub.jaxpr if isinstance(sub, ClosedJaxpr) else sub)

    walk(jaxpr.jaxpr)
    return found


def test_latent_diffusion_autoencoder_computes_in_bfloat16():
    """Latent diffusion's frozen VAE with ``dtype=bfloat16``: bfloat16 convolutions, float32
    latents and images, within bfloat16 rounding of the float32 autoencoder. (Its UNet is
    the pixel-space one, trained above; the in-memory VAE saves writing a checkpoint.)"""
    from jaxgen.methods.latent import LatentAutoencoder
    from jaxgen.methods.vae import VAE

    config = load_config("configs/vae.py:preset=smoke")
    config.model.latent_channels = 2  # latents [2, 2, 2] of 8 x 8 images
    vae = VAE(config, DataSpec((8, 8, 1), 0, "none"))
    batch = _batch(vae, (8, 8, 1))
    params = jax.jit(vae.init_params)(jax.random.PRNGKey(7), batch)
    rng = jax.random.PRNGKey(1)

    def round_trip(dtype):  # traced: latents [B, 2, 2, 2] and decoded images [B, 8, 8, 1]
        ae = LatentAutoencoder.from_vae(vae, params, scale=0.5, dtype=dtype)
        return jax.jit(lambda images: (z := ae.encode(images, rng), ae.decode(z))).trace(
            batch["image"]
        )

    low, high = round_trip(jnp.bfloat16), round_trip(jnp.float32)
    assert bf16_share(matmul_flops(low.jaxpr)) == 1.0
    assert [a.dtype for a in low.jaxpr.out_avals] == [jnp.float32, jnp.float32]
    z_low, x_low = low.lower().compile()(batch["image"])
    z_high, x_high = high.lower().compile()(batch["image"])
    assert float(jnp.max(jnp.abs(z_low - z_high))) < 0.05 * float(jnp.max(jnp.abs(z_high)))
    assert float(jnp.max(jnp.abs(x_low - x_high))) < 0.02  # images in [0, 1]


def test_a_family_without_bfloat16_support_refuses_it():
    class Float32Only(Method):
        pass

    config = load_config("configs/vae.py:preset=smoke")
    config.precision = "bfloat16"
    with pytest.raises(UserError, match="precision=bfloat16"):
        Float32Only(config, DataSpec((8, 8, 1), 10))


# --- attention through jax.nn.dot_product_attention equals the einsum formulas --------------
def _einsum_attention(q, k, v, mask, where_value):
    """The former hand-written attention: q ``[B, T, N, H]``, k/v ``[B, S, N, H]``, mask
    ``[B, S]`` -> ``[B, T, N, H]``; masked logits set to ``where_value``."""
    logits = jnp.einsum("btnh,bsnh->bnts", q, k) / math.sqrt(q.shape[-1])
    if mask is not None:
        logits = jnp.where(mask[:, None, None, :], logits, where_value)
    weights = jax.nn.softmax(logits, axis=-1)
    return jnp.einsum("bnts,bsnh->btnh", weights, v)


def _qkv_and_mask(heads=2, d=8, t=6, s=5):
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    q, k, v = (
        jax.random.normal(key, (3, n, heads, d)) for key, n in zip(keys, (t, s, s), strict=True)
    )
    mask = jnp.array([[True] * 5, [True, True, False, False, True], [False] * 5])
    return q, k, v, mask


def test_unet_attention_equals_the_einsum_formula():
    from jaxgen.models.unet import _attend

    q, k, v, mask = _qkv_and_mask()
    b, t, heads, d = q.shape

    @jax.jit
    def compare(q, k, v, mask):
        flat = lambda x: x.reshape(b, x.shape[1], heads * d)  # noqa: E731
        q_, k_, v_ = flat(q), flat(k), flat(v)
        old = _einsum_attention(q, k, v, mask, -1e9)  # rows with no key to attend: zeros
        masked = flat(old * jnp.any(mask, axis=-1)[:, None, None, None])
        low = _attend(*(x.astype(jnp.bfloat16) for x in (q_, k_, v_)), heads, mask)
        return (
            _attend(q_, k_, v_, heads) - flat(_einsum_attention(q, k, v, None, -1e9)),
            _attend(q_, k_, v_, heads, mask) - masked,
            _attend(q_, k_, v_, heads, mask)[2],
            low,
            low.astype(jnp.float32) - _attend(q_, k_, v_, heads, mask),
        )

    diff, diff_masked, all_masked, low, low_diff = compare(q, k, v, mask)
    assert float(jnp.max(jnp.abs(diff))) < 1e-6
    assert float(jnp.max(jnp.abs(diff_masked))) < 1e-6
    np.testing.assert_array_equal(np.asarray(all_masked), 0.0)
    # bfloat16 inputs: a bfloat16 output (float32 softmax inside), within bf16 rounding.
    assert low.dtype == jnp.bfloat16
    assert float(jnp.max(jnp.abs(low_diff))) < 0.05


def test_text_encoder_attention_equals_flax_attention():
    from jaxgen.text.encoder import dot_product_attention

    x = jax.random.normal(jax.random.PRNGKey(1), (3, 5, 16))
    _, _, _, mask = _qkv_and_mask()
    flax_default = nn.MultiHeadDotProductAttention(num_heads=2)
    ours = nn.MultiHeadDotProductAttention(num_heads=2, attention_fn=dot_product_attention)
    params = jax.jit(flax_default.init)(jax.random.PRNGKey(2), x, x)

    @jax.jit
    def diff(params, x, mask):
        kwargs = dict(mask=mask[:, None, None, :])
        return ours.apply(params, x, x, **kwargs) - flax_default.apply(params, x, x, **kwargs)

    assert float(jnp.max(jnp.abs(diff(params, x, mask)))) < 1e-6  # row 2 has no real token


def test_bert_attention_equals_the_einsum_formula():
    from jaxgen.text.bert import BertConfig, BertSelfAttention

    config = BertConfig(
        vocab_size=10, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32,
    )  # fmt: skip
    x = jax.random.normal(jax.random.PRNGKey(1), (3, 5, 16))
    _, _, _, mask = _qkv_and_mask()
    module = BertSelfAttention(config)
    params = jax.jit(module.init)(jax.random.PRNGKey(2), x, mask)["params"]

    @jax.jit
    def diff(params, x, mask):
        def proj(name):
            y = x @ params[name]["kernel"] + params[name]["bias"]
            return y.reshape(3, 5, 2, 8)

        lowest = jnp.finfo(jnp.float32).min  # the former masking value
        old = _einsum_attention(proj("query"), proj("key"), proj("value"), mask, lowest)
        return module.apply({"params": params}, x, mask) - old.reshape(3, 5, 16)

    assert float(jnp.max(jnp.abs(diff(params, x, mask)))) < 1e-6  # row 2 has no real token
