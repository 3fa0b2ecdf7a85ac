"""Latent caches: ArrayRecord round trip, the Grain pipeline serving latents, clear errors."""

import numpy as np
import pytest

from vdm_jax.data.latents import LatentSource, read_meta, write_shards
from vdm_jax.data.pipeline import make_pipeline
from vdm_jax.data.shapes import vocabulary
from vdm_jax.data.tokenizer import WordTokenizer


def _records(n):
    rng = np.random.default_rng(0)
    return [{"latents": rng.standard_normal((3, 4, 4, 2)).astype(np.float32),
             "caption": "a red circle moving left", "colour": i % 6} for i in range(n)]


@pytest.fixture()
def cache(tmp_path):
    records = _records(5)
    write_shards(tmp_path, iter(records), 5, {"scale": 2.0, "shift": 0.0}, num_shards=2)
    return tmp_path, records


def test_round_trip_keeps_every_record(cache):
    path, records = cache
    source = LatentSource(path)
    assert len(source) == 5 and source.latent_shape == (3, 4, 4, 2)
    got = sorted((source[i] for i in range(5)), key=lambda r: r["latents"].sum())
    want = sorted(records, key=lambda r: r["latents"].sum())
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g["latents"], w["latents"])
        assert g["caption"] == w["caption"] and g["colour"] == w["colour"]
    assert read_meta(path)["scale"] == 2.0 and read_meta(path)["num_records"] == 5


def test_pipeline_serves_latents_unchanged(cache):
    path, records = cache
    tokenizer = WordTokenizer(vocabulary(), max_len=8)
    batch = next(iter(make_pipeline(LatentSource(path), batch_size=2, tokenizer=tokenizer,
                                    shuffle=False)))
    assert batch["video"].dtype == np.float32 and batch["video"].shape == (2, 3, 4, 4, 2)
    assert any(np.array_equal(batch["video"][0], r["latents"]) for r in records)
    assert batch["tokens"].shape == (2, 8) and batch["colour"].shape == (2,)


def test_missing_cache_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a latent cache"):
        LatentSource(tmp_path)
    with pytest.raises(IndexError):
        write_shards(tmp_path, iter(_records(1)), 1, {})
        LatentSource(tmp_path)[3]
