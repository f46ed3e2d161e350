"""jaxgen from Python: train a small text-conditioned VAE, sample prompts, score the samples.

    python docs/api_example.py --workdir=runs/api_example

Trains ``configs/vae.py:preset=cpu,cond=text`` (a VAE conditioned on the captions'
MiniLM embeddings, narrowed) for ``--steps`` steps of 32 images on Fashion-MNIST (120
steps: about half a minute on a 2-core CPU), then loads the run as a notebook would, draws
samples for two prompts, asks the domain classifier which garment each sample shows, and
prints per-image bits/dim and the run's evaluation. The suite runs this file
(``tests/test_api.py``) and checks what it prints.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

import jaxgen
from jaxgen.cli import load_config_file
from jaxgen.evaluate.features import get_extractor

PROMPTS = {"a pair of trousers": 1, "a sneaker": 7}  # prompt -> Fashion-MNIST class


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="runs/api_example")
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--samples", type=int, default=32, help="samples per prompt")
    args = parser.parse_args()

    # The CPU preset's VAE, narrowed, on the frozen MiniLM sentence encoder, trained briefly
    # on small batches and scored on a small test subset (the preset trains 2,000 steps of 64).
    config = load_config_file("configs/vae.py:preset=cpu,cond=text")
    config.model.channels = (16, 32)
    config.model.hidden_dim = 128
    config.model.latent_dim = 16
    config.train.num_steps = args.steps
    config.train.batch_size = 32
    config.train.checkpoint_every = args.steps
    config.train.sample_every = args.steps
    config.train.log_every = 100
    with config.unlocked():
        for name in list(config.evals):
            if name not in ("likelihood", "params"):
                del config.evals[name]
    config.evals.likelihood.num_examples = 32
    config.evals.likelihood.batch_size = 32
    jaxgen.train(config, args.workdir)  # resumes if the workdir already has checkpoints

    run = jaxgen.load(args.workdir)  # the newest checkpoint, EMA parameters
    classifier = get_extractor({}, run.config.data.name)  # the domain classifier
    report = {"step": run.step, "family": run.family, "prompts": {}}
    for prompt, label in PROMPTS.items():
        images = run.sample(args.samples, seed=1, prompt=prompt)  # uint8 [N, 28, 28, 1]
        predicted = classifier(images)["logits"].argmax(-1)
        report["prompts"][prompt] = {
            "shape": list(images.shape),
            "dtype": str(images.dtype),
            "class": run.class_names[label],
            "share_of_class": float(np.mean(predicted == label)),
        }
        bits = run.likelihood(images[:4], prompts=[prompt] * 4)["bits_per_dim"]
        report["prompts"][prompt]["bits_per_dim"] = [round(float(b), 3) for b in bits]
    report["evaluate"] = run.evaluate(["likelihood", "params"])
    print(json.dumps(report, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
