"""The checked-in result set: one sweep that feeds every table, sized for a 2-core CPU.

  python -m experiments.sweep experiments/ablations/results.py --root runs/results \
      --preset cpu --report experiments/results

Runs (all ``preset=cpu``, Fashion-MNIST unless named otherwise):

* ``vae_fashion_mnist``, ``vae_digits``, ``vae_sprites``: the VAE on three domains (Table 7);
  the first is also the transfer source.
* ``vae_digits28_finetuned`` (``init_from`` the Fashion-MNIST VAE) and ``vae_digits28_scratch``:
  digits upscaled to 28x28, equal steps (Table 6).
* ``ddpm_fashion_mnist`` (the config's default sampler) and two sampling-only variants on its
  checkpoints, ``ddpm_fashion_mnist_ddim_20`` and ``ddpm_fashion_mnist_heun_10`` (Tables 3, 4).
* ``ddpm_dit_fashion_mnist``: the DDPM run's process and steps on a DiT backbone
  (``backbone=dit``; patch 4 at ``preset=cpu``).
* ``flow_fashion_mnist`` (rectified flow, Euler at 20 steps: DDPM's 20 evaluations) and
  ``meanflow_fashion_mnist`` (MeanFlow, one evaluation), with ``meanflow_fashion_mnist_2step``
  on the latter's checkpoints: the same network and training steps as the DDPM run.
* ``gan_fashion_mnist``: discriminator accuracies and two-sample test (Tables 8, 9).
* ``pixelcnn_fashion_mnist`` (Gated PixelCNN at ``preset=cpu``): exact bits/dim (Table 10).
* ``tokens_tokenizer`` (FSQ image tokenizer, draws nothing) and ``tokens_prior`` (a causal
  Transformer over its tokens, ``model.tokenizer`` the tokenizer run): bits/token beside
  PixelCNN's bits/dim (Table 10), samples through the same evaluators.

Table 5 comes from each run's ``--mode=sample`` timing (``samples/timing_<N>.json``); more
hardware columns come from benchmark files passed to ``experiments.report --bench``.
"""

from experiments.spec import Run, ref, sampling_variant


def get_sweep(arg=None):
    del arg
    vae = Run("vae_fashion_mnist", "configs/vae.py", args=dict(data="fashion_mnist"),
              description="VAE on Fashion-MNIST (also the transfer source)")  # fmt: skip
    ddpm = Run(
        "ddpm_fashion_mnist", "configs/ddpm.py", args=dict(data="fashion_mnist"),
        description="DDPM (cpu: v prediction, min-SNR weights, timesteps drawn by weight)",
    )  # fmt: skip
    meanflow = Run("meanflow_fashion_mnist", "configs/flow.py",
                   args=dict(data="fashion_mnist", objective="meanflow"),
                   description="MeanFlow, one network evaluation")  # fmt: skip
    digits28 = {"data.image_size": 28}
    tokenizer = Run("tokens_tokenizer", "configs/tokens.py",
                    args=dict(stage="tokenizer", data="fashion_mnist"),
                    description="FSQ image tokenizer (stage 1 of tokens_prior)")  # fmt: skip
    return [
        vae,
        Run("vae_digits", "configs/vae.py", args=dict(data="digits"), description="VAE on digits"),
        Run(
            "vae_sprites", "configs/vae.py", args=dict(data="sprites"), description="VAE on sprites"
        ),  # fmt: skip
        Run(
            "vae_digits28_finetuned",
            "configs/vae.py",
            args=dict(data="digits"),
            overrides=dict(digits28, init_from=ref(vae.name)),
            description="VAE on 28x28 digits, fine-tuned from the Fashion-MNIST VAE",
        ),  # fmt: skip
        Run(
            "vae_digits28_scratch",
            "configs/vae.py",
            args=dict(data="digits"),
            overrides=digits28,
            description="VAE on 28x28 digits from scratch",
        ),  # fmt: skip
        ddpm,
        sampling_variant(
            ddpm, "ddpm_fashion_mnist_ddim_20", "DDIM, 20 steps", sampler="ddim", steps=20, eta=0.0
        ),  # fmt: skip
        sampling_variant(
            ddpm, "ddpm_fashion_mnist_heun_10", "Heun (EDM), 10 steps", sampler="heun", steps=10
        ),  # fmt: skip
        Run(
            "ddpm_dit_fashion_mnist",
            "configs/ddpm.py",
            args=dict(data="fashion_mnist", backbone="dit"),
            description="DDPM on a DiT backbone",
        ),
        Run(
            "flow_fashion_mnist",
            "configs/flow.py",
            args=dict(data="fashion_mnist"),
            description="rectified flow, Euler sampler",
        ),
        meanflow,
        sampling_variant(meanflow, "meanflow_fashion_mnist_2step", "MeanFlow, two steps", steps=2),
        Run(
            "gan_fashion_mnist",
            "configs/gan.py",
            args=dict(data="fashion_mnist"),
            description="DCGAN, non-saturating loss (cpu: batch norm in D)",
        ),  # fmt: skip
        Run(
            "pixelcnn_fashion_mnist",
            "configs/pixelcnn.py",
            args=dict(data="fashion_mnist"),
            description="the preset's PixelCNN variant (cpu: Gated PixelCNN; full: PixelCNN++)",
        ),  # fmt: skip
        tokenizer,
        Run(
            "tokens_prior",
            "configs/tokens.py",
            args=dict(stage="prior", data="fashion_mnist"),
            overrides={"model.tokenizer": ref(tokenizer.name)},
            description="Transformer prior over the FSQ tokens of tokens_tokenizer",
        ),  # fmt: skip
    ]
