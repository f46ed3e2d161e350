"""Fashion-MNIST captions: held-out paraphrases, determinism, the captioned source."""

import numpy as np
import pytest

from jaxgen.data import captions
from jaxgen.data.sources import FASHION_MNIST_CLASSES, ArraySource
from jaxgen.errors import UserError
from jaxgen.text.tokenizer import UNK, split_words, word_tokenizer


def test_issue_examples_are_captions_of_trousers():
    trouser = FASHION_MNIST_CLASSES.index("trouser")
    every = set(captions.train_captions(trouser)) | set(captions.heldout_captions(trouser))
    assert {"a pair of trousers", "jeans", "a photo of pants"} <= every


@pytest.mark.parametrize("label", range(captions.NUM_CLASSES))
def test_heldout_captions_are_disjoint_from_training(label):
    train = captions.train_captions(label)
    heldout = captions.heldout_captions(label)
    assert train and heldout
    assert not set(train) & set(heldout)
    others = {
        c for k in range(captions.NUM_CLASSES) if k != label for c in captions.train_captions(k)
    }
    assert not set(heldout) & others and not set(train) & others


def test_known_words_only_keeps_new_combinations_of_training_words():
    vocab = captions.train_vocabulary()
    total_known = 0
    for label in range(captions.NUM_CLASSES):
        known = captions.heldout_captions(label, known_words_only=True)
        assert set(known) <= set(captions.heldout_captions(label))
        assert all(set(split_words(c)) <= vocab for c in known)
        total_known += len(known)
    assert total_known > 0
    assert "jeans" not in vocab  # a held-out synonym brings a new word


def test_caption_for_is_deterministic_by_seed_and_index():
    a = [captions.caption_for(1, i, seed=0) for i in range(50)]
    assert a == [captions.caption_for(1, i, seed=0) for i in range(50)]
    assert a != [captions.caption_for(1, i, seed=1) for i in range(50)]
    assert set(a) <= set(captions.train_captions(1))
    assert len(set(a)) > 5  # the captions vary across examples
    held = {captions.caption_for(1, i, heldout=True) for i in range(50)}
    assert held <= set(captions.heldout_captions(1))


def test_captioned_source_adds_a_caption_of_the_label():
    images = np.zeros((20, 4, 4, 1), np.uint8)
    labels = np.arange(20) % 10
    source = captions.CaptionedSource(ArraySource(images, labels, FASHION_MNIST_CLASSES), seed=3)
    assert len(source) == 20 and source.num_classes == 10
    for i in range(20):
        item = source[i]
        assert item["caption"] in captions.train_captions(int(labels[i]))
        assert item["caption"] == source[i]["caption"]


def test_wrong_label_or_class_count_is_a_user_error():
    with pytest.raises(UserError, match="caption label"):
        captions.train_captions(10)
    three = ArraySource(np.zeros((3, 2, 2), np.uint8), np.arange(3), ("a", "b", "c"))
    with pytest.raises(UserError, match="10 Fashion-MNIST classes"):
        captions.CaptionedSource(three)


def test_corpus_tokenizer_knows_every_caption_word():
    tok = word_tokenizer(captions.all_captions(), max_len=16)
    for caption in captions.all_captions():
        ids = tok.encode(caption)
        assert UNK not in ids
        assert tok.decode(ids) == caption


def test_class_prompts_list_each_class_captions_in_label_order():
    for heldout, pick in ((False, captions.train_captions), (True, captions.heldout_captions)):
        prompts = captions.class_prompts(heldout)
        assert prompts == [list(pick(c)) for c in range(captions.NUM_CLASSES)]
