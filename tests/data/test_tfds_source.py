"""TfdsVideoSource over a tiny ArrayRecord TFDS dataset built offline here, without TensorFlow."""

import io
import sys

import numpy as np
import pytest
from PIL import Image

from vdm_jax.data.tfds_source import TfdsVideoSource, import_tfds

tfds = pytest.importorskip("tensorflow_datasets")

T, H, W = 6, 12, 16
NUM_EXAMPLES = 4
CLASSES = ["running", "jumping"]
NAME = "vdm_tiny_videos"


def level(example: int, frame: int) -> int:
    """Grey level of frame `frame` of example `example`: identifies both after shuffling."""
    return 10 + 20 * frame + example


def png(frame: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG")
    return buffer.getvalue()


class VdmTinyVideos(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Grayscale tensor videos, PNG-encoded RGB frame sequences (odd examples have only 3
    frames), class labels and text."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        # DatasetInfo directly: `dataset_info_from_configs` looks for metadata files next to
        # the builder's module, which a class defined in a test does not have.
        features = tfds.features.FeaturesDict({
            "video": tfds.features.Tensor(shape=(T, H, W, 1), dtype=np.uint8),
            "frames": tfds.features.Sequence(tfds.features.Image(shape=(H, W, 3))),
            "label": tfds.features.ClassLabel(names=CLASSES),
            "text": tfds.features.Text(),
        })
        return tfds.core.DatasetInfo(builder=self, features=features)

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for i in range(NUM_EXAMPLES):
            levels = np.array([level(i, k) for k in range(T)], np.uint8)
            video = np.broadcast_to(levels[:, None, None, None], (T, H, W, 1))
            frames = np.repeat(video, 3, axis=-1)[: T if i % 2 == 0 else 3]
            yield i, {
                "video": video,
                "frames": [png(f) for f in frames],
                "label": i % 2,
                "text": f"clip number {i}",
            }


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    VdmTinyVideos(data_dir=str(data_dir), file_format="array_record").download_and_prepare()
    return data_dir


def make(data_dir, **kwargs):
    kwargs = {"num_frames": 3, "resolution": 8, "data_dir": data_dir, **kwargs}
    return TfdsVideoSource(NAME, **kwargs)


def test_reads_grayscale_tensor_clips_with_label_captions(data_dir):
    src = make(data_dir, frame_stride=2, label_key="label", caption_template="a video of {}")
    assert len(src) == NUM_EXAMPLES
    seen = set()
    for index in range(len(src)):
        record = src[index]
        assert record["video"].shape == (3, 8, 8, 3) and record["video"].dtype == np.uint8
        means = record["video"].reshape(3, -1).mean(axis=1)
        example = int(round(means[0])) - 10  # clip starts at frame 0
        np.testing.assert_allclose(means, [level(example, k) for k in (0, 2, 4)], atol=0.5)
        assert record["caption"] == f"a video of {CLASSES[example % 2]}"
        seen.add(example)
    assert seen == set(range(NUM_EXAMPLES))
    assert src.captions() == ["a video of running", "a video of jumping"]
    assert "tensorflow" not in sys.modules


def test_clips_per_example_and_text_captions(data_dir):
    src = make(data_dir, clips_per_example=2, caption_key="text")
    assert len(src) == 2 * NUM_EXAMPLES
    first, last = src[0], src[1]  # same example: starts 0 and T - 3
    example = int(round(first["video"][0].mean())) - 10
    assert first["caption"] == last["caption"] == f"clip number {example}"
    starts = [int(round(r["video"][0].mean())) - example - 10 for r in (first, last)]
    assert starts == [0, 20 * (T - 3)]


def test_png_frame_sequences_and_short_examples(data_dir):
    src = make(data_dir, video_key="frames", caption_key="text", clip_sampling="random")
    for i in range(len(src)):  # 3-frame examples are just long enough; random is by index
        record = src[i]
        assert record["video"].shape == (3, 8, 8, 3)
        np.testing.assert_array_equal(record["video"], src[i]["video"])
    assert src.num_too_short == 0
    longer = make(data_dir, num_frames=4, video_key="frames", caption_key="text")
    records = [longer[i] for i in range(len(longer))]
    assert sum(r is None for r in records) == 2 and longer.num_too_short == 2
    for r in records:
        if r is not None:
            example = int(r["caption"].split()[-1])
            assert example % 2 == 0
            means = r["video"].reshape(4, -1).mean(axis=1)
            np.testing.assert_allclose(means, [level(example, k) for k in range(4)], atol=0.5)


def test_clear_errors(data_dir, monkeypatch):
    with pytest.raises(ValueError, match="no feature 'clip'; available"):
        make(data_dir, video_key="clip")
    with pytest.raises(ValueError, match="has 6 frames per example"):
        make(data_dir, num_frames=4, frame_stride=2)
    with pytest.raises(IndexError):
        make(data_dir)[NUM_EXAMPLES]
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    with pytest.raises(ImportError, match="pip install tensorflow-datasets"):
        import_tfds()
