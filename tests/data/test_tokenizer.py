"""Word tokenizer: ids, padding, errors, JSON round trip, vocabulary from captions."""

import json

import numpy as np
import pytest

from vdm_jax.data.shapes import ShapesSource, vocabulary
from vdm_jax.data.tokenizer import BOS, PAD, WordTokenizer


@pytest.fixture(scope="module")
def tok():
    return WordTokenizer(vocabulary(), max_len=8)


def test_ids_and_padding(tok):
    words = vocabulary()
    assert tok.vocab_size == len(words) + 2
    tokens = tok.encode("a red square moving left")
    assert tokens.dtype == np.int32 and tokens.shape == (8,)
    expected_ids = [words.index(w) + 2 for w in ("a", "red", "square", "moving", "left")]
    assert tokens.tolist() == [BOS, *expected_ids, PAD, PAD]


def test_normalisation(tok):
    np.testing.assert_array_equal(
        tok.encode("  A RED, square moving left! "), tok.encode("a red square moving left")
    )


def test_null_tokens(tok):
    null = tok.null_tokens()
    np.testing.assert_array_equal(null, tok.encode(""))
    assert null.tolist() == [BOS] + [PAD] * 7


def test_decode_round_trip(tok):
    src = ShapesSource(num_examples=30, caption_size=True)
    for i in range(len(src)):
        caption = src[i]["caption"]
        assert tok.decode(tok.encode(caption)) == caption


def test_encode_batch(tok):
    texts = ["a red square moving left", "", "a small blue circle moving up"]
    batch = tok.encode_batch(texts)
    assert batch.shape == (3, 8) and batch.dtype == np.int32
    for row, text in zip(batch, texts, strict=True):
        np.testing.assert_array_equal(row, tok.encode(text))


def test_unknown_words_error(tok):
    with pytest.raises(ValueError) as err:
        tok.encode("a purple hexagon moving left")
    msg = str(err.value)
    assert "purple" in msg and "hexagon" in msg and "red" in msg


def test_too_long_error(tok):
    with pytest.raises(ValueError, match="at most max_len - 1 = 7"):
        tok.encode("a small red square moving left a red")
    assert tok.encode("a small red square moving left a")[-1] != PAD  # exactly 7 words fit


def test_bad_vocabulary():
    with pytest.raises(ValueError, match="duplicate"):
        WordTokenizer(["a", "b", "a"])
    with pytest.raises(ValueError, match="single words"):
        WordTokenizer(["Red"])


def test_json_round_trip(tok):
    restored = WordTokenizer.from_dict(json.loads(json.dumps(tok.to_dict())))
    assert restored == tok
    np.testing.assert_array_equal(
        restored.encode("a red square moving left"), tok.encode("a red square moving left")
    )


def test_for_captions_is_sorted_and_deterministic():
    captions = ["The cat sat.", "a dog ran", "the dog sat"]
    t1 = WordTokenizer.for_captions(captions, max_len=6)
    t2 = WordTokenizer.for_captions(list(reversed(captions)), max_len=6)
    assert t1.words == ("a", "cat", "dog", "ran", "sat", "the")
    assert t1 == t2
    assert t1.decode(t1.encode("The cat sat.")) == "the cat sat"
