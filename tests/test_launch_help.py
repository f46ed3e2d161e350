"""``launch.py --help``: the launcher's flags and configs, or one config's keys; it runs
nothing and writes nothing."""

from __future__ import annotations

import os

import pytest

from jaxgen.cli import _flag_values, main
from jaxgen.launch_help import CONFIGS_DIR, flat_items
from tests.conftest import REPO, assert_refused, load_config, run_cli


def _help(capfd, *args: str) -> str:
    capfd.readouterr()
    assert main(["launch.py", *args]) == 0
    out = capfd.readouterr()
    assert out.err == "", out.err
    return out.out


@pytest.mark.parametrize("word", ["--help", "-h"])
def test_help_lists_every_flag_and_config(word, capfd, tmp_path):
    workdir = tmp_path / "never"
    text = _help(capfd, word, f"--workdir={workdir}")
    assert text.startswith("usage: python launch.py"), text[:200]
    for flag in _flag_values():
        assert f"--{flag}" in text, flag
    runnable = [n for n in os.listdir(CONFIGS_DIR) if n.endswith(".py")]
    for name in ("vae", "gan", "ddpm", "pixelcnn", "flow", "tokens", "style_transfer"):
        assert f"{name}.py" in runnable and f"configs/{name}.py " in text, name
    for building_block in ("base", "backbones", "__init__"):
        assert f"configs/{building_block}.py" not in text
    assert not workdir.exists()


def test_help_with_a_config_shows_its_docstring_and_every_key(capfd, tmp_path):
    spec = f"{REPO}/configs/gan.py:preset=cpu"
    text = _help(capfd, f"--config={spec}", "--help", f"--workdir={tmp_path / 'never'}")
    assert "SN-GAN" in text and "preset=smoke|cpu" in text  # the module docstring
    config = load_config(spec)
    items = flat_items(config)
    assert len(items) > 50
    for key, value in items:
        assert f"\n  {key} = {value!r}" in text, key
    assert "  model.d_norm = 'batch'" in text  # the preset's value, not the default's
    assert not (tmp_path / "never").exists()


def test_help_with_a_missing_config_is_the_usual_refusal(capfd):
    assert_refused(run_cli(capfd, "--config=configs/nope.py", "--help"), "configs/nope.py")


def test_help_with_a_trained_workdir_shows_the_config_it_was_trained_with(capfd, tmp_path):
    workdir = tmp_path / "run"
    vae = f"--config={REPO}/configs/vae.py:preset=smoke"
    assert main(["launch.py", vae, f"--workdir={workdir}", "--config.train.num_steps=2",
                 "--config.seed=7", "--config.evals={}"]) == 0  # fmt: skip
    text = _help(capfd, f"--workdir={workdir}", "--help")
    assert "the config its checkpoints were trained with" in text
    assert "\n  seed = 7\n" in text and "\n  train.num_steps = 2\n" in text
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _help(capfd, f"--workdir={empty}", "--help").startswith("usage:")  # nothing trained
