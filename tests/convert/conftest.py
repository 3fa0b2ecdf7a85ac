"""Shared by the converter tests: a copy of a saved diffusers folder with edits."""

import json

import pytest
import safetensors.numpy

WEIGHTS = "diffusion_pytorch_model.safetensors"


@pytest.fixture
def edited_copy(tmp_path):
    """``make(saved, edit_weights=None, edit_config=None)``: ``saved`` (a ``save_pretrained``
    folder) copied to ``tmp_path`` with ``edit_config(config)`` / ``edit_weights(weights)``
    applied in place; returns the copy's path."""
    def make(saved, edit_weights=None, edit_config=None):
        config = json.loads((saved / "config.json").read_text())
        weights = dict(safetensors.numpy.load_file(saved / WEIGHTS))
        if edit_config:
            edit_config(config)
        if edit_weights:
            edit_weights(weights)
        (tmp_path / "config.json").write_text(json.dumps(config))
        safetensors.numpy.save_file(weights, tmp_path / WEIGHTS)
        return tmp_path

    return make
