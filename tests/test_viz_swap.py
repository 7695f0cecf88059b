"""Pose-swap grids: the right codes go into the decoder, the grid shows them, the CLI writes it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import facepcl
from facepcl import PCLConfig, PCLModel
from facepcl.cli import main as cli
from facepcl.errors import ModelLoadError, NoFaceError
from facepcl.viz import decode_pairs, render_swap_grid, swap_faces, swap_grid
from facepcl.viz._swap import COLUMNS, RECONSTRUCTIONS, SwapResult

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "images"
A, B, PAIR = EXAMPLES / "astronaut.jpg", EXAMPLES / "grace_hopper.jpg", EXAMPLES / "pair.jpg"


def _decoder_model() -> PCLModel:
    """A random-weight model whose decoder's output depends visibly on its input.

    Freshly initialised, the decoder's BatchNorm statistics (mean 0, variance 1)
    do not match its activations and the output is nearly the same grey for
    every code. Calibrating the statistics on random codes and centring the
    Tanh output in [0, 1] gives pictures that differ from code to code, so the
    comparisons below can tell one reconstruction from another.
    """
    torch.manual_seed(7)
    model = PCLModel(PCLConfig(components=["encoder", "decoder"], name="random-decoder"))
    with torch.no_grad():
        for module in model.decoder.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.reset_running_stats()
                module.momentum = None  # a plain average over the calibration batch
        model.train()
        model.reconstruct(torch.randn(64, 2048), torch.randn(64, 2048))
        model.decoder.layers[-2].bias.add_(0.5)
    return model.eval()


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    # uint8 pictures decoded in batches of different sizes: float rounding may move a pixel by one level
    return a.shape == b.shape and int(np.abs(a.astype(int) - b.astype(int)).max()) <= 1


@pytest.fixture(scope="module")
def decoder_model() -> PCLModel:
    return _decoder_model()


@pytest.fixture(scope="module")
def decoder_dir(tmp_path_factory, decoder_model) -> Path:
    folder = tmp_path_factory.mktemp("decoder-model")
    decoder_model.save_pretrained(str(folder))
    return folder


def test_decode_pairs_is_the_models_reconstruction_clamped(decoder_model):
    torch.manual_seed(0)
    face, pose = torch.randn(5, 2048), torch.randn(5, 2048)
    got = decode_pairs(decoder_model, face.numpy(), pose.numpy())
    with torch.no_grad():
        ref = decoder_model.reconstruct(face, pose).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    assert got.shape == (5, 64, 64, 3)
    assert got.dtype == np.uint8
    assert np.abs(got.astype(np.float64) - ref * 255).max() <= 0.5 + 1e-3
    assert got.std() > 1
    assert not np.array_equal(got[0], got[1])  # pictures, different for different codes
    # eval-mode BatchNorm: a row does not depend on the rows decoded with it
    assert _close(decode_pairs(decoder_model, face[2:3].numpy(), pose[2:3].numpy())[0], got[2])


def test_decode_pairs_runs_in_eval_mode_and_restores_training(decoder_model):
    decoder_model.train()
    try:
        face, pose = torch.randn(3, 2048), torch.randn(3, 2048)
        single = decode_pairs(decoder_model, face[:1].numpy(), pose[:1].numpy())
        batch = decode_pairs(decoder_model, face.numpy(), pose.numpy())
        assert _close(single[0], batch[0])
        assert decoder_model.training
    finally:
        decoder_model.eval()


@pytest.mark.slow
def test_swap_faces_decodes_every_combination_of_the_embedded_codes(decoder_model):
    swaps = swap_faces(A, B, decoder_model, device="cpu")
    assert swaps.pairs.tolist() == [[0, 0]]
    assert swaps.names == ("astronaut.jpg", "grace_hopper.jpg")
    ra = facepcl.embed(str(A), model=decoder_model, return_crops=True)
    rb = facepcl.embed(str(B), model=decoder_model, return_crops=True)
    assert np.array_equal(swaps.aligned_a[0], ra.crops[0])
    assert np.array_equal(swaps.aligned_b[0], rb.crops[0])
    codes = {"A": (ra.face[:1], ra.pose[:1]), "B": (rb.face[:1], rb.pose[:1])}
    assert swaps.reconstructions.shape == (1, 4, 64, 64, 3)
    for k, (f, p) in enumerate(RECONSTRUCTIONS):
        want = decode_pairs(decoder_model, codes[f][0], codes[p][1])[0]
        assert _close(swaps.reconstructions[0, k], want), (f, p)
    # swapping the pose changes the picture
    assert not np.array_equal(swaps.reconstructions[0, 0], swaps.reconstructions[0, 1])


@pytest.mark.slow
def test_face_choice_gives_one_row_per_pair(decoder_model):
    swaps = swap_faces(PAIR, PAIR, decoder_model, faces_a="all", faces_b=[1], device="cpu")
    assert swaps.pairs.tolist() == [[0, 1], [1, 1]]
    # face 1 of B in both rows; A's faces differ
    assert np.array_equal(swaps.aligned_b[0], swaps.aligned_b[1])
    assert not np.array_equal(swaps.aligned_a[0], swaps.aligned_a[1])
    # the same face as A and B: face A + pose B is that face's own reconstruction
    assert _close(swaps.reconstructions[1, 1], swaps.reconstructions[1, 0])
    with pytest.raises(ValueError, match=r"has 2 faces .* face 2 does not exist"):
        swap_faces(PAIR, A, decoder_model, faces_a=[2], device="cpu")


def test_models_without_decoder_are_refused_with_the_fix(tmp_path, random_model_dir, random_pcl_model):
    with pytest.raises(ModelLoadError, match=r"has no decoder.*components \['encoder'\]"):
        swap_faces(A, B, random_model_dir)
    with pytest.raises(ModelLoadError, match="components=\\['encoder', 'decoder'\\]"):
        swap_faces(A, B, random_pcl_model)


def test_image_without_face_raises(tmp_path, decoder_model):
    flat = tmp_path / "wall.png"
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(flat)
    with pytest.raises(NoFaceError, match=r"wall\.png"):
        swap_faces(flat, A, decoder_model, device="cpu")
    with pytest.raises(NoFaceError, match=r"wall\.png"):  # the detector's options, as facepcl.embed takes them
        swap_faces(flat, A, decoder_model, device="cpu", mode="exact", det_threshold=0.9, max_faces=1)


def test_options_are_the_embedders(decoder_model):
    with pytest.raises(TypeError, match=r"\['crop_size', 'return_crops'\] are set by swap_faces itself"):
        swap_faces(A, B, decoder_model, return_crops=False, crop_size=32)
    with pytest.raises(TypeError, match=r"unknown options \['conf_threshold'\]"):
        swap_faces(A, B, decoder_model, conf_threshold=0.5)


def _fake_swaps(rows: int = 2) -> SwapResult:
    rng = np.random.default_rng(0)
    return SwapResult(pairs=np.array([[i, 0] for i in range(rows)]),
                      aligned_a=rng.integers(0, 256, (rows, 64, 64, 3), dtype=np.uint8),
                      aligned_b=rng.integers(0, 256, (rows, 64, 64, 3), dtype=np.uint8),
                      reconstructions=rng.integers(0, 256, (rows, 4, 64, 64, 3), dtype=np.uint8),
                      names=("a.jpg", "b.jpg"), info={"model_id": "m"})


def test_grid_places_every_tile_at_its_column():
    swaps = _fake_swaps(2)
    img = np.asarray(render_swap_grid(swaps, scale=2, resample="nearest", labels=False))
    tile, gap, block_gap, margin = 128, 4, 16, 8
    assert img.shape == (2 * margin + 2 * tile + gap, 2 * margin + 6 * tile + 4 * gap + block_gap, 3)
    for r in range(2):
        tiles = [swaps.aligned_a[r], swaps.aligned_b[r], *swaps.reconstructions[r]]
        y = margin + r * (tile + gap)
        for k, t in enumerate(tiles):
            x = margin + k * (tile + gap) + (block_gap - gap if k >= 2 else 0)
            assert np.array_equal(img[y:y + tile, x:x + tile], t.repeat(2, 0).repeat(2, 1)), (r, k)


def test_grid_labels_add_titles_above_and_beside():
    plain = render_swap_grid(_fake_swaps(2), labels=False)
    labelled = render_swap_grid(_fake_swaps(2), labels=True)
    assert labelled.width > plain.width
    assert labelled.height > plain.height  # row titles and column titles
    one_row = render_swap_grid(_fake_swaps(1), labels=True)
    assert one_row.width == plain.width  # a single pair needs no row titles
    assert len(COLUMNS) == 6
    with pytest.raises(ValueError, match="scale"):
        render_swap_grid(_fake_swaps(1), scale=0)


@pytest.mark.slow
def test_swap_grid_saves_the_picture(tmp_path, decoder_model):
    out = tmp_path / "sub" / "grid.jpg"
    image = swap_grid(A, B, decoder_model, output=str(out), scale=2, device="cpu")
    assert out.is_file()
    assert Image.open(out).size == image.size
    with pytest.raises(ValueError, match="extension"):
        swap_grid(A, B, decoder_model, output=str(tmp_path / "grid.xyz"), device="cpu")


@pytest.mark.slow
def test_cli_swap_writes_the_grid(tmp_path, decoder_dir, capsys):
    out = tmp_path / "grid.png"
    code = cli(["swap", str(A), str(B), "-o", str(out), "--model", str(decoder_dir), "--device", "cpu",
                "--scale", "2"])
    assert code == 0
    shown = np.asarray(Image.open(out).convert("RGB"))
    swaps = swap_faces(A, B, str(decoder_dir), device="cpu")
    assert np.array_equal(shown, np.asarray(swaps.grid(scale=2)))
    assert "1 pair of faces" in capsys.readouterr().out


def test_cli_swap_errors_are_clear(tmp_path, random_model_dir, capsys):
    code = cli(["swap", str(A), str(B), "-o", str(tmp_path / "g.png"), "--model", str(random_model_dir)])
    assert code == 1
    assert "has no decoder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cli(["swap", str(A), str(B), "-o", "g.png", "--faces-a", "x"])
    assert e.value.code == 2
