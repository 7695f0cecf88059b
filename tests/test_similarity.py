"""facepcl.similarity: cosine matrices from EmbeddingResults, arrays and tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import facepcl


def _result(rows: np.ndarray) -> facepcl.EmbeddingResult:
    n = len(rows)
    return facepcl.EmbeddingResult(face=rows.astype(np.float32), pose=-rows.astype(np.float32),
                                   trunk=np.ones_like(rows, np.float32), bbox=np.zeros((n, 4), np.float32),
                                   kps=np.zeros((n, 5, 2), np.float32), det_score=np.ones(n, np.float32),
                                   image_index=np.arange(n), num_images=n)


def test_matrix_of_arrays_matches_the_definition():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(3, 8)), rng.normal(size=(5, 8))
    sim = facepcl.similarity(a, b)
    want = (a @ b.T) / np.linalg.norm(a, axis=1)[:, None] / np.linalg.norm(b, axis=1)[None]
    assert sim.shape == (3, 5)
    assert sim.dtype == np.float32
    np.testing.assert_allclose(sim, want, atol=1e-6)
    assert facepcl.similarity(a[0], a[0]).shape == (1, 1)
    assert facepcl.similarity(a[0], 3 * a[0])[0, 0] == 1.0


def test_embedding_results_use_the_chosen_feature():
    rows = np.array([[1.0, 0.0], [0.0, 2.0]])
    a, b = _result(rows), _result(rows[::-1].copy())
    np.testing.assert_allclose(facepcl.similarity(a, b), [[0, 1], [1, 0]], atol=1e-7)
    np.testing.assert_allclose(facepcl.similarity(a, rows, feature="pose"), [[-1, 0], [0, -1]], atol=1e-7)
    np.testing.assert_allclose(facepcl.similarity(a, b, feature="trunk"), np.ones((2, 2)), atol=1e-7)
    with pytest.raises(ValueError, match="feature must be one of"):
        facepcl.similarity(a, b, feature="identity")


def test_tensors_stay_tensors_and_zero_vectors_score_zero():
    a = torch.tensor([[3.0, 4.0], [0.0, 0.0]], dtype=torch.float64)
    b = torch.tensor([[4.0, 3.0]])
    sim = facepcl.similarity(a, b)
    assert isinstance(sim, torch.Tensor)
    assert sim.shape == (2, 1)
    torch.testing.assert_close(sim, torch.tensor([[24 / 25], [0.0]]))
    mixed = facepcl.similarity(a, b.numpy())
    assert isinstance(mixed, np.ndarray)
    assert np.allclose(mixed, [[24 / 25], [0.0]])


def test_width_mismatch_and_bad_inputs_are_named():
    with pytest.raises(ValueError, match="8-d embeddings but b has 4-d"):
        facepcl.similarity(np.ones((2, 8)), np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        facepcl.similarity(np.ones((2, 2, 2)), np.ones((2, 2)))
    with pytest.raises(TypeError, match="EmbeddingResult"):
        facepcl.similarity("photo.jpg", np.ones((1, 2)))
