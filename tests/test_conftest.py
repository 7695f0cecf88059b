"""The test session itself: caches stay out of the user's home, shared fixtures do not leak between tests."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from facepcl._utils.paths import facepcl_home, hf_home
from tests import _samples, conftest


def test_every_cache_lives_under_facepcl_home_or_the_session_temp_dir():
    assert facepcl_home() == conftest.FACEPCL_HOME == Path(os.environ["FACEPCL_HOME"])
    assert facepcl_home().is_relative_to(conftest.TEMP_CACHES)
    assert _samples.samples_dir() == conftest.SAMPLES  # kept across runs: fetched once
    for var in conftest.CACHE_VARIABLES:
        assert Path(os.environ[var]).is_relative_to(conftest.TEMP_CACHES), var
    assert hf_home().is_relative_to(conftest.TEMP_CACHES)
    assert Path(torch.hub.get_dir()).is_relative_to(conftest.TEMP_CACHES)
    user_cache = Path.home() / ".cache"
    assert not conftest.TEMP_CACHES.is_relative_to(user_cache)
    import huggingface_hub.constants as hf

    assert Path(hf.HF_HUB_CACHE).is_relative_to(conftest.TEMP_CACHES)


def test_random_model_is_a_fresh_copy_per_test(random_pcl_model, shared_random_pcl_model):
    assert random_pcl_model is not shared_random_pcl_model
    assert getattr(random_pcl_model, "task_heads", None) is None
    first = next(random_pcl_model.parameters())
    before = next(shared_random_pcl_model.parameters()).clone()
    assert torch.equal(first, before)
    with torch.no_grad():
        first.add_(1.0)
    assert torch.equal(next(shared_random_pcl_model.parameters()), before)  # the shared model did not change
