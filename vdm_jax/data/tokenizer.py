"""Word-level caption tokenizer for closed-vocabulary captions (procedural data, small datasets).

Ids: 0 = ``<pad>``, 1 = ``<bos>``, then the vocabulary words in the given order. ``encode`` gives
``[BOS, w1, ..., wn, PAD, ...]`` of fixed length ``max_len``; the empty caption encodes to
``[BOS, PAD, ...]``, the null condition for classifier-free guidance.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Sequence

import numpy as np

PAD, BOS = 0, 1
SPECIAL = ("<pad>", "<bos>")
_STRIP = str.maketrans("", "", string.punctuation)


def split_words(text: str) -> list[str]:
    """Lower-case, split on whitespace and strip punctuation; empty pieces are dropped."""
    return [w for w in (t.translate(_STRIP) for t in text.lower().split()) if w]


class WordTokenizer:
    """Fixed-length word tokenizer over a closed vocabulary.

    Args:
      vocabulary: distinct words (already normalised: lower case, no punctuation).
      max_len: token length L including the BOS token, so captions may have L - 1 words.
    """

    def __init__(self, vocabulary: Sequence[str], max_len: int = 12):
        words = list(vocabulary)
        if max_len < 1:
            raise ValueError(f"max_len must be >= 1 (room for BOS), got {max_len}")
        bad = [w for w in words if split_words(w) != [w]]
        if bad:
            raise ValueError(
                f"vocabulary words must be lower-case single words without punctuation: {bad}"
            )
        if len(set(words)) != len(words):
            dupes = sorted({w for w in words if words.count(w) > 1})
            raise ValueError(f"vocabulary has duplicate words: {dupes}")
        self.words = tuple(words)
        self.max_len = int(max_len)
        self._ids = {w: i + len(SPECIAL) for i, w in enumerate(self.words)}

    @classmethod
    def for_captions(cls, captions: Iterable[str], max_len: int = 12) -> WordTokenizer:
        """Tokenizer whose vocabulary is every word of ``captions``, sorted (deterministic)."""
        words = sorted({w for c in captions for w in split_words(c)})
        return cls(words, max_len=max_len)

    @property
    def vocab_size(self) -> int:
        """Number of ids including ``<pad>`` and ``<bos>``."""
        return len(SPECIAL) + len(self.words)

    def __repr__(self) -> str:
        return f"WordTokenizer(vocab_size={self.vocab_size}, max_len={self.max_len})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WordTokenizer) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash((self.words, self.max_len))

    def encode(self, text: str) -> np.ndarray:
        """Caption -> int32 (max_len,) ``[BOS, words..., PAD...]``.

        Raises:
          ValueError: for words outside the vocabulary or more than ``max_len - 1`` words.
        """
        words = split_words(text)
        unknown = [w for w in words if w not in self._ids]
        if unknown:
            sample = ", ".join(self.words[:20]) + (", ..." if len(self.words) > 20 else "")
            raise ValueError(
                f"caption {text!r} has words outside the vocabulary: {unknown}; "
                f"known words ({len(self.words)}): {sample}"
            )
        if len(words) > self.max_len - 1:
            raise ValueError(
                f"caption {text!r} has {len(words)} words; at most max_len - 1 = "
                f"{self.max_len - 1} fit"
            )
        tokens = np.full((self.max_len,), PAD, np.int32)
        tokens[0] = BOS
        tokens[1 : 1 + len(words)] = [self._ids[w] for w in words]
        return tokens

    def encode_batch(self, texts: Sequence[str]) -> np.ndarray:
        """Captions -> int32 (n, max_len)."""
        out = np.full((len(texts), self.max_len), PAD, np.int32)
        for i, text in enumerate(texts):
            out[i] = self.encode(text)
        return out

    def null_tokens(self) -> np.ndarray:
        """Tokens of the empty caption, int32 (max_len,): the unconditional input."""
        return self.encode("")

    def decode(self, tokens: Sequence[int] | np.ndarray) -> str:
        """int (L,) -> caption; special tokens are dropped."""
        words = []
        for t in np.asarray(tokens).reshape(-1).tolist():
            if not 0 <= t < self.vocab_size:
                raise ValueError(f"token id {t} outside [0, {self.vocab_size})")
            if t >= len(SPECIAL):
                words.append(self.words[t - len(SPECIAL)])
        return " ".join(words)

    def to_dict(self) -> dict:
        """JSON-serialisable description (stored with checkpoints)."""
        return {"vocabulary": list(self.words), "max_len": self.max_len}

    @classmethod
    def from_dict(cls, d: dict) -> WordTokenizer:
        """Inverse of ``to_dict``."""
        return cls(d["vocabulary"], max_len=d["max_len"])
