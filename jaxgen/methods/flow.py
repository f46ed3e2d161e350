"""Flow matching: rectified flow (Liu et al. 2022; Lipman et al. 2022) and MeanFlow (Geng et al.
2025), as a subclass of the diffusion family.

Per training batch, with ``x_0`` the images in [-1, 1] (or a VAE's latents), ``eps ~ N(0, I)``:

  t ~ uniform or logit-normal on [0, 1]          model.flow.time_sampling / time_mean / time_std
  z_t = (1 - t) x_0 + t eps,  v = eps - x_0      the straight path and its velocity
  rectified_flow:  loss = mean (F(z_t, t) - v)^2
  meanflow:        loss = w * mean (u(z_t, r, t) - sg(v - (t - r) d/dt u))^2
                   (jaxgen.diffusion.flow; r < t in a share of the pairs, else r = t)

The network ``F`` (``model.backbone``: the UNet or a DiT) predicts the velocity, i.e. the
``velocity`` parameterization of :mod:`jaxgen.diffusion.objectives`: ``x0_hat = z_t - t F``.
So the diffusion family's samplers, guidance, conditioning (``cond=class|text``), latent space
(``model.autoencoder``) and mixed precision all apply unchanged: ``sample.sampler=euler`` is
Euler on ``dz / dt = F``, ``flow_heun`` Heun's method, and the others (``ddim``, ``heun``,
``dpm_solver_pp``, ``ddpm``) integrate the same model in their own ways.

MeanFlow's network sees two times, ``t`` and ``t - r`` (times ``model.flow.time_scale``,
default 1); at ``r = t`` it is the instantaneous velocity, which the registered samplers use.
Its own sampler, ``meanflow`` (the default, 1 step), jumps ``z_r = z_t - (t - r) u(z_t, r, t)``
over ``sample.steps`` equal intervals of ``t``. Guidance combines the conditional and
unconditional average velocities as the diffusion family combines its outputs
(``u_null + g (u_cond - u_null)``); the model is not trained with guidance in its target.

No likelihood (``has_likelihood`` is False): the ODE's exact likelihood would need the
divergence of ``F`` integrated along each trajectory, which is not implemented.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxgen.config_section import section_values
from jaxgen.diffusion import flow as meanflow
from jaxgen.diffusion.objectives import Preconditioning, guided, q_sample
from jaxgen.diffusion.process import FlowProcess
from jaxgen.errors import UserError
from jaxgen.methods.description import config_value
from jaxgen.methods.diffusion import Diffusion, _batch_size
from jaxgen.methods.gradients import cast_floating
from jaxgen.models.backbone import build_backbone
from jaxgen.samplers import SAMPLERS, get_sampler, initial_noise
from jaxgen.sampling import SampleOptions
from jaxgen.text.conditioner import drop_text

OBJECTIVES = ("rectified_flow", "meanflow")
MEANFLOW = "meanflow"  # the MeanFlow sampler's name (sample.sampler)
DEFAULT_STEPS = 50  # steps of a registered sampler that has no default (ddpm)


@dataclasses.dataclass(frozen=True)
class FlowConfig:
    """The ``model.flow`` section.

    ``objective``: ``rectified_flow`` or ``meanflow``. ``time_sampling``: ``logit_normal``
    (``t = sigmoid(time_mean + time_std * n)``) or ``uniform``; MeanFlow draws both ``r`` and
    ``t`` from it. ``meanflow_fraction``: the share of training pairs with ``r < t`` (the rest
    have ``r = t``). ``meanflow_power``: ``p`` of the adaptive loss weight (0: plain MSE).
    ``time_scale``: the network's time input is ``time_scale * t`` (DDPM's indices would be
    1000; MeanFlow's target holds ``d/dt`` of the network, which the sinusoidal embedding's
    fast frequencies make large at 1000).
    """

    objective: str = "rectified_flow"
    time_sampling: str = "logit_normal"
    time_mean: float = 0.0
    time_std: float = 1.0
    meanflow_fraction: float = 0.25
    meanflow_power: float = 1.0
    time_scale: float = 1.0

    @classmethod
    def from_config(cls, cfg) -> FlowConfig:
        values = section_values(cls, cfg, "model.flow")
        result = cls(**values)
        if result.objective not in OBJECTIVES:
            raise UserError(
                f"config key model.flow.objective={result.objective!r}: "
                f"expected one of {OBJECTIVES}"
            )
        if not 0.0 <= result.meanflow_fraction <= 1.0:
            raise UserError(
                f"config key model.flow.meanflow_fraction={result.meanflow_fraction}: "
                "expected in [0, 1]"
            )
        if not result.time_scale > 0:
            raise UserError(f"config key model.flow.time_scale={result.time_scale}: expected > 0")
        if result.meanflow_power < 0:
            raise UserError(
                f"config key model.flow.meanflow_power={result.meanflow_power}: expected >= 0"
            )
        return result


class FlowMatching(Diffusion):
    """The flow-matching family (``family = "flow"``): rectified flow or MeanFlow."""

    supports_bfloat16 = True

    def __init__(self, config, data):
        super().__init__(config, data)
        if self.meanflow:  # a network with a second time input, (t, t - r)
            self.net = build_backbone(
                config.model,
                out_channels=self.x_shape[-1],
                num_classes=self.num_classes,
                context_dim=self.text.width if self.text else 0,
                input_hw=self.x_shape[:2],
                two_times=True,
            )
            self.unet_config = self.net.config

    def _make_process(self, model) -> None:
        """``model.flow``: the straight path, the velocity parameterization, no bound."""
        self.fcfg = FlowConfig.from_config(model.flow)
        self.meanflow = self.fcfg.objective == "meanflow"
        self.dcfg = None  # no model.diffusion section
        self.process = FlowProcess(
            self.fcfg.time_sampling, self.fcfg.time_mean, self.fcfg.time_std,
            time_scale=self.fcfg.time_scale,
        )  # fmt: skip
        self.precond = Preconditioning("velocity")
        self.bound = None

    # --- the network -------------------------------------------------------------------------
    def _output(self, params, x_t, t, alpha, sigma, cond, train=False, rng=None, t2=None):
        """As :meth:`Diffusion._output`; a MeanFlow network gets ``t2 = 0`` (``r = t``: the
        instantaneous velocity) unless ``t2`` is given."""
        if self.meanflow and t2 is None:
            t2 = jnp.zeros_like(t)
        return super()._output(params, x_t, t, alpha, sigma, cond, train, rng, t2)

    def _velocity(self, params, z, r, t, cond, train=False, rng=None) -> jax.Array:
        """The network's (average) velocity at path times ``r <= t`` (float32 ``[B]``)."""
        alpha, sigma = self.process.coefficients(t)
        t2 = self.process.model_time(t - r) if self.meanflow else None
        model_t = self.process.model_time(t)
        return self._output(params, z, model_t, alpha, sigma, cond, train, rng, t2)

    def average_velocity(self, params, cond=None, guidance: float = 1.0):
        """``u(z, r, t)`` (``r``, ``t``: float32 ``[B]``) with classifier-free guidance, as
        :meth:`Diffusion.denoiser` for its arguments."""
        conditional = self.num_classes or self.text is not None
        null = None
        if not conditional:
            guidance = 1.0
        elif cond is None or guidance == 0:
            guidance, cond = 1.0, None
        else:
            null = self._null(_batch_size(cond))

        def u_fn(z, r, t):
            b = z.shape[0]
            c = self._null(b) if cond is None and conditional else cond
            if guidance == 1:
                return self._velocity(params, z, r, t, c)
            pair = jax.tree.map(lambda u, v: jnp.concatenate([u, v]), null, c)
            both = self._velocity(
                params, jnp.concatenate([z, z]), jnp.concatenate([r, r]),
                jnp.concatenate([t, t]), pair,
            )  # fmt: skip
            return guided(both[:b], both[b:], guidance)

        return u_fn

    # --- Method interface ----------------------------------------------------------------------
    def init_params(self, rng, batch):
        if not self.meanflow:
            return super().init_params(rng, batch)
        del batch
        net_rng, text_rng = jax.random.split(rng)
        x = jnp.zeros((1, *self.x_shape), jnp.float32)
        labels = jnp.zeros((1,), jnp.int32) if self.num_classes else None
        zero = jnp.zeros((1,))
        params = dict(self.net.init({"params": net_rng}, x, zero, labels, t2=zero)["params"])
        if self.text is not None:
            params.update(self.text.init_params(text_rng))
        return params

    def _train_condition(self, params, batch, rng, b: int):
        """Labels (the null class where dropped or unlabelled), the text embedding (the null
        text where dropped) or None, for a training batch of ``b`` examples."""
        drop = jax.random.bernoulli(rng, self.cond_drop_prob, (b,))
        if self.text is not None:
            return drop_text(self.text.embed(params, batch), drop)
        if self.num_classes:
            return jnp.where(drop | (batch["label"] < 0), self.num_classes, batch["label"])
        return None

    def loss(self, params, batch, rng):
        data_rng, drop_rng, time_rng, noise_rng, dropout_rng = jax.random.split(rng, 5)
        x0 = self._encode(batch, data_rng)
        b = x0.shape[0]
        cond = self._train_condition(params, batch, drop_rng, b)
        if self.meanflow:
            r, t = meanflow.sample_two_times(
                self.process.sample_times, time_rng, b, self.fcfg.meanflow_fraction
            )
        else:
            t = self.process.sample_times(time_rng, (b,))
            r = t
        eps = jax.random.normal(noise_rng, x0.shape)
        z = q_sample(x0, eps, 1.0 - t, t)
        v = eps - x0  # the velocity target, exact at every t (no division by t)

        def u_fn(z, r, t):
            return self._velocity(params, z, r, t, cond, train=True, rng=dropout_rng)

        if not self.meanflow:
            loss = jnp.mean((u_fn(z, r, t) - v) ** 2)
            return loss, {"mse": loss}
        u, u_tgt = meanflow.meanflow_target(u_fn, z, r, t, v)
        loss, mse = meanflow.meanflow_loss(u, u_tgt, self.fcfg.meanflow_power)
        return loss, {"mse": mse}

    def _resolve_sample_options(self, options: SampleOptions) -> SampleOptions:
        """Sampler (default ``meanflow`` for MeanFlow, else ``euler``), steps (default: the
        sampler's; ``meanflow``: 1) and spacing (default: the sampler's)."""
        name = options.sampler or (MEANFLOW if self.meanflow else "euler")
        names = sorted(SAMPLERS) + ([MEANFLOW] if self.meanflow else [])
        if name not in names:
            raise UserError(f"config key sample.sampler={name!r}: expected one of {names}")
        spec = meanflow.MEANFLOW_SAMPLER if name == MEANFLOW else get_sampler(name)
        steps = int(options.steps) or spec.default_steps or DEFAULT_STEPS
        spacing = options.spacing or spec.spacing
        if name == MEANFLOW and spacing != "uniform":
            raise UserError(
                f"config key sample.spacing={spacing!r}: the meanflow sampler takes uniform steps"
            )
        if name == "heun" and spacing == "uniform":
            raise UserError(
                "config key sample.spacing='uniform': the heun sampler divides by alpha = 1 - t, "
                "0 at the uniform grid's first level; use sampler=flow_heun or spacing=karras"
            )
        from jaxgen.validate import check_sample_options_used

        used = ("sampler", "steps", "guidance", "eta", "spacing")
        check_sample_options_used(self.config.family, options, used)
        with jax.ensure_compile_time_eval():  # a check only: nothing is staged under jit
            self.process.grid(steps, spacing)
        if not 0.0 <= options.eta <= 1.0:
            raise UserError(f"config key sample.eta={options.eta!r}: expected in [0, 1]")
        return SampleOptions(name, steps, float(options.guidance), float(options.eta), spacing)

    def sampler_plan(self, options: SampleOptions | None = None):
        """As :meth:`Diffusion.sampler_plan`; for ``meanflow`` the spec is
        :data:`jaxgen.diffusion.flow.MEANFLOW_SAMPLER` (driven by an average velocity)."""
        options = self.resolve_sample_options(options)
        grid = self.process.grid(options.steps, options.spacing)
        if options.sampler == MEANFLOW:
            return meanflow.MEANFLOW_SAMPLER, grid, {}
        kwargs = {}
        if get_sampler(options.sampler).takes_eta:
            kwargs["eta"] = options.eta
        elif options.sampler == "ddpm":
            kwargs["variance"] = "small"
        return get_sampler(options.sampler), grid, kwargs

    def sample(self, params, rng, num, conditioning=None, options=None):
        options = self.resolve_sample_options(options)
        if options.sampler != MEANFLOW:
            return super().sample(params, rng, num, conditioning, options)
        spec, grid, _ = self.sampler_plan(options)
        params = cast_floating(params, self.compute_dtype)
        u_fn = self.average_velocity(
            params, self._condition(params, conditioning), options.guidance
        )
        noise_rng, sampler_rng = jax.random.split(rng)
        x = initial_noise(noise_rng, (num, *self.x_shape), grid)
        return self._decode(spec.fn(u_fn, x, grid, sampler_rng))

    @classmethod
    def describe(cls, config):
        generic = super().describe(config)
        flow = config_value(config, "model.flow", {}) or {}
        if flow.get("time_sampling", "logit_normal") == "uniform":
            times = "uniform t"
        else:
            times = f"logit-normal({flow.get('time_mean')}, {flow.get('time_std')}) t"
        if flow.get("objective") == "meanflow":
            fraction, power = flow.get("meanflow_fraction"), flow.get("meanflow_power")
            training = f"MeanFlow, {times}, share r < t {fraction}, weight power {power}"
        else:
            training = f"rectified flow, velocity target, {times}"
        return generic.replace(training=training, likelihood_bound=None)
