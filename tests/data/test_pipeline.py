"""Grain pipeline: batches, determinism, process slices, state resume, Orbax, dropped records."""

import grain
import numpy as np
import orbax.checkpoint as ocp
import pytest

from vdm_jax.data.pipeline import make_pipeline, process_slice, skipped_count
from vdm_jax.data.shapes import ShapesSource, vocabulary
from vdm_jax.data.tokenizer import WordTokenizer

N = 48


@pytest.fixture(scope="module")
def tok():
    return WordTokenizer(vocabulary(), max_len=8)


@pytest.fixture(scope="module")
def source():
    return ShapesSource(num_examples=N, num_frames=4, resolution=16, seed=0)


class IndexSource:
    """Records that carry their own index (as the ``colour`` label) to trace order."""

    def __init__(self, n, holes=()):
        self.n, self.holes = n, set(holes)

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if i in self.holes:
            return None
        return {"video": np.full((2, 4, 4, 3), i % 256, np.uint8), "caption": "a", "colour": i}


def indices(ds, steps=None):
    """Indices of every record in the first ``steps`` batches (all if None)."""
    out = []
    for k, batch in enumerate(ds):
        if steps is not None and k == steps:
            break
        out.extend(batch["colour"].tolist())
    return out


def make(src, tok, **kw):
    kw.setdefault("process_index", 0)
    kw.setdefault("process_count", 1)
    return make_pipeline(src, tokenizer=tok, **kw)


def test_batch_shapes_dtypes_range(source, tok):
    batch = next(iter(make(source, tok, batch_size=4)))
    assert batch["video"].shape == (4, 4, 16, 16, 3) and batch["video"].dtype == np.float32
    assert batch["video"].min() == -1.0 and batch["video"].max() == 1.0
    assert batch["tokens"].shape == (4, 8) and batch["tokens"].dtype == np.int32
    for key in ("colour", "shape", "direction", "size"):
        assert batch[key].shape == (4,) and batch[key].dtype == np.int32
    assert "caption" not in batch
    # Each row is the record it claims: the tokens decode to that record's caption.
    captions = {source[i]["caption"] for i in range(N)}
    assert all(tok.decode(t) in captions for t in batch["tokens"])


def test_one_epoch_is_a_permutation(tok):
    got = indices(make(IndexSource(N), tok, batch_size=4, num_epochs=1))
    assert sorted(got) == list(range(N)) and got != list(range(N))
    unshuffled = indices(make(IndexSource(N), tok, batch_size=4, num_epochs=1, shuffle=False))
    assert unshuffled == list(range(N))


def test_seed_determinism_and_epochs(tok):
    a = indices(make(IndexSource(N), tok, batch_size=4, seed=1), steps=24)
    b = indices(make(IndexSource(N), tok, batch_size=4, seed=1), steps=24)
    c = indices(make(IndexSource(N), tok, batch_size=4, seed=2), steps=24)
    assert a == b and a[:N] != c[:N]
    # Forever-repeating: the second epoch is a full pass in a new order.
    assert sorted(a[N:]) == list(range(N)) and a[N:] != a[:N]


def test_default_process_is_jax_process(tok):
    default = make_pipeline(IndexSource(N), tokenizer=tok, batch_size=4, num_epochs=1)
    assert indices(default) == indices(make(IndexSource(N), tok, batch_size=4, num_epochs=1))


def test_drop_remainder(tok):
    full = list(make(IndexSource(10), tok, batch_size=4, num_epochs=1, shuffle=False))
    assert [len(b["colour"]) for b in full] == [4, 4]
    keep = list(
        make(IndexSource(10), tok, batch_size=4, num_epochs=1, shuffle=False, drop_remainder=False)
    )
    assert [len(b["colour"]) for b in keep] == [4, 4, 2]


def test_process_slices_disjoint_and_covering(tok):
    per = [
        indices(make(IndexSource(N), tok, batch_size=3, num_epochs=1, process_index=p,
                     process_count=4))
        for p in range(4)
    ]
    assert all(len(p) == N // 4 for p in per)
    flat = [i for p in per for i in p]
    assert sorted(flat) == list(range(N))
    # With a remainder every process still gets the same count, all disjoint.
    slices = [range(N + 3)[process_slice(N + 3, p, 4)] for p in range(4)]
    assert {len(s) for s in slices} == {N // 4}
    assert len(set().union(*map(set, slices))) == N


def test_state_resume_exact(tok):
    ds = make(IndexSource(N, holes={5, 6}), tok, batch_size=4, seed=7)
    it = iter(ds)
    for _ in range(5):
        next(it)
    state = it.get_state()
    expected = [next(it) for _ in range(3)]
    it.set_state(state)
    fresh = iter(make(IndexSource(N, holes={5, 6}), tok, batch_size=4, seed=7))
    fresh.set_state(state)
    for resumed in ([next(it) for _ in range(3)], [next(fresh) for _ in range(3)]):
        for got, want in zip(resumed, expected, strict=True):
            np.testing.assert_array_equal(got["colour"], want["colour"])
            np.testing.assert_array_equal(got["video"], want["video"])


def test_orbax_round_trip(tmp_path, source, tok):
    it = iter(make(source, tok, batch_size=4, seed=3))
    for _ in range(3):
        next(it)
    with ocp.CheckpointManager(tmp_path / "ckpt", item_names=("data",)) as mngr:
        mngr.save(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
        mngr.wait_until_finished()
        expected = next(it)
        restored_it = iter(make(source, tok, batch_size=4, seed=3))
        restored = mngr.restore(
            3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(restored_it))
        )
    got = next(restored["data"])
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key])


def test_none_records_dropped_and_counted(tok):
    holes = {0, 7, 8, 30}
    ds = make(IndexSource(N, holes=holes), tok, batch_size=4, num_epochs=1)
    it = iter(ds)
    got = indices(it)
    assert sorted(got) == sorted(set(range(N)) - holes)
    assert skipped_count(it) == len(holes)
    # The count is part of the checkpointable state.
    fresh = iter(ds)
    assert skipped_count(fresh) == 0
    fresh.set_state(it.get_state())
    assert skipped_count(fresh) == len(holes)


def test_bad_record_is_a_clear_error(tok):
    class Bad(IndexSource):
        def __getitem__(self, i):
            return {"video": np.zeros((2, 4, 4), np.float32), "caption": "a"}

    with pytest.raises(ValueError, match=r"uint8 \(t, h, w, 3\)"):
        next(iter(make(Bad(8), tok, batch_size=2)))


def test_worker_processes(tok):
    holes = {3, 20}
    ds = make(IndexSource(N, holes=holes), tok, batch_size=4, num_epochs=1, worker_count=2,
              drop_remainder=False)
    it = iter(ds)
    try:
        got = indices(it)
        assert sorted(got) == sorted(set(range(N)) - holes)
        assert skipped_count(it) == len(holes)  # counted inside the workers, read from state
    finally:
        it.close()
