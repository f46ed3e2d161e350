"""FID as papers compute it: the Fréchet distance against pytorch-fid's formula, and
reference statistics (``mu``/``sigma`` ``.npz``) written, read and validated."""

from __future__ import annotations

import json
import warnings

import jax
import ml_collections
import numpy as np
import pytest
import scipy.linalg

from jaxgen.errors import UserError
from jaxgen.evaluate import check_evaluators, fid_stats, get_evaluator, metrics
from jaxgen.evaluate.features import file_fingerprint

# --- the Fréchet distance against an independent implementation -----------------------


def _pytorch_fid_distance(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """pytorch-fid's ``calculate_frechet_distance``, written out afresh: ``sqrtm`` of the
    product; when that is not finite, ``eps`` is added to both diagonals; a complex result
    is accepted when its diagonal's imaginary part is below 1e-3 and then made real.

    Returns ``(distance, whether the eps offset was used)``.
    """
    diff = mu1 - mu2
    with warnings.catch_warnings():  # "Matrix is singular": expected for N < D
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
        offset_used = not np.isfinite(covmean).all()
        if offset_used:
            offset = eps * np.eye(len(sigma1))
            covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        assert np.abs(np.diagonal(covmean).imag).max() < 1e-3
        covmean = covmean.real
    return diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean), offset_used


def _features(case: str):
    """Two fixed feature sets ``[N, D]`` with known structure."""
    rng = np.random.default_rng({"full_rank": 0, "n_below_d": 1, "dead_units": 2}[case])
    n, d = {"full_rank": (400, 16), "n_below_d": (24, 64), "dead_units": (20, 48)}[case]
    mix = rng.standard_normal((d, d)) / np.sqrt(d)
    a = rng.standard_normal((n, d)) @ mix
    b = 1.3 * rng.standard_normal((n + 7, d)) @ (mix + 0.2 * np.eye(d)) + 0.25
    if case == "dead_units":  # zero-variance features, as dead ReLU units give
        a[:, :8] = 0.0
        b[:, :8] = 0.0
    return a, b


@pytest.mark.parametrize(
    "case, rtol",
    [("full_rank", 1e-10), ("n_below_d", 1e-6), ("dead_units", 1e-6)],
)
def test_fd_matches_pytorch_fid_formula(case, rtol):
    a, b = _features(case)
    mu1, s1 = metrics.feature_statistics(a)
    mu2, s2 = metrics.feature_statistics(b)
    ref, offset_used = _pytorch_fid_distance(mu1, s1, mu2, s2)
    assert not offset_used
    assert metrics.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=rtol)
    assert metrics.frechet_distance(mu2, s2, mu1, s1) == pytest.approx(ref, rel=rtol)
    # Rank-deficient covariances (N < D): scipy's sqrtm stays near-real, both agree.
    if case != "full_rank":
        assert np.linalg.matrix_rank(s1) < len(s1)


def test_fd_singular_product_where_pytorch_fid_adds_eps():
    # Two samples per set: rank-1 covariances v v^T / 2 and w w^T / 2 with integer v, w.
    # Their product is exactly singular and scipy's sqrtm returns inf/NaN, so pytorch-fid
    # adds eps = 1e-6 to both diagonals. Closed form: tr (s1 s2)^(1/2) = |v.w| / 2.
    v = np.array([1, 1, -1, -1, -1, -3, 1, 1, -1], float)
    w = np.array([-1, 1, -1, 0, -1, 2, -1, -3, 1], float)
    a = np.stack([np.zeros(9), v])
    b = np.stack([np.ones(9), np.ones(9) + w])
    mu1, s1 = metrics.feature_statistics(a)
    mu2, s2 = metrics.feature_statistics(b)
    exact = float(((mu1 - mu2) ** 2).sum() + (v @ v + w @ w - 2 * abs(v @ w)) / 2)
    got = metrics.frechet_distance(mu1, s1, mu2, s2)
    assert got == pytest.approx(exact, rel=1e-12)
    ref, offset_used = _pytorch_fid_distance(mu1, s1, mu2, s2)
    eps, d = 1e-6, len(v)
    offset = eps * np.eye(d)
    # With the same offset jaxgen gives pytorch-fid's value (whose trace terms keep the
    # unshifted sigmas, hence the 2 * D * eps), and without it the exact one, which
    # pytorch-fid's misses by ~sqrt(eps).
    shifted = metrics.frechet_distance(mu1, s1 + offset, mu2, s2 + offset) - 2 * d * eps
    if offset_used:
        assert shifted == pytest.approx(ref, rel=1e-9)
    assert abs(got - ref) < 1e-4


def test_fd_diagonal_gaussians_closed_form():
    rng = np.random.default_rng(3)
    mu1, mu2 = rng.standard_normal(32), rng.standard_normal(32)
    v1, v2 = rng.uniform(0.1, 4.0, 32), rng.uniform(0.1, 4.0, 32)
    v1[:4] = 0.0  # degenerate directions too
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum()
    got = metrics.frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2))
    assert got == pytest.approx(expected, rel=1e-12)
    ref, _ = _pytorch_fid_distance(mu1, np.diag(v1), mu2, np.diag(v2))
    assert ref == pytest.approx(expected, rel=1e-9)


# --- statistics files: written by the evaluator and the script, read back --------------

SOURCE = "fid_unit_test"


def _images(n: int = 120, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 60, (n, 8, 8, 1)).astype(np.uint8)
    for i in range(n):
        images[i, i % 6 : i % 6 + 3, 1:7] = 255
    return images


@pytest.fixture
def source(monkeypatch):
    """An in-memory 8x8 source registered as ``fid_unit_test`` (both splits)."""
    from jaxgen.data import sources

    images = _images()
    array = sources.ArraySource(images, np.arange(len(images)) % 10, tuple("0123456789"))
    monkeypatch.setitem(sources.SOURCES, SOURCE, lambda split, data_dir: array)
    return array


def _context(tmp_path, source, generate_fn=None):
    from jaxgen.data.spec import DataSpec
    from jaxgen.evaluate import EvalContext

    config = ml_collections.ConfigDict(
        {"data": {"name": SOURCE, "image_size": 8, "train_split": "train", "eval_split": "test"}}
    )
    if generate_fn is None:
        fakes = _images(80, seed=1)
        fakes[:, :, :2] = 0  # samples differ from the real images

        def generate_fn(num, rng):
            del rng
            return {"images": fakes[:num].copy()}

    return EvalContext(
        config=config, params=None, model_state=None,
        spec=DataSpec((8, 8, 1), 10), train_source=source, eval_source=source,
        rng=jax.random.key(0), workdir=str(tmp_path), generate_fn=generate_fn,
    )  # fmt: skip


def _quality(**options) -> ml_collections.ConfigDict:
    base = dict(type="quality", num_samples=60, num_real=100, features="pixels", kid_subsets=5,
                kid_subset_size=30, reference_stats="", save_reference_stats="")  # fmt: skip
    return ml_collections.ConfigDict({**base, **options})


def test_saved_stats_load_back_and_give_the_same_fd(tmp_path, source, monkeypatch):
    monkeypatch.setenv("JAXGEN_CACHE_DIR", str(tmp_path / "cache"))
    quality = get_evaluator("quality")
    path = str(tmp_path / "stats" / "ref.npz")
    ctx = _context(tmp_path, source)
    in_memory = quality(ctx, _quality(save_reference_stats=path))
    assert in_memory["fd"] > 0
    saved = json.loads((tmp_path / "eval" / "evaluators.json").read_text())["fd"]
    assert saved["saved_reference_stats"] == path and saved["split"] == "test"
    assert saved["saved_reference_stats_sha256"] == file_fingerprint(path)
    # pytorch-fid's layout: exactly mu [D] and sigma [D, D], float64; read as pytorch-fid does.
    with np.load(path) as f:
        assert sorted(f.files) == ["mu", "sigma"]
        mu, sigma = f["mu"][:], f["sigma"][:]
    assert mu.dtype == sigma.dtype == np.float64 and sigma.shape == (64, 64)
    real = np.stack([source[i]["image"] for i in range(100)]).reshape(100, -1) / np.float32(255)
    want_mu, want_sigma = metrics.feature_statistics(real.astype(np.float32))
    # (float32 features: the extractor divides by 255 in JAX, here numpy does)
    np.testing.assert_allclose(mu, want_mu, rtol=1e-6)
    np.testing.assert_allclose(sigma, want_sigma, rtol=1e-5, atol=1e-9)

    from_file = quality(ctx, _quality(reference_stats=path))
    assert from_file == in_memory  # fd from the file equals fd from memory, bit for bit
    only_fd = quality(ctx, _quality(reference_stats=path, num_real=0))
    assert only_fd == {"fd": in_memory["fd"], "fd_num_samples": 60.0}

    provenance = json.loads((tmp_path / "eval" / "evaluators.json").read_text())
    assert provenance["fd"]["reference_stats"] == path
    assert provenance["fd"]["reference_stats_sha256"] == file_fingerprint(path)
    assert "split" not in provenance["fd"] and provenance["fd"]["num_samples"] == 60
    assert provenance["kid"]["split"] == "test" and provenance["kid"]["num_real"] == 100

    # The script writes the same statistics for the same images and extractor.
    from scripts.fid_reference_stats import main as script

    out = str(tmp_path / "script.npz")
    args = [f"--data={SOURCE}", "--split=test", "--num=100", "--features=pixels", f"--out={out}"]
    assert script(args) == 0
    got_mu, got_sigma = fid_stats.read_stats(out, 64)
    np.testing.assert_array_equal(got_mu, mu)
    np.testing.assert_array_equal(got_sigma, sigma)
    assert quality(ctx, _quality(reference_stats=out, num_real=0))["fd"] == in_memory["fd"]


def test_script_reads_image_folders_as_the_source(tmp_path, source, capsys):
    from PIL import Image

    from scripts.fid_reference_stats import main as script

    folder = tmp_path / "pngs"
    folder.mkdir()
    for i in range(30):
        Image.fromarray(source[i]["image"][..., 0]).save(folder / f"{i:03d}.png")
    (folder / "notes.txt").write_text("not an image")
    a, b = str(tmp_path / "folder.npz"), str(tmp_path / "data.npz")
    assert script([f"--images={folder}", "--features=pixels", f"--out={a}"]) == 0
    printed = capsys.readouterr().out
    assert "N=30, feature_dim=64, sha256=" in printed and file_fingerprint(a) in printed
    assert script([f"--data={SOURCE}", "--num=30", "--features=pixels", f"--out={b}"]) == 0
    for x, y in zip(fid_stats.read_stats(a), fid_stats.read_stats(b), strict=True):
        np.testing.assert_array_equal(x, y)
    # Resized: 8x8 -> 16x16 with the pipeline's PIL bilinear; 256-d pixel features.
    c = str(tmp_path / "big.npz")
    assert script([f"--images={folder}", "--features=pixels", "--image_size=16", f"--out={c}"]) == 0
    assert fid_stats.read_stats(c)[0].shape == (256,)
    assert script([f"--images={tmp_path / 'none'}", "--features=pixels", f"--out={c}"]) == 2
    assert script([f"--data={SOURCE}", "--features=pixels", f"--out={tmp_path / 'x.np'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") for line in err)


# --- validation before anything is sampled --------------------------------------------


def _method(image_shape=(8, 8, 1)) -> dict:
    """The model's side of :func:`check_evaluators`."""
    return dict(
        family="gan", data_name=SOURCE, has_likelihood=True, cond="none", image_shape=image_shape
    )


def _bad_files(tmp_path) -> list[tuple[str, str]]:
    cases = []
    path = str(tmp_path / "keys.npz")
    np.savez(path, m=np.zeros(64), s=np.eye(64))
    cases.append((path, "has no 'mu' array .*holds m, s.*pytorch-fid"))
    path = str(tmp_path / "dims.npz")
    np.savez(path, mu=np.zeros(2048), sigma=np.eye(2048, dtype=np.float32))
    cases.append((path, "of 2048-d features, but the evaluator's extractor gives 64-d"))
    path = str(tmp_path / "shape.npz")
    np.savez(path, mu=np.zeros(64), sigma=np.eye(63))
    cases.append((path, r"'sigma' \(63, 63\); expected \[D\] and \[D, D\]"))
    path = str(tmp_path / "nan.npz")
    np.savez(path, mu=np.full(64, np.nan), sigma=np.eye(64))
    cases.append((path, "NaN or infinite"))
    path = tmp_path / "junk.npz"
    path.write_bytes(b"not a zip")
    cases.append((str(path), "junk.npz: unreadable .npz"))
    cases.append((str(tmp_path / "absent.npz"), "absent.npz does not exist; write one with"))
    return cases


def test_bad_stats_files_fail_before_anything_is_sampled(tmp_path, source):
    def refuse(num, rng):
        raise AssertionError("sampled before the statistics file was checked")

    ctx = _context(tmp_path, source, refuse)
    for path, pattern in _bad_files(tmp_path):
        cfg = _quality(reference_stats=path)
        with pytest.raises(UserError, match=pattern) as info:
            check_evaluators(ml_collections.ConfigDict({"q": cfg}), **_method())
        message = str(info.value)
        assert message.startswith("config key evals.q: ") and "\n" not in message, message
        with pytest.raises(UserError, match=pattern):  # the evaluator itself, too
            get_evaluator("quality")(ctx, cfg)
    good = str(tmp_path / "good.npz")
    fid_stats.write_stats(good, np.zeros(64), np.eye(64))
    check_evaluators(ml_collections.ConfigDict({"q": _quality(reference_stats=good)}), **_method())


@pytest.mark.parametrize(
    "options, pattern",
    [
        (dict(type="c2st", reference_stats="x.npz"), "quality evaluator only, not of 'c2st'"),
        (dict(save_reference_stats="stats.txt"), "expected a name ending in .npz"),
        (dict(num_real=0), "num_real=0 reads no real images"),
        (dict(num_real=-1), "num_real=-1: expected >= 0"),
    ],
)
def test_bad_stats_options_are_one_line_errors(options, pattern):
    evals = ml_collections.ConfigDict({"q": _quality(**options)})
    with pytest.raises(UserError, match=pattern) as info:
        check_evaluators(evals, **_method())
    assert str(info.value).startswith("config key evals.q: ") and "\n" not in str(info.value)


def test_same_file_to_read_and_write_is_refused(tmp_path):
    path = str(tmp_path / "ref.npz")
    fid_stats.write_stats(path, np.zeros(64), np.eye(64))
    evals = ml_collections.ConfigDict(
        {"q": _quality(reference_stats=path, save_reference_stats=path)}
    )
    with pytest.raises(UserError, match="name the same file"):
        check_evaluators(evals, **_method())


def test_launcher_refuses_a_misshaped_stats_file_before_training(tmp_path, capfd):
    from tests.conftest import run_cli

    bad = str(tmp_path / "cifar10_train.npz")
    np.savez(bad, mu=np.zeros(2048), sigma=np.eye(2048))  # Inception's width; smoke uses pixels
    workdir = tmp_path / "run"
    result = run_cli(
        capfd, "--config=configs/gan.py:preset=smoke",
        f"--config.evals.quality.reference_stats={bad}", f"--workdir={workdir}",
    )  # fmt: skip
    assert result.code == 2
    assert result.lines == [
        f"error: config key evals.quality: reference statistics {bad} are of 2048-d features, "
        "but the evaluator's extractor gives 784-d features"
    ]
    assert not workdir.exists()


def test_published_configs_take_the_stats_options():
    from tests.conftest import load_config

    for spec in ("configs/gan.py", "configs/ddpm.py", "configs/gan.py:preset=smoke"):
        quality = load_config(spec).evals.quality
        assert quality.reference_stats == quality.save_reference_stats == ""
        assert quality.split == "eval"  # the default, spelled out so that it can be overridden


# --- Inception: weights from the converter, the script, the width check ---------------


def _random_inception_state_dict() -> dict[str, np.ndarray]:
    """Random FID-Inception weights under pytorch-fid's tensor names (each Flax variable's
    name and layout mapped back), scaled so that activations stay of order one."""
    from jaxgen.evaluate import inception_weights as iw

    rng = np.random.default_rng(0)
    sd = {}
    for name, shape in iw.expected_shapes().items():
        collection, *module, leaf = name.split("/")
        prefix = ".".join(module)
        if leaf == "kernel" and len(shape) == 4:  # [kh, kw, in, out] -> [out, in, kh, kw]
            kh, kw, cin, cout = shape
            value = rng.standard_normal((cout, cin, kh, kw)) * np.sqrt(2.0 / (cin * kh * kw))
            sd[f"{prefix}.weight"] = value
        elif leaf == "kernel":  # fc: [2048, 1008] -> [1008, 2048]
            sd["fc.weight"] = rng.standard_normal(shape[::-1]) * np.sqrt(2.0 / shape[0])
        elif collection == "batch_stats":
            torch_leaf = {"mean": "running_mean", "var": "running_var"}[leaf]
            low, high = (0.5, 1.5) if leaf == "var" else (-0.1, 0.1)
            sd[f"{prefix}.{torch_leaf}"] = rng.uniform(low, high, shape)
        else:  # bn scale / bias, fc bias
            torch_leaf = {"scale": "weight", "bias": "bias"}[leaf]
            sd[f"{prefix}.{torch_leaf}"] = (1.0 if leaf == "scale" else 0.0) + 0.1 * (
                rng.standard_normal(shape)
            )
    return {k: v.astype(np.float32) for k, v in sd.items()}


def test_inception_weights_from_the_converter_and_stats_width(tmp_path, source, capsys):
    from jaxgen.evaluate import inception_weights as iw
    from scripts.fid_reference_stats import main as script

    pt = tmp_path / "pt_names.npz"
    np.savez(pt, **_random_inception_state_dict())
    weights = str(tmp_path / "inception.npz")
    assert iw.main([str(pt), weights]) == 0  # python -m jaxgen.evaluate.inception_weights
    out = str(tmp_path / "inception_stats.npz")
    args = [f"--data={SOURCE}", "--num=4", "--features=inception", f"--inception_weights={weights}",
            "--batch_size=2", f"--out={out}"]  # fmt: skip
    assert script(args) == 0
    assert "N=4, feature_dim=2048" in capsys.readouterr().out
    mu, sigma = fid_stats.read_stats(out, 2048)
    assert np.isfinite(sigma).all() and (mu >= 0).all()  # pool3 follows a ReLU
    options = dict(features="inception", inception_weights=weights)
    ok = _quality(reference_stats=out, **options)
    check_evaluators(ml_collections.ConfigDict({"q": ok}), **_method())
    narrow = str(tmp_path / "pixels.npz")
    fid_stats.write_stats(narrow, np.zeros(64), np.eye(64))
    bad = ml_collections.ConfigDict({"q": _quality(reference_stats=narrow, **options)})
    with pytest.raises(UserError, match="of 64-d features, but .* gives 2048-d"):
        check_evaluators(bad, **_method())
