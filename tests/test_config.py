import pytest

from configs.base import parse_args
from jaxgen.errors import UserError
from tests.conftest import load_config


def test_parse_args_types_and_defaults():
    args = parse_args("preset=smoke,beta=4,flag=false", dict(preset="full", beta=1.0, flag=True))
    assert args == {"preset": "smoke", "beta": 4.0, "flag": False}


@pytest.mark.parametrize(
    "arg, message",
    [
        ("nope=1", "unknown config argument 'nope'"),
        ("beta=abc", "beta='abc': expected float"),
        ("preset", "not of the form key=value"),
        ("preset=huge", "preset='huge'"),
    ],
)
def test_parse_args_errors_name_the_key(arg, message):
    with pytest.raises(UserError, match=message):
        parse_args(arg, dict(preset="full", beta=1.0))


@pytest.mark.parametrize("preset", ["smoke", "cpu", "full"])
def test_vae_presets_load(preset):
    config = load_config(f"configs/vae.py:preset={preset}")
    assert config.family == "vae"
    assert config.train.num_steps > 0
    if preset == "smoke":
        assert config.train.num_steps <= 10


@pytest.mark.parametrize("args", ["preset=cpu,edm=true", "preset=smoke,edm=true", "edm=true"])
def test_edm_configs_leave_out_the_variational_bound(args):
    assert "likelihood" not in load_config(f"configs/ddpm.py:{args}").evals
    assert "likelihood" in load_config("configs/ddpm.py:" + args.replace("edm=true", "")).evals


def test_cpu_vae_keeps_per_pixel_scales_on_sprites():
    # A shared log scale collapsed the sprites VAE's posterior (every sample black).
    assert load_config("configs/vae.py:preset=cpu").model.shared_scale
    assert not load_config("configs/vae.py:preset=cpu,data=sprites").model.shared_scale


@pytest.mark.parametrize("preset, guidance", [("cpu", 5.0), ("full", 3.0)])
def test_text_guidance_defaults(preset, guidance):
    assert load_config(f"configs/ddpm.py:preset={preset},cond=text").sample.guidance == guidance
    assert load_config(f"configs/ddpm.py:preset={preset}").sample.guidance == 1.0
