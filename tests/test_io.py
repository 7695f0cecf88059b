"""The one image loader: every input kind, mode and dtype, EXIF orientation, and every kind of bad input."""

from __future__ import annotations

import io
import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import facepcl
import facepcl.io.images
from facepcl import ImageLoadError
from facepcl.errors import MultiFrameWarning
from facepcl.io import describe, load_image
from tests.conftest import bomb_png, jpeg_bytes


def _pattern(h: int = 24, w: int = 32) -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


# -- arrays and tensors ---------------------------------------------------------------------------------------


def test_uint8_rgb_array_is_returned_unchanged():
    a = _pattern()
    out = load_image(a)
    assert out.dtype == np.uint8
    assert out.shape == (24, 32, 3)
    assert out.flags.c_contiguous
    np.testing.assert_array_equal(out, a)


def test_bgr_option_reverses_channels_for_arrays_and_tensors():
    a = _pattern()
    bgr = np.ascontiguousarray(a[..., ::-1])
    np.testing.assert_array_equal(load_image(bgr, color_order="BGR"), a)
    np.testing.assert_array_equal(load_image(torch.from_numpy(bgr).permute(2, 0, 1), color_order="bgr"), a)
    # without the option the channels are taken as RGB
    np.testing.assert_array_equal(load_image(bgr), bgr)
    with pytest.raises(ValueError, match="color_order"):
        load_image(a, color_order="HSV")


def test_grayscale_arrays_are_repeated_into_three_channels():
    g = _pattern()[..., 0]
    for arr in (g, g[..., None]):
        out = load_image(arr)
        assert out.shape == (24, 32, 3)
        for c in range(3):
            np.testing.assert_array_equal(out[..., c], g)


def test_uint16_and_float_are_scaled_to_uint8():
    a = _pattern()
    np.testing.assert_array_equal(load_image(a.astype(np.uint16) * 257), a)
    np.testing.assert_array_equal(load_image(a.astype(np.float32) / 255.0), a)
    np.testing.assert_array_equal(load_image(a.astype(np.float64) / 255.0), a)
    assert np.abs(load_image(a.astype(np.float16) / np.float16(255)).astype(int) - a).max() <= 1
    assert load_image(np.full((2, 2), 65535, np.uint16)).max() == 255


def test_float_outside_unit_range_and_nan_are_refused():
    with pytest.raises(ImageLoadError, match=r"\[0, 1\].*divide by 255"):
        load_image(np.full((8, 8, 3), 200.0, np.float32))
    bad = np.zeros((8, 8, 3), np.float32)
    bad[0, 0, 0] = np.nan
    with pytest.raises(ImageLoadError, match="NaN"):
        load_image(bad)


def test_unsupported_dtype_channels_and_ndim_are_refused():
    with pytest.raises(ImageLoadError, match="dtype int64"):
        load_image(np.zeros((8, 8, 3), np.int64))
    with pytest.raises(ImageLoadError, match="channels 2"):
        load_image(np.zeros((8, 8, 2), np.uint8))
    with pytest.raises(ImageLoadError, match="5 dimensions"):
        load_image(np.zeros((1, 1, 8, 8, 3), np.uint8))
    with pytest.raises(ImageLoadError, match="not an image input"):
        load_image(12345)


def test_zero_size_arrays_are_refused_naming_the_input():
    for shape in [(0, 10, 3), (10, 0), (0, 0, 3)]:
        with pytest.raises(ImageLoadError, match=r"zero-size image.*") as info:
            load_image(np.zeros(shape, np.uint8))
        assert f"shape={shape}" in str(info.value)


def test_rgba_arrays_are_composited_over_black():
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., :3] = [200, 100, 50]
    rgba[0, :, 3] = 255
    rgba[1, 0, 3] = 0
    rgba[1, 1, 3] = 128
    rgba[1, 2, 3] = 255
    out = load_image(rgba)
    np.testing.assert_array_equal(out[0, 0], [200, 100, 50])
    np.testing.assert_array_equal(out[1, 0], [0, 0, 0])
    np.testing.assert_array_equal(out[1, 1], np.rint(np.array([200, 100, 50]) * 128 / 255))
    # BGRA with the BGR option
    np.testing.assert_array_equal(load_image(rgba[..., [2, 1, 0, 3]], color_order="BGR"), out)


def test_tensors_chw_uint8_and_float():
    a = _pattern()
    t = torch.from_numpy(a).permute(2, 0, 1)
    np.testing.assert_array_equal(load_image(t), a)
    np.testing.assert_array_equal(load_image(t.float() / 255), a)
    assert np.abs(load_image((t.float() / 255).to(torch.bfloat16)).astype(int) - a).max() <= 2
    np.testing.assert_array_equal(load_image(t[:1]), np.repeat(a[..., :1], 3, axis=2))
    np.testing.assert_array_equal(load_image(t[0]), np.repeat(a[..., :1], 3, axis=2))
    with pytest.raises(ImageLoadError, match="C x H x W"):
        load_image(torch.from_numpy(a[:, :, :2].copy()).permute(0, 1, 2))  # H x W x 2 is not C x H x W


# -- PIL images and files ------------------------------------------------------------------------------------


def test_pil_modes(tmp_path):
    a = _pattern()
    rgb = Image.fromarray(a)
    np.testing.assert_array_equal(load_image(rgb), a)
    np.testing.assert_array_equal(load_image(rgb.convert("L"))[..., 1], np.asarray(rgb.convert("L")))
    la = load_image(rgb.convert("LA"))
    np.testing.assert_array_equal(la[..., 0], np.asarray(rgb.convert("L")))  # opaque alpha: unchanged
    np.testing.assert_array_equal(load_image(rgb.convert("1"))[..., 0], np.asarray(rgb.convert("1")) * 255)
    cmyk = load_image(rgb.convert("CMYK"))
    assert cmyk.shape == a.shape
    assert np.abs(cmyk.astype(int) - a).max() <= 2
    # a palette image with a transparent entry: transparent pixels become black
    p = Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8), mode="P")
    p.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    p.info["transparency"] = 1
    out = load_image(_png_bytes(p))
    np.testing.assert_array_equal(out[0, 0], [255, 0, 0])
    np.testing.assert_array_equal(out[0, 1], [0, 0, 0])


def test_sixteen_bit_png_file(tmp_path):
    g = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)
    path = tmp_path / "gray16.png"
    Image.fromarray(g).save(path)
    assert Image.open(path).mode.startswith("I")
    out = load_image(path)
    np.testing.assert_array_equal(out[..., 2], np.rint(g / 257.0).astype(np.uint8))


def test_path_str_bytes_bytearray_memoryview_agree(tmp_path):
    a = _pattern(40, 50)
    path = tmp_path / "x.png"
    Image.fromarray(a).save(path)
    data = path.read_bytes()
    for src in (path, str(path), data, bytearray(data), memoryview(data)):
        np.testing.assert_array_equal(load_image(src), a)


def test_exif_orientation_is_applied(tmp_path):
    # Stored 40 wide x 20 high with a red left half; orientation 6 means "rotate 90 degrees clockwise to view".
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :20] = [255, 0, 0]
    stored[:, 20:] = [0, 0, 255]
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    path.write_bytes(jpeg_bytes(stored, exif=exif.tobytes()))
    for src in (path, path.read_bytes(), Image.open(path)):
        out = load_image(src)
        assert out.shape == (40, 20, 3)  # upright: 20 wide, 40 high
        assert out[:15, :, 0].mean() > 200
        assert out[:15, :, 2].mean() < 50  # the red half is now on top
        assert out[25:, :, 2].mean() > 200
    # without the tag nothing turns
    plain = tmp_path / "plain.jpg"
    plain.write_bytes(jpeg_bytes(stored))
    assert load_image(plain).shape == (20, 40, 3)


def test_real_photo_modes(photo_paths):
    gray = load_image(photo_paths["BWPictureHuman.jpg"])
    assert Image.open(photo_paths["BWPictureHuman.jpg"]).mode == "L"
    assert gray.shape == (1912, 2560, 3)
    np.testing.assert_array_equal(gray[..., 0], gray[..., 2])
    rgba_src = Image.open(photo_paths["Image_with_alpha.png"])
    assert rgba_src.mode == "RGBA"
    rgba = np.asarray(rgba_src)
    out = load_image(photo_paths["Image_with_alpha.png"])
    assert out.shape == (*rgba.shape[:2], 3)
    transparent = rgba[..., 3] == 0
    if transparent.any():
        assert out[transparent].max() == 0


# -- bad input -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind, message", [
    ("corrupt", "corrupt or truncated"),
    ("truncated", "corrupt or truncated"),
    ("empty", "empty file"),
    ("not_an_image", "not a recognised image format"),
    ("unsupported_mode", "unsupported image mode 'F'"),
    ("bomb", "decompression bomb"),
])
def test_bad_files_raise_a_clear_error_naming_the_file(bad_files, kind, message):
    path = bad_files[kind]
    with pytest.raises(ImageLoadError, match=message) as info:
        load_image(path)
    assert str(path) in str(info.value)
    with pytest.raises(ImageLoadError, match=message):  # the same bytes in memory
        load_image(Path(path).read_bytes())


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ImageLoadError, match="no such file") as info:
        load_image(tmp_path / "nope.jpg")
    assert "nope.jpg" in str(info.value)
    with pytest.raises(ImageLoadError, match="folder"):
        load_image(tmp_path)


def test_decompression_limit_is_pillows_and_can_be_raised(monkeypatch, tmp_path):
    path = tmp_path / "big.png"
    Image.fromarray(_pattern(100, 100)).save(path)
    # Between the limit and twice the limit Pillow only warns; facepcl refuses.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 6000)
    with pytest.raises(ImageLoadError, match=r"10,?000 pixels.*MAX_IMAGE_PIXELS = 6,000"):
        load_image(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20000)
    assert load_image(path).shape == (100, 100, 3)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    assert load_image(path).shape == (100, 100, 3)
    # a real bomb header is refused before anything is decoded, even with a generous limit
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10**8)
    with pytest.raises(ImageLoadError, match="too large"):
        load_image(bomb_png())


def test_describe_names_inputs():
    assert describe("/a/b.jpg") == "/a/b.jpg"
    assert describe(b"abc") == "<bytes of 3 bytes>"
    assert describe(np.zeros((4, 5, 3), np.uint8)) == "<numpy.ndarray shape=(4, 5, 3) dtype=uint8>"
    assert "torch.Tensor shape=(3, 4, 5)" in describe(torch.zeros(3, 4, 5))
    assert "PIL.Image mode=RGB size=5x4" in describe(Image.new("RGB", (5, 4)))


def test_loader_is_thread_safe(photo_paths):
    paths = [photo_paths["single_face.jpg"], photo_paths["astronaut.png"]] * 4
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(load_image, paths))
    for p, r in zip(paths, results, strict=True):
        np.testing.assert_array_equal(r, load_image(p))


# -- special files, size cap, multi-frame files, and per-input failures in lists ------------------------------


def _load_in_thread(path) -> BaseException | np.ndarray | None:
    """load_image(path) in a thread: a regression that blocks (a FIFO) fails the test instead of hanging it."""
    result: list = [None]

    def run():
        try:
            result[0] = load_image(path)
        except BaseException as e:  # handed back to the test
            result[0] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(60)
    assert not t.is_alive(), f"load_image({path}) blocked"
    return result[0]


@pytest.mark.skipif(not hasattr(os, "mkfifo") or not os.path.exists("/dev/zero"), reason="POSIX special files")
def test_devices_and_fifos_are_refused_by_type_before_reading(tmp_path):
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    for path, kind in ((fifo, "FIFO"), ("/dev/zero", "character device")):
        error = _load_in_thread(path)
        assert isinstance(error, ImageLoadError)
        assert kind in str(error)
        assert str(path) in str(error)


def test_file_size_cap_is_checked_before_reading(monkeypatch, tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray(_pattern()).save(path)
    size = path.stat().st_size
    monkeypatch.setattr(facepcl.io.images, "MAX_FILE_BYTES", size - 1)
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail("the whole file was read"))
    with pytest.raises(ImageLoadError, match=rf"photo.png: file too large \({size:,} bytes; limit "
                                             r"facepcl.io.images.MAX_FILE_BYTES"):
        load_image(path)
    monkeypatch.setattr(facepcl.io.images, "MAX_FILE_BYTES", size)
    assert load_image(path).shape == (24, 32, 3)
    monkeypatch.setattr(facepcl.io.images, "MAX_FILE_BYTES", None)
    assert load_image(path).shape == (24, 32, 3)


def test_over_long_names_and_nul_characters_are_image_load_errors(tmp_path):
    for path in (tmp_path / ("x" * 300 + ".jpg"), "bad\0name.jpg"):
        with pytest.raises(ImageLoadError):
            load_image(path)


def test_animated_gif_uses_the_first_frame_and_says_so(tmp_path):
    frames = [Image.new("RGB", (8, 8), c) for c in ("red", "blue", "green")]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    with pytest.warns(MultiFrameWarning, match="anim.gif: GIF file holds several frames.*first frame is used"):
        image = load_image(path)
    assert tuple(image[0, 0]) == (255, 0, 0)
    still = tmp_path / "still.gif"
    frames[0].save(still)
    with warnings.catch_warnings():
        warnings.simplefilter("error", MultiFrameWarning)
        load_image(still)


def test_a_list_records_every_input_failure_and_keeps_the_rest(random_pcl_model, tmp_path):
    good = _pattern(64, 64)
    path = tmp_path / "good.png"
    Image.fromarray(good).save(path)
    inputs = [good, tmp_path / ("x" * 300 + ".png"), torch.zeros(3, 64, 64).to_sparse(),
              torch.zeros(3, 64, 64, device="meta"), path]
    embedder = facepcl.FaceEmbedder(random_pcl_model, detect=False, device="cpu")
    result = embedder.embed(inputs)
    assert [f.index for f in result.failures] == [1, 2, 3]
    assert result.num_images == 5
    assert len(result.image_index) == 2
    assert "x" * 300 in result.failures[0].input
    assert "sparse" in result.failures[1].reason.lower()
    with pytest.raises(ImageLoadError):
        embedder.embed(inputs[2])
