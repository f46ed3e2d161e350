"""FID InceptionV3: the weight converter, file loaders, resize, and parity with pytorch-fid."""

from __future__ import annotations

import json
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.errors import UserError
from jaxgen.evaluate import inception_weights as iw
from jaxgen.models import inception
from jaxgen.weight_files import read_torch_state_dict


def _basic(prefix, cin, cout, kh, kw=None):
    kw = kh if kw is None else kw
    return {
        f"{prefix}.conv.weight": (cout, cin, kh, kw),
        f"{prefix}.bn.weight": (cout,),
        f"{prefix}.bn.bias": (cout,),
        f"{prefix}.bn.running_mean": (cout,),
        f"{prefix}.bn.running_var": (cout,),
        f"{prefix}.bn.num_batches_tracked": (),
    }


def _block_a(p, cin, pool):
    return {
        **_basic(f"{p}.branch1x1", cin, 64, 1),
        **_basic(f"{p}.branch5x5_1", cin, 48, 1),
        **_basic(f"{p}.branch5x5_2", 48, 64, 5),
        **_basic(f"{p}.branch3x3dbl_1", cin, 64, 1),
        **_basic(f"{p}.branch3x3dbl_2", 64, 96, 3),
        **_basic(f"{p}.branch3x3dbl_3", 96, 96, 3),
        **_basic(f"{p}.branch_pool", cin, pool, 1),
    }


def _block_c(p, c7):
    return {
        **_basic(f"{p}.branch1x1", 768, 192, 1),
        **_basic(f"{p}.branch7x7_1", 768, c7, 1),
        **_basic(f"{p}.branch7x7_2", c7, c7, 1, 7),
        **_basic(f"{p}.branch7x7_3", c7, 192, 7, 1),
        **_basic(f"{p}.branch7x7dbl_1", 768, c7, 1),
        **_basic(f"{p}.branch7x7dbl_2", c7, c7, 7, 1),
        **_basic(f"{p}.branch7x7dbl_3", c7, c7, 1, 7),
        **_basic(f"{p}.branch7x7dbl_4", c7, c7, 7, 1),
        **_basic(f"{p}.branch7x7dbl_5", c7, 192, 1, 7),
        **_basic(f"{p}.branch_pool", 768, 192, 1),
    }


def _block_e(p, cin):
    return {
        **_basic(f"{p}.branch1x1", cin, 320, 1),
        **_basic(f"{p}.branch3x3_1", cin, 384, 1),
        **_basic(f"{p}.branch3x3_2a", 384, 384, 1, 3),
        **_basic(f"{p}.branch3x3_2b", 384, 384, 3, 1),
        **_basic(f"{p}.branch3x3dbl_1", cin, 448, 1),
        **_basic(f"{p}.branch3x3dbl_2", 448, 384, 3),
        **_basic(f"{p}.branch3x3dbl_3a", 384, 384, 1, 3),
        **_basic(f"{p}.branch3x3dbl_3b", 384, 384, 3, 1),
        **_basic(f"{p}.branch_pool", cin, 192, 1),
    }


def reference_layout() -> dict[str, tuple[int, ...]]:
    """Names and shapes of pt_inception-2015-12-05-6726825d.pth (torchvision Inception3,
    1008 classes, no aux head, FID blocks), written out from the torchvision definition."""
    layout = {
        **_basic("Conv2d_1a_3x3", 3, 32, 3),
        **_basic("Conv2d_2a_3x3", 32, 32, 3),
        **_basic("Conv2d_2b_3x3", 32, 64, 3),
        **_basic("Conv2d_3b_1x1", 64, 80, 1),
        **_basic("Conv2d_4a_3x3", 80, 192, 3),
        **_block_a("Mixed_5b", 192, 32),
        **_block_a("Mixed_5c", 256, 64),
        **_block_a("Mixed_5d", 288, 64),
        **_basic("Mixed_6a.branch3x3", 288, 384, 3),
        **_basic("Mixed_6a.branch3x3dbl_1", 288, 64, 1),
        **_basic("Mixed_6a.branch3x3dbl_2", 64, 96, 3),
        **_basic("Mixed_6a.branch3x3dbl_3", 96, 96, 3),
        **_block_c("Mixed_6b", 128),
        **_block_c("Mixed_6c", 160),
        **_block_c("Mixed_6d", 160),
        **_block_c("Mixed_6e", 192),
        **_basic("Mixed_7a.branch3x3_1", 768, 192, 1),
        **_basic("Mixed_7a.branch3x3_2", 192, 320, 3),
        **_basic("Mixed_7a.branch7x7x3_1", 768, 192, 1),
        **_basic("Mixed_7a.branch7x7x3_2", 192, 192, 1, 7),
        **_basic("Mixed_7a.branch7x7x3_3", 192, 192, 7, 1),
        **_basic("Mixed_7a.branch7x7x3_4", 192, 192, 3),
        **_block_e("Mixed_7b", 1280),
        **_block_e("Mixed_7c", 2048),
        "fc.weight": (1008, 2048),
        "fc.bias": (1008,),
    }
    return layout


@pytest.fixture(scope="module")
def state_dict():
    rng = np.random.default_rng(0)
    return {
        name: (np.asarray(7, np.int64) if name.endswith("num_batches_tracked")
               else rng.standard_normal(shape).astype(np.float32))
        for name, shape in reference_layout().items()
    }  # fmt: skip


@pytest.fixture(scope="module")
def scaled_state_dict(state_dict):
    """The random weights scaled so that activations stay of order one through the net."""
    rng = np.random.default_rng(1)
    sd = {}
    for name, value in state_dict.items():
        if name.endswith("running_var"):
            value = rng.uniform(0.5, 1.5, value.shape).astype(np.float32)
        elif name.endswith(("conv.weight", "fc.weight")):
            value = value * np.float32(np.sqrt(2.0 / np.prod(value.shape[1:])))
        elif name.endswith(("running_mean", "bn.bias")):
            value = value * np.float32(0.1)
        sd[name] = value
    return sd


@pytest.fixture(scope="module")
def variables(state_dict):
    return iw.convert_state_dict(state_dict)


def test_converter_maps_every_tensor_by_name_and_shape(state_dict, variables):
    flat = iw.flatten(variables)
    assert {k: v.shape for k, v in flat.items()} == iw.expected_shapes()
    used = 0
    for name, value in state_dict.items():
        parts = name.split(".")
        if parts[-1] == "num_batches_tracked":
            continue
        used += 1
        module = "/".join(parts[:-1])
        if parts[-2] == "conv":
            np.testing.assert_array_equal(
                flat[f"params/{module}/kernel"], value.transpose(2, 3, 1, 0)
            )
        elif name == "fc.weight":
            np.testing.assert_array_equal(flat["params/fc/kernel"], value.T)
        elif name == "fc.bias":
            np.testing.assert_array_equal(flat["params/fc/bias"], value)
        else:
            target = {
                "weight": "params/{}/scale",
                "bias": "params/{}/bias",
                "running_mean": "batch_stats/{}/mean",
                "running_var": "batch_stats/{}/var",
            }
            np.testing.assert_array_equal(flat[target[parts[-1]].format(module)], value)
    assert used == len(flat)


def test_converter_rejects_wrong_names_and_shapes(state_dict):
    bad = dict(state_dict)
    bad["Mixed_5b.branch1x1.conv.weight"] = np.zeros((64, 192, 3, 3), np.float32)
    with pytest.raises(UserError, match=r"Mixed_5b/branch1x1/conv/kernel.*shape"):
        iw.convert_state_dict(bad)
    extra = dict(state_dict, **{"AuxLogits.fc.weight": np.zeros((1008, 768), np.float32)})
    with pytest.raises(UserError, match="unexpected tensor 'AuxLogits.fc.weight'"):
        iw.convert_state_dict(extra)
    missing = {k: v for k, v in state_dict.items() if k != "fc.bias"}
    with pytest.raises(UserError, match="missing tensor 'params/fc/bias'"):
        iw.convert_state_dict(missing)


def _write_safetensors(path, tensors):
    header, offset, blobs = {}, 0, []
    for name, value in tensors.items():
        data = np.ascontiguousarray(value, np.float32).tobytes()
        header[name] = {
            "dtype": "F32",
            "shape": list(value.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def test_loaders_read_both_layouts(tmp_path, state_dict, variables):
    ref = iw.flatten(variables)
    npz = tmp_path / "flax.npz"
    iw.save_npz(variables, str(npz))
    torch_npz = tmp_path / "torch.npz"
    np.savez(torch_npz, **state_dict)
    st = tmp_path / "torch.safetensors"
    _write_safetensors(st, {k: v for k, v in state_dict.items() if "num_batches" not in k})
    for path in (npz, torch_npz, st):
        loaded = iw.flatten(iw.load_inception_variables(str(path)))
        assert loaded.keys() == ref.keys()
        for k in ref:
            np.testing.assert_array_equal(loaded[k], ref[k])


def test_loader_errors_are_one_line(tmp_path):
    for path, pattern in (("", "needs weights"), (str(tmp_path / "nope.npz"), "does not exist")):
        with pytest.raises(UserError, match=pattern) as e:
            iw.load_inception_variables(path)
        assert "\n" not in str(e.value)
    (tmp_path / "w.bin").write_bytes(b"x")
    with pytest.raises(UserError, match="expected a name ending in one of .npz"):
        iw.load_inception_variables(str(tmp_path / "w.bin"))
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="junk.npz: unreadable .npz"):
        iw.load_inception_variables(str(tmp_path / "junk.npz"))


def test_resize_matches_half_pixel_bilinear():
    # PyTorch's align_corners=False upsampling of [0, 1] by 2: source x = (i + 0.5) / 2 - 0.5.
    x = jnp.asarray([[0.0, 1.0]]).reshape(1, 1, 2, 1)
    out = inception.resize_bilinear(jnp.repeat(x, 2, axis=1), 4)
    np.testing.assert_allclose(out[0, 0, :, 0], [0.0, 0.25, 0.75, 1.0], atol=1e-6)
    # Downsampling without antialiasing: 4 -> 2 averages the two middle neighbours.
    y = jnp.arange(4.0).reshape(1, 1, 4, 1).repeat(4, axis=1)
    np.testing.assert_allclose(inception.resize_bilinear(y, 2)[0, 0, :, 0], [0.5, 2.5], atol=1e-6)
    # Same size is the identity.
    z = jax.random.uniform(jax.random.key(0), (1, 5, 5, 1))
    np.testing.assert_allclose(inception.resize_bilinear(z, 5), z, atol=1e-6)


def test_preprocess_grayscale_to_rgb_in_symmetric_range():
    x = jnp.full((2, 28, 28, 1), 0.25)
    y = inception.preprocess(x)
    assert y.shape == (2, 299, 299, 3)
    np.testing.assert_allclose(y, -0.5, atol=1e-6)


def _pytorch_fid():
    try:
        import torch
        from pytorch_fid import inception as fid_inception
    except Exception:  # ImportError, or a torchvision build that cannot load
        pytest.skip("torch and pytorch-fid are not installed")
    return torch, fid_inception


def _reference_model(torch, fid_inception, monkeypatch, state_dict):
    """pytorch-fid's InceptionV3 (pool3 block) loaded strictly from ``state_dict``."""

    def fake_load(url, progress=True):
        del url, progress
        return {k: torch.from_numpy(np.asarray(v)) for k, v in state_dict.items()}

    monkeypatch.setattr(fid_inception, "load_state_dict_from_url", fake_load)
    return fid_inception.InceptionV3([3]).eval()


def test_reference_layout_matches_pytorch_fid(state_dict, monkeypatch):
    torch, fid_inception = _pytorch_fid()
    _reference_model(torch, fid_inception, monkeypatch, state_dict)  # strict load_state_dict


def test_parity_with_pytorch_fid(scaled_state_dict, monkeypatch):
    torch, fid_inception = _pytorch_fid()
    sd = scaled_state_dict
    ref_model = _reference_model(torch, fid_inception, monkeypatch, sd)
    images = np.random.default_rng(2).uniform(0, 1, (2, 3, 40, 36)).astype(np.float32)
    with torch.no_grad():
        ref = ref_model(torch.from_numpy(images))[0].numpy().reshape(2, -1)
    pool3, _ = jax.jit(inception.InceptionV3().apply)(
        iw.convert_state_dict(sd), jnp.asarray(images.transpose(0, 2, 3, 1))
    )
    np.testing.assert_allclose(np.asarray(pool3), ref, rtol=1e-3, atol=1e-3 * np.abs(ref).max())


def test_inception_extractor_and_converter_script(tmp_path, scaled_state_dict):
    from jaxgen.evaluate.features import get_extractor
    from scripts.convert_inception import main as convert

    src = tmp_path / "pt.npz"
    np.savez(src, **scaled_state_dict)
    out = tmp_path / "inception.npz"
    assert convert([str(src), str(out)]) == 0
    assert convert([str(tmp_path / "missing.pth"), str(out)]) == 2
    cfg = {"features": "inception", "inception_weights": str(out), "batch_size": 2}
    extractor = get_extractor(cfg, "fashion_mnist")
    images = np.random.default_rng(0).integers(0, 256, (2, 28, 28, 1)).astype(np.uint8)
    got = extractor(images)
    assert got["features"].shape == (2, 2048) and got["logits"].shape == (2, 1008)
    assert np.isfinite(got["features"]).all() and (got["features"] >= 0).all()  # after ReLU
    # The pool3 features are the mean of the last block, so batch order must not matter.
    swapped = extractor(images[::-1])
    np.testing.assert_allclose(swapped["features"][::-1], got["features"], rtol=1e-4, atol=1e-4)


# torch.save of {"conv.weight": arange(6).reshape(2, 3), "t": its transpose (a strided view
# of the same storage), "view": arange(5, float64)[2:], "bn.num_batches_tracked": 7,
# "half": [1.5, -2] float16}, in the legacy and the zip format (zlib + base64), written by
# torch 2.13 so that reading .pth files is tested without torch installed.
_LEGACY_PTH = (
    "eNptkstu00AUhn1LUlxawq1QruXucLGSxg1hQ7OoKqThVrPxBlmOM8QG48mxx6lAqpRNIsozsGDJY/A67NgiseBM"
    "nAYFPNJ4xmfm/N/5Z2akfNaj3192f228/fZy3Rwpz36o+D0AyXCqkiQNEsaZzyJ3SJM0ZDHIuMFZwZUo5DyiLo17"
    "oReD8snRMcg/DKibhh9pCuoBaIZTwmAasIRDiSiOin9hzKFMNEcTGizuQ4VoWXbEXMaoz+KhuU/DfsBB9jlL/MB0"
    "Mx5Gqe4mtJuFUc/lNE5Z4g43dVAMw6kIDO70+hTUPEXfjZjHX+VBHTRnFfc8stqbDWur3mxa9ZYFpWlF/iDDisrP"
    "OVT2iEQUok5giahEnsCxQx/NR9Tn6D3VXyQ9mtDeTuhzHfSaDcscjtuw4sjCO6wGWEugBoWsE0HOqAqGSpQJnCSy"
    "QJ06DITUaQ5nbDg7PZdhSPdhLVebudlhWTeiczvn/iKaLavVqDcetuA8IkqIWN8TJsZwgchjuJjLX+Jw2YYrzhqm"
    "dWMzzt67XY/7AU1dnnj+O9qDqwvAp3g3c9zGP7iG1W7DNcTJiLuOjmq1HHODw00bbk1dBF70Bm4viD7B0Fz0zqLo"
    "Vh0bGCiqoGhtehVjuCs83MvF73N4YIMpHstr8VgKjkAuKlQpAqlFl6RRU7zY/9vP7dmkkw9Ls7HakWcLldmoHKU8"
    "lr6XFzRG23l+B/sI+9fOH1r12Ek="
)

_ZIP_PTH = (
    "eNqlVU1v00gYntiJG1z6sS2kDVC+9oMEaJo4bT4EbCsLWUhGomS1UrQXy3Hc2MKN+zqTFiqtVGnVStxAQhwR/2JX"
    "4sJf4ACnvaz2gDjBD+DAjJ2kHldJBYwycezM85GZ532zrvJxhJJJdGRMoVm08VDbtbeWmjrWc1sPHEWeQn+wY4/7"
    "E1CmPk4Ahtvezu2YdsvCEDOw6xlWTuti2+mImmc2urbT1LDZ7rieti2JwGUy9TEC65CVessEPoCIiuPq+LfgoQjx"
    "eoysyUOizlOJrS4IqoBh7L6KVE7lDyCp8mrsAE48NgzXcUwD2267I97zmqZnNm/bBhZBzNZgHMPJGkz4bBgmLaJu"
    "8VbcSlg+3xTl41XuAKbVGKX94bFFYTMYZmtwqk72CG3b5g6cDpA9r7fdbsMxB2ZTPn0B5ghpAsP8fWpxH9JqbB/O"
    "BIRnMZyrwUI9RRY22rl2d1Nr6NiwzI6GPd14YDbhPCNx1223BgIXfAEJLhKBGIZLxHU2GxBfxvBjDX7ynVq6swE/"
    "MzR3yKMBzS8+TRGuEBoOQ8bfzH3IUp9XA7prGK7XYLGbW1fHknspdfc/AqFzfWhgUuhsPzC5Ddfb1LG2bXodch6K"
    "PBfNTX8UKP/fH//9izqiczh/GlUG/L3QaLpjt9qbZhsr8vIwiZGjtEwNrO7AB45IcCMNTKO1voHGI2y6NGOKfPOb"
    "dPvDsTF2TOph/9b/aYGoCCM9TKDVcFUu5RX5xvcYCFj3VsnbGnmRuUfmyzXqaO7J+6fz5Iv5YxwtMo4KipxFX6nf"
    "H59Wex/Wgkuyd532/ZTF8c8Zcpc5xs8C40dS5PRwP2M9FOXfevfepYTJY/hvMfxFRa5++wmgX9Frql16+/YZLd34"
    "SO3JwwQOSuv78lcUqfqbF63fj8//AioOCtD/6R3Ts0kF7uq06Wp2U5GXvtZMIV8uV0pSWaqWq9XKynKhJK3kyc2K"
    "VJRKy/livpqXSpWK3yZeCTcuHJ5/jPMT0vMZblFTR5xH/sei4HD/STHAAoeG9LQoR7iFpBmOpyGOI30rShPuAtMM"
    "zQyPjnSfKDpcsRMM+jmP2L4RhYaLi4Vm4iy0EIWG64aF/hOBSlFoOPYsdD7BQotRaDizkwz02SF0yGGFk7TA7rKA"
    "Rmd8XRWE673F5/nFAVCMXB9xvS0Q+g1G8HtN4URwH/zXJYQAI/rrg7VfAPwAD3w="
)


@pytest.mark.parametrize("blob", [_LEGACY_PTH, _ZIP_PTH], ids=["legacy", "zip"])
def test_reads_pth_files_without_torch(tmp_path, blob):
    import base64
    import zlib

    path = tmp_path / "w.pth"
    path.write_bytes(zlib.decompress(base64.b64decode(blob)))
    sd = read_torch_state_dict(str(path))
    base = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(sd["conv.weight"], base)
    np.testing.assert_array_equal(sd["t"], base.T)
    np.testing.assert_array_equal(sd["view"], [2.0, 3.0, 4.0])
    np.testing.assert_array_equal(sd["half"], [1.5, -2.0])
    assert sd["bn.num_batches_tracked"] == 7
    path.write_bytes(b"\x80\x02cos\nsystem\nq\x00.")  # a pickle that would run code
    with pytest.raises(UserError, match="unreadable PyTorch file.*refused to load os.system"):
        read_torch_state_dict(str(path))
