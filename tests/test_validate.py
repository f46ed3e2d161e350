"""Bad config values and sampling inputs fail when an Experiment is built, as one-line errors."""

import logging
import os

import ml_collections
import pytest

from jaxgen import validate
from jaxgen.data import sources
from jaxgen.errors import UserError
from jaxgen.experiment import Experiment
from jaxgen.sampling import SampleOptions
from jaxgen.text.conditioning import load_prompts_file
from tests.conftest import load_config

VAE = "configs/vae.py:preset=smoke"
FAMILIES = (
    "vae", "ddpm", "gan", "pixelcnn", "classifier", "clip", "style_transfer", "flow", "tokens",
)  # fmt: skip


def _set(config, key: str, value) -> None:
    *path, last = key.split(".")
    node = config
    for part in path:
        node = node[part]
    node[last] = value


def _config(spec: str = VAE, **values):
    config = load_config(spec)
    for key, value in values.items():
        _set(config, key.replace("__", "."), value)
    return config


def _error(fn, *args) -> str:
    """The message of the UserError ``fn(*args)`` raises, checked to be one line."""
    with pytest.raises(UserError) as e:
        fn(*args)
    text = str(e.value)
    assert "\n" not in text, text
    return text


def _refused(config, tmp_path) -> str:
    """Builds an Experiment that must fail, and checks that it wrote nothing."""
    workdir = tmp_path / "run"
    text = _error(Experiment, config, str(workdir))
    assert not workdir.exists()
    return text


BAD_VALUES = [
    ("train.num_steps", -1, ">= 0"),
    ("train.batch_size", 0, ">= 1"),
    ("train.log_every", 0, ">= 1"),
    ("train.checkpoint_every", -1, ">= 0"),
    ("train.sample_every", -2, ">= 0"),
    ("train.eval_every", -1, ">= 0"),
    ("train.keep_checkpoints", 0, ">= 1"),
    ("train.ema_decay", 1.5, "[0, 1]"),
    ("optimizer.learning_rate", 0.0, "> 0"),
    ("optimizer.b1", 1.0, "[0, 1)"),
    ("optimizer.warmup_steps", -5, ">= 0"),
    ("sample.num", 0, ">= 1"),
    ("sample.steps", -1, ">= 0"),
    ("sample.guidance", -1.0, ">= 0"),
    ("sample.timing_repeats", -1, ">= 0"),
    ("data.prefetch", -1, ">= 0"),
    ("evals.likelihood.every", -1, ">= 0"),
    ("evals.likelihood.num_examples", 0, ">= 1"),
    ("evals.quality.num_samples", 3, ">= 4"),
    ("evals.likelihood.batch_size", 0, ">= 1"),
]


@pytest.mark.parametrize("key,value,bound", BAD_VALUES, ids=[k for k, _, _ in BAD_VALUES])
def test_value_out_of_range_names_key_value_and_bound(key, value, bound):
    config = load_config(VAE)
    _set(config, key, value)
    text = _error(validate.check_config_values, config)
    assert text.startswith(f"config key {key}={value!r}: expected {bound}"), text


def test_boundary_values_are_accepted():
    config = _config(
        **{"train.num_steps": 0, "train.log_every": 1, "train.checkpoint_every": 0},
        **{"train.sample_every": 0, "train.keep_checkpoints": 1, "train.ema_decay": 1.0},
        **{"sample.num": 1, "sample.steps": 0, "sample.timing_repeats": 0, "data.prefetch": 0},
        **{"optimizer.b1": 0.0, "evals.likelihood.every": 0, "evals.quality.num_samples": 4},
    )
    validate.check_config_values(config)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_shipped_config_is_valid(family):
    for preset in ("smoke", "cpu", "full"):
        validate.check_config_values(load_config(f"configs/{family}.py:preset={preset}"))


def test_only_present_keys_are_checked_and_values_must_be_numbers():
    validate.check_config_values(ml_collections.ConfigDict({"train": {"num_steps": 3}}))
    bad = ml_collections.ConfigDict({"train": {"log_every": 0}})
    assert _error(validate.check_config_values, bad).startswith("config key train.log_every=0")
    text = _error(validate.check_config_values, ml_collections.ConfigDict({"sample": {"num": "8"}}))
    assert text.startswith("config key sample.num='8': expected a number")


def test_param_sharding_name_is_checked():
    text = _error(validate.check_config_values, _config(**{"train.param_sharding": "zero3"}))
    assert text.startswith("config key train.param_sharding='zero3'")


@pytest.mark.parametrize("key,value", [("train.log_every", 0), ("train.num_steps", -1)])
def test_experiment_refuses_bad_values_before_writing(tmp_path, key, value):
    text = _refused(_config(**{key: value}), tmp_path)
    assert text.startswith(f"config key {key}={value}")


# --- data.dir ---------------------------------------------------------------------------


def _system_fashion_mnist():
    files = [f for pair in sources.FASHION_MNIST_FILES.values() for f in pair]
    if not all(os.path.exists(os.path.join(sources.FASHION_MNIST_SYSTEM_DIR, f)) for f in files):
        pytest.skip("Fashion-MNIST is not installed in the system folder")
    return sources.FASHION_MNIST_SYSTEM_DIR


def test_missing_data_dir_is_refused_although_the_system_copy_exists(tmp_path):
    _system_fashion_mnist()
    missing = str(tmp_path / "fashoin")
    text = _refused(_config(**{"data.dir": missing}), tmp_path)
    assert text == f"config key data.dir={missing!r}: no such directory"


def test_data_dir_without_the_files_names_them_despite_jaxgen_data_dir(tmp_path, monkeypatch):
    system = _system_fashion_mnist()
    (tmp_path / "env").mkdir()
    os.symlink(system, tmp_path / "env" / "fashion_mnist")  # a valid fallback, never taken
    monkeypatch.setenv("JAXGEN_DATA_DIR", str(tmp_path / "env"))
    empty = tmp_path / "empty"
    empty.mkdir()
    text = _refused(_config(**{"data.dir": str(empty)}), tmp_path)
    assert text.startswith(f"config key data.dir={str(empty)!r}")
    assert "train-images-idx3-ubyte.gz" in text and "train-labels-idx1-ubyte.gz" in text


def test_data_dir_with_the_files_is_read():
    system = _system_fashion_mnist()
    assert len(sources.get_source("fashion_mnist", "test", system)) == 10_000


@pytest.mark.parametrize("name", ["digits", "sprites"])
def test_data_dir_is_refused_for_sources_without_files(tmp_path, name):
    text = _error(sources.get_source, name, "train", str(tmp_path))
    assert text.startswith(f"config key data.dir={str(tmp_path)!r}") and name in text


def test_tfds_data_dir_without_the_dataset_is_refused_and_left_empty(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    text = _error(sources.get_source, "tfds:mnist", "train", str(tmp_path))
    assert text.startswith(f"config key data.dir={str(tmp_path)!r}: no prepared TFDS dataset")
    assert os.listdir(tmp_path) == []  # nothing downloaded into it


# --- prompts, labels, samplers ------------------------------------------------------------


def test_prompts_file_that_is_not_utf8_names_file_and_offset(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_bytes(b"a shirt\n\xff\xfe a coat\n")
    text = _error(load_prompts_file, str(path))
    assert (
        text
        == f"config key sample.prompts_file={str(path)!r}: not UTF-8 text (byte 0xff at offset 8)"
    )


def test_prompts_file_directory_empty_or_missing_is_refused(tmp_path):
    assert "is a directory" in _error(load_prompts_file, str(tmp_path))
    (tmp_path / "empty.txt").write_text("\n   \n")
    assert "no prompts" in _error(load_prompts_file, str(tmp_path / "empty.txt"))
    missing = str(tmp_path / "missing.txt")
    assert _error(load_prompts_file, missing).startswith(
        f"config key sample.prompts_file={missing!r}"
    )


def test_prompts_file_lines_are_read_without_bom_or_blank_lines(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_bytes("\ufeffa shirt\n\n  a coat  \r\n".encode())
    assert load_prompts_file(str(path)) == ["a shirt", "a coat"]


def test_experiment_refuses_a_bad_prompts_file_before_writing_the_tokenizer(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_bytes(b"\x80")
    config = _config(VAE + ",cond=text", **{"sample.prompts_file": str(path)})
    assert "not UTF-8" in _refused(config, tmp_path)


def test_prompts_need_cond_text(tmp_path):
    text = _refused(_config(**{"sample.prompt": "a coat"}), tmp_path)
    assert text.startswith("config key sample.prompt='a coat': only used with data.cond=text")


@pytest.mark.parametrize("label", [10, -2])
def test_label_out_of_range_is_refused(tmp_path, label):
    text = _refused(_config(VAE + ",cond=class", **{"sample.label": label}), tmp_path)
    assert text == f"config key sample.label={label}: expected -1 or 0..9"


def test_label_in_range_is_accepted_and_needs_cond_class(tmp_path):
    Experiment(_config(VAE + ",cond=class", **{"sample.label": 9}), str(tmp_path / "ok"))
    text = _refused(_config(**{"sample.label": 3}), tmp_path)
    assert text.startswith("config key sample.label=3: only used with data.cond=class")


def test_pixelcnn_sampler_name_and_steps_are_checked_before_training(tmp_path):
    spec = "configs/pixelcnn.py:preset=smoke"
    text = _refused(_config(spec, **{"sample.sampler": "euler"}), tmp_path)
    assert text == "config key sample.sampler='euler': expected one of ['fast', 'plain']"
    assert "sample.steps=10" in _refused(_config(spec, **{"sample.steps": 10}), tmp_path)
    text = _refused(_config(spec, **{"sample.temperature": -0.5}), tmp_path)
    assert text.startswith("config key sample.temperature=-0.5: expected >= 0 (0: greedy")
    text = _refused(_config(spec, **{"model.clusters": -1}), tmp_path)
    assert text == "config key model.clusters=-1: expected integers >= 0"
    Experiment(_config(spec, **{"sample.sampler": "plain"}), str(tmp_path / "ok"))


@pytest.mark.parametrize(
    "overrides, start",
    [
        ({"sample.guidance": 2.0}, "config key sample.guidance=2.0: family 'gan' does not use it"),
        ({"sample.drs_percentile": 90.0}, "config key sample.drs_percentile=90.0: family 'gan'"),
        ({"sample.sampler": "ddim"}, "config key sample.sampler='ddim': expected one of"),
        ({"sample.sampler": "drs", "sample.drs_percentile": 100.0}, "config key sample.drs_pe"),
    ],
)
def test_gan_sample_options_are_checked_before_training(tmp_path, overrides, start):
    text = _refused(_config("configs/gan.py:preset=smoke", **overrides), tmp_path)
    assert text.startswith(start)


def test_vae_sampler_name_is_checked_before_training(tmp_path):
    text = _refused(_config(**{"sample.sampler": "ddim"}), tmp_path)
    assert text == "config key sample.sampler='ddim': expected one of ['prior', 'gmm']"
    text = _refused(_config(**{"sample.guidance": 2.0}), tmp_path)
    assert text.startswith("config key sample.guidance=2.0: family 'vae' does not use it")
    text = _refused(_config(VAE + ",cond=class", **{"sample.sampler": "gmm"}), tmp_path)
    assert "cond=class" in text
    Experiment(_config(**{"sample.sampler": "prior"}), str(tmp_path / "ok"))


def test_diffusion_sampler_options_are_checked(tmp_path):
    config = _config("configs/ddpm.py:preset=smoke", **{"sample.eta": 2.0})
    assert _refused(config, tmp_path) == "config key sample.eta=2.0: expected in [0, 1]"


@pytest.mark.parametrize(
    "sampler, eta, warned",
    [("heun", 1.0, True), ("ddpm", 0.5, True), ("dpm_solver_pp", 1.0, False), ("heun", 0.0, False)],
)
def test_an_eta_the_sampler_ignores_is_a_warning(sampler, eta, warned, tmp_path, caplog):
    config = _config(
        "configs/ddpm.py:preset=smoke", **{"sample.sampler": sampler, "sample.eta": eta}
    )
    with caplog.at_level(logging.WARNING, logger="jaxgen"):
        Experiment(config, str(tmp_path / "run"))
    expected = f"config key sample.eta={eta:g}: sampler {sampler!r} takes no eta and ignores it"
    assert (expected in caplog.text) == warned, caplog.text


@pytest.mark.parametrize(
    "spec, values, refused",
    [
        ("configs/ddpm.py:preset=smoke,cond=class", {"model.cond_drop_prob": 0.0}, True),
        ("configs/ddpm.py:preset=smoke", {"model.clusters": 3}, True),
        ("configs/flow.py:preset=smoke,cond=class", {"model.cond_drop_prob": 0.0}, True),
        ("configs/ddpm.py:preset=smoke,cond=class", {}, False),  # cond_drop_prob 0.1
        ("configs/ddpm.py:preset=smoke", {"model.clusters": 3, "model.cond_drop_prob": 0.1}, False),
    ],
)
def test_guidance_without_a_trained_unconditional_model_is_refused(spec, values, refused, tmp_path):
    config = _config(spec, **values, **{"sample.guidance": 2.0})
    if not refused:
        Experiment(config, str(tmp_path / "run"))
        return
    assert _refused(config, tmp_path) == (
        "config key sample.guidance=2: needs the unconditional model, which "
        "model.cond_drop_prob=0 never trains; set model.cond_drop_prob > 0 (e.g. 0.1) or "
        "sample with guidance 1"
    )
    _set(config, "sample.guidance", 1.0)
    Experiment(config, str(tmp_path / "run"))  # the conditional model alone is trained


@pytest.mark.parametrize(
    "spec, guidance, warned",
    [
        ("configs/ddpm.py:preset=smoke", 2.0, True),
        ("configs/ddpm.py:preset=smoke", 1.0, False),
        ("configs/flow.py:preset=smoke", 0.0, False),
        ("configs/ddpm.py:preset=smoke,cond=class", 2.0, False),
    ],
)
def test_guidance_an_unconditional_model_ignores_is_a_warning(
    spec, guidance, warned, tmp_path, caplog
):
    config = _config(spec, **{"sample.guidance": guidance})
    with caplog.at_level(logging.WARNING, logger="jaxgen"):
        Experiment(config, str(tmp_path / "run"))
    expected = f"config key sample.guidance={guidance:g}: the model is unconditional"
    assert (expected in caplog.text) == warned, caplog.text


# --- batch size ----------------------------------------------------------------------------


def test_batch_larger_than_the_data_is_refused(tmp_path):
    config = _config(VAE + ",data=digits", **{"train.batch_size": 1440})
    text = _refused(config, tmp_path)
    assert text == (
        "config key train.batch_size=1440: expected at most the 1437 examples of the training split"
    )


def test_batch_must_split_over_devices_processes_and_micro_batches():
    config = _config(**{"train.batch_size": 12})
    text = _error(validate.check_batch_size, config, 8, 1, 1437)
    assert text == "config key train.batch_size=12: expected a multiple of the 8 devices"
    text = _error(validate.check_batch_size, config, 1, 8, 1437)
    assert text == "config key train.batch_size=12: expected a multiple of the 8 processes"
    validate.check_batch_size(_config(**{"train.batch_size": 16}), 8, 2, 1437)
    config = _config(**{"train.grad_accum_steps": 3})  # batch 8
    assert "train.grad_accum_steps=3" in _error(validate.check_batch_size, config, 1, 1, 1437)


def test_final_snr_is_checked_before_training_and_refused_where_unused(tmp_path):
    ddpm = "configs/ddpm.py:preset=smoke"
    text = _refused(_config(ddpm, **{"sample.final_snr": 1e9}), tmp_path)
    assert text.startswith("config key sample.final_snr=1000000000.0: expected 0 (the least")
    text = _refused(_config(ddpm, **{"sample.final_snr": -1.0}), tmp_path)
    assert text.startswith("config key sample.final_snr=-1.0: expected >= 0")
    Experiment(_config(ddpm, **{"sample.final_snr": 20.0}), str(tmp_path / "ok"))
    for family, spec in [("vae", VAE), ("flow", "configs/flow.py:preset=smoke"),
                         ("pixelcnn", "configs/pixelcnn.py:preset=smoke")]:  # fmt: skip
        exp = Experiment(_config(spec), str(tmp_path / family))
        text = _error(exp.method.resolve_sample_options, SampleOptions(final_snr=20.0))
        assert text.startswith(f"config key sample.final_snr=20.0: family {family!r} does not")
