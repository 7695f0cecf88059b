"""Every input bounded, every unclear error one clear line: URLs, config sizes, config files, templates, huge images."""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import facepcl
from facepcl.cli import main
from facepcl.config import PCLConfig, check_crop_size
from facepcl.errors import ModelLoadError
from facepcl.io import images

URL_CASES = [
    ["embed", "img.jpg", "-o", "out", "--detector-weights", "s3://bucket/det.pth"],
    ["index", "export", "-o", "gs://bucket/index"],
    ["index", "gs://bucket/export", "-o", "index"],
    ["search", "gs://bucket/index", "q.jpg"],
    ["search", "index", "https://example.com/q.jpg"],
    ["prepare", "s3://bucket/videos", "-o", "frames"],
    ["prepare", "videos", "-o", "s3://bucket/frames"],
    ["convert", "s3://bucket/best.pth", "out"],
    ["convert", "best.pth", "gs://bucket/model"],
    ["plot", "export", "-o", "s3://bucket/map.png"],
    ["plot", "s3://bucket/export", "-o", "map.png"],
    ["swap", "a.jpg", "https://example.com/b.jpg", "-o", "grid.png"],
    ["swap", "a.jpg", "b.jpg", "-o", "s3://bucket/grid.png"],
    ["onnx", "pcl-demo", "-o", "gs://bucket/onnx"],
    ["demo", "--index", "s3://bucket/index"],
    ["finetune", "--dataset", "rafdb", "--data", "s3://bucket/RAF-DB", "--task", "fer"],
    ["finetune", "--dataset", "rafdb", "--data", "raf", "--task", "fer", "-o", "gs://bucket/model"],
    ["evaluate", "--dataset", "rafdb", "--data", "s3://bucket/RAF-DB"],
]


@pytest.mark.parametrize("argv", URL_CASES, ids=[" ".join(a) for a in URL_CASES])
def test_cli_refuses_urls_before_touching_anything(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"facepcl {argv[0]}: error: ")
    assert "local files only" in err and "`facepcl embed` INPUT and -o" in err
    assert "copy the data to a local folder" in err
    assert len(err.splitlines()) == 1
    assert "Traceback" not in err
    assert os.listdir(tmp_path) == []  # no local folder named "s3:" or "gs:"


def test_refuse_url_accepts_local_paths():
    from facepcl._utils.paths import refuse_url

    refuse_url(["a/b.jpg", "./s3/x", "C:\\data\\x.jpg", "/abs/path", "weird:name"], "INPUT")
    refuse_url(None, "-o")
    with pytest.raises(ValueError, match=r"-o 's3://b/x'.*s3://"):
        refuse_url("s3://b/x", "-o")


# -- config sizes, config files and templates --------------------------------------------------------------------

@pytest.fixture()
def folder(random_model_dir, tmp_path):
    """A writable copy of the random test model."""
    out = tmp_path / "model"
    shutil.copytree(random_model_dir, out)
    return out


def _edit_config(folder, **fields) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    for key, value in fields.items():
        (cfg if key in cfg else cfg["preprocess"])[key] = value
    (folder / "config.json").write_text(json.dumps(cfg))


@pytest.fixture()
def no_network(monkeypatch):
    """Building a network (on a real device) fails the test: the checks must come first."""
    from facepcl.model import PCLModel

    def boom(self, *a, **k):
        raise AssertionError("the network was built before the config was checked")

    monkeypatch.setattr(PCLModel, "__init__", boom)


@pytest.mark.parametrize("field, value, match", [
    ("crop_size", 20000, r"preprocess.crop_size must be at most 1,024 pixels, got 20,000"),
    ("decoder_dim", 1_000_000, r"decoder_dim must be at most 65,536, got 1,000,000"),
    ("projection_dim", 10**9, r"projection_dim must be at most 65,536"),
    ("input_size", 4096, r"input_size must be at most 1,024 pixels"),
    ("max_size", 10**6, None),
])
def test_config_sizes_are_bounded_before_anything_is_built(folder, no_network, field, value, match) -> None:
    if field == "max_size":
        cfg = json.loads((folder / "config.json").read_text())
        cfg["detector"]["max_size"] = value
        (folder / "config.json").write_text(json.dumps(cfg))
        match = r"detector.max_size must be at most 8,192 pixels"
    else:
        _edit_config(folder, **{field: value})
    with pytest.raises(ModelLoadError, match=match) as info:
        facepcl.load(folder, device="cpu")
    assert "config.json" in str(info.value)
    assert "\n" not in str(info.value)


def test_a_network_too_large_for_its_config_is_refused_by_its_parameter_count() -> None:
    with pytest.raises(ValueError, match=r"the decoder .* would have [\d,]+ parameters .* over the limit"):
        PCLConfig(components=["encoder", "decoder"], decoder_dim=60000)
    with pytest.raises(ValueError, match=r"the face_head .* parameters"):
        PCLConfig(components=["encoder", "face_head", "pose_head"], input_size=1024, projection_hidden_dim=4096)
    PCLConfig(components=["encoder"], input_size=1024, projection_hidden_dim=4096)  # no heads: nothing to build


def test_crop_size_option_is_bounded() -> None:
    assert check_crop_size(1024) == 1024
    with pytest.raises(ValueError, match="crop_size must be at most 1,024 pixels, got 20,000"):
        check_crop_size(20000)


def test_weights_shaped_unlike_the_config_are_refused_before_they_are_read(folder, monkeypatch) -> None:
    state = load_file(folder / "model.safetensors")
    name = next(k for k in state if k.endswith("weight") and state[k].ndim == 4)
    state[name] = torch.zeros(3, *state[name].shape[1:])
    save_file(state, folder / "model.safetensors")
    read = []
    import facepcl.hub as hub

    monkeypatch.setattr(hub, "check_weights", lambda s, p: read.append(p))
    with pytest.raises(ModelLoadError, match=rf"mis-shaped keys: {name}: file \(3, "):
        facepcl.load(folder, device="cpu")
    assert read == []  # refused from the file's header, before its tensors were read and checked


def _head_folder(tmp_path, **edit):
    from facepcl.heads import HeadSpec, TaskHead, save_head

    spec = HeadSpec(name="fer", task="classification", features=["trunk"], input_size=32, in_dim=512, out_dim=3)
    folder = save_head(TaskHead(spec), tmp_path)
    path = folder / "head.json"
    data = json.loads(path.read_text())
    data.update(edit)
    path.write_text(json.dumps(data))
    return folder


@pytest.mark.parametrize("edit, match", [
    ({"out_dim": 3_000_000}, r"head 'fer': out_dim must be at most 65,536, got 3,000,000"),
    ({"kind": "mlp", "hidden_dims": [65536, 65536, 65536]}, r"head 'fer': the mlp network .* parameters"),
    ({"in_dim": 10**9}, r"head 'fer': in_dim must be at most"),
    ({"input_size": 20000}, r"head 'fer': input_size must be at most 1,024 pixels"),
    ({"hidden_dims": ["wide"]}, r"hidden_dims\[0\] must be a positive integer"),
])
def test_head_sizes_are_bounded_before_the_head_is_built(tmp_path, monkeypatch, edit, match) -> None:
    from facepcl.heads import _spec, load_head

    folder = _head_folder(tmp_path, **edit)
    monkeypatch.setattr(_spec, "build_head", lambda *a, **k: pytest.fail("built before the check"))
    with pytest.raises(ModelLoadError, match=match) as info:
        load_head(folder)
    assert "head.json" in str(info.value)


@pytest.mark.parametrize("content, match", [
    (b"[" * 100_000 + b"]" * 100_000, "JSON nested too deeply"),
    (b'{"name": "caf\xe9"}', r"not UTF-8 text \(byte 0xe9 at offset 13\)"),
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "holds a JSON list, not an object"),
])
def test_unreadable_config_and_head_files_give_one_line_naming_the_file(folder, tmp_path, content, match) -> None:
    from facepcl.heads import load_head

    (folder / "config.json").write_bytes(content)
    with pytest.raises(ModelLoadError, match=match) as info:
        facepcl.load(folder, device="cpu")
    message = str(info.value)
    assert message.startswith(str(folder / "config.json"))
    assert "\n" not in message
    head = _head_folder(tmp_path)
    (head / "head.json").write_bytes(content)
    with pytest.raises(ModelLoadError, match=match) as info:
        load_head(head)
    assert str(info.value).startswith(str(head / "head.json"))
    assert "\n" not in str(info.value)


def test_oversized_config_file_is_refused_unread(folder, monkeypatch) -> None:
    from facepcl._utils import validate

    monkeypatch.setattr(validate, "MAX_JSON_BYTES", 100)
    with pytest.raises(ModelLoadError, match=r"config.json: cannot read the model config: the file has [\d,]+ bytes"):
        facepcl.load(folder, device="cpu")


@pytest.mark.parametrize("template, match", [
    ([[20.0, 20.0]] * 5, "all 5 points are the same point"),
    ([[10.0, 10.0], [20.0, 20.0], [30.0, 30.0], [40.0, 40.0], [50.0, 50.0]], "lie on one line"),
    ([[10.0, 23.0], [20.0, 23.0], [30.0, 23.0], [40.0, 23.0], [50.0, 23.0]], "lie on one line"),
])
def test_degenerate_templates_are_refused_at_load(folder, template, match) -> None:
    _edit_config(folder, template=template)
    with pytest.raises(ModelLoadError, match=f"preprocess.template: .*{match}") as info:
        facepcl.load(folder, device="cpu")
    assert "config.json" in str(info.value)


# -- huge images: reduced-scale decoding, coordinates in the file's pixels ----------------------------------------

def _marked_jpeg(orientation: int = 1, size=(301, 203)) -> bytes:
    """A grey JPEG with a white 10 px square at x 200-210, y 50-60 (stored pixels) and an EXIF orientation."""
    arr = np.full((size[1], size[0], 3), 128, np.uint8)
    arr[50:60, 200:210] = 255
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif, quality=95)
    return buf.getvalue()


def _centre(image: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(image[..., 0] > 200)
    return np.array([xs.mean() + 0.5, ys.mean() + 0.5])  # pixel-edge coordinates


@pytest.mark.parametrize("orientation", range(1, 9))
def test_reduced_decoding_maps_back_to_the_files_pixels(orientation, monkeypatch) -> None:
    monkeypatch.setattr(images, "REDUCE_ABOVE_PIXELS", 50_000)
    data = _marked_jpeg(orientation)
    full = images.load_image(data)
    reduced = images.load_image(data, min_side=60)
    assert isinstance(reduced, images.ReducedImage)
    assert reduced.scale == 4
    assert reduced.original_size == (full.shape[1], full.shape[0])
    assert max(reduced.shape[:2]) >= 60
    assert max(reduced.shape[:2]) < 2 * 60  # the smallest scale that keeps 60 px
    box, kps = images.to_original(reduced, np.array([[0, 0, reduced.shape[1], reduced.shape[0]]], np.float32),
                                  _centre(reduced)[None, None])
    np.testing.assert_allclose(kps[0, 0], _centre(full), atol=1.0)  # one pixel: the marker's quantisation
    assert -4 < box[0, 0] <= 0
    assert -4 < box[0, 1] <= 0  # the whole decoded image covers the file's image
    _, back_kps = images.to_decoded(reduced, box, kps)
    np.testing.assert_allclose(back_kps[0, 0], _centre(reduced), atol=1e-4)
    copy = pickle.loads(pickle.dumps(reduced))  # worker processes keep the mapping
    assert (copy.scale, copy.origin, copy.original_size) == (reduced.scale, reduced.origin, reduced.original_size)


def test_ordinary_images_decode_exactly_as_before(monkeypatch, tmp_path) -> None:
    data = _marked_jpeg()
    plain = images.load_image(data, min_side=60)  # 61,103 pixels: far below the default threshold
    assert type(plain) is np.ndarray
    np.testing.assert_array_equal(plain, images.load_image(data))
    monkeypatch.setattr(images, "REDUCE_ABOVE_PIXELS", 50_000)
    png = io.BytesIO()
    Image.fromarray(plain).save(png, "PNG")
    assert type(images.load_image(png.getvalue(), min_side=60)) is np.ndarray  # only JPEGs have DCT scaling
    assert type(images.load_image(data, min_side=200)) is np.ndarray  # a reduction would go below min_side
    monkeypatch.setattr(images, "REDUCE_ABOVE_PIXELS", None)
    assert type(images.load_image(data, min_side=60)) is np.ndarray


def test_min_decode_side_keeps_what_detection_and_alignment_need() -> None:
    assert images.min_decode_side(640, 64) == 2560
    assert images.min_decode_side(640, 256) == 10240
    assert images.min_decode_side(100, 16) == 200  # at least twice the detector's side
    assert images.min_decode_side(None, 64) == 256


@pytest.fixture(scope="module")
def huge_face_jpeg(tmp_path_factory):
    """A real photo enlarged 4x into a JPEG of 2048 x 2048 pixels (huge for a detector working at 128 px)."""
    from tests import _samples

    photo = Image.open(_samples.astronaut()).convert("RGB")
    big = photo.resize((photo.width * 4, photo.height * 4), Image.BICUBIC)
    path = tmp_path_factory.mktemp("huge") / "huge.jpg"
    big.save(path, quality=92)
    return path


def test_embedding_a_huge_jpeg_reports_the_files_pixels(huge_face_jpeg, random_pcl_model, monkeypatch) -> None:
    from facepcl.detection import FaceDetector
    from facepcl.pipeline import FaceEmbedder

    emb = FaceEmbedder(random_pcl_model, detector=FaceDetector(device="cpu", max_size=128), mode="exact",
                       num_workers=0)
    assert emb.decode_min_side == 512  # 128 * 64 / 16
    full = emb.embed(str(huge_face_jpeg))
    assert len(full) == 1
    monkeypatch.setattr(images, "REDUCE_ABOVE_PIXELS", 1_000_000)
    image = emb.load(str(huge_face_jpeg))
    assert isinstance(image, images.ReducedImage)
    assert image.scale == 4
    assert image.shape == (512, 512, 3)
    reduced = emb.embed(str(huge_face_jpeg))
    assert reduced.info["decode"] == {"min_side": 512, "reduce_above_pixels": 1_000_000}
    assert len(reduced) == 1
    # boxes and landmarks in the file's pixels: the same face within 4 px (a quarter of one of the detector's
    # pixels, 16 file pixels here); measured 1.7 px
    np.testing.assert_allclose(reduced.bbox, full.bbox, atol=4)
    np.testing.assert_allclose(reduced.kps, full.kps, atol=4)
    assert reduced.bbox[0, 2] > 1024  # not the decoded image's 512 px
    cos = (full.face * reduced.face).sum() / np.linalg.norm(full.face) / np.linalg.norm(reduced.face)
    assert cos > 0.99


def test_the_fast_path_decodes_any_jpeg_at_reduced_scale_when_its_faces_allow(huge_face_jpeg, random_pcl_model):
    # 2048 px is far below REDUCE_ABOVE_PIXELS: the exact path decodes it whole, the fast one at the smallest
    # DCT scale that keeps decode_min_side (every face the detector can find keeps its crop's pixels)
    from facepcl.detection import FaceDetector
    from facepcl.pipeline import FaceEmbedder

    common = {"detector": FaceDetector(device="cpu", max_size=128), "num_workers": 0}
    exact = FaceEmbedder(random_pcl_model, mode="exact", **common)
    fast = FaceEmbedder(random_pcl_model, **common)
    assert not isinstance(exact.load(str(huge_face_jpeg)), images.ReducedImage)
    image = fast.load(str(huge_face_jpeg))
    assert isinstance(image, images.ReducedImage)
    assert (image.scale, image.shape) == (4, (512, 512, 3))
    a, b = exact.embed(str(huge_face_jpeg)), fast.embed(str(huge_face_jpeg))
    assert a.info["decode"]["reduce_above_pixels"] == images.REDUCE_ABOVE_PIXELS
    assert b.info["decode"]["reduce_above_pixels"] == 0
    assert len(a) == len(b) == 1
    np.testing.assert_allclose(b.bbox, a.bbox, atol=4)  # in the file's pixels
    for k in ("face", "pose", "trunk"):
        cos = (getattr(a, k) * getattr(b, k)).sum() / np.linalg.norm(getattr(a, k)) / np.linalg.norm(getattr(b, k))
        assert cos > 0.99, k


def test_a_whole_image_box_stays_within_the_file(huge_face_jpeg, random_pcl_model, monkeypatch) -> None:
    from facepcl.pipeline import FaceEmbedder

    monkeypatch.setattr(images, "REDUCE_ABOVE_PIXELS", 1_000_000)
    emb = FaceEmbedder(random_pcl_model, device="cpu", detect=False, num_workers=0)
    assert emb.load(str(huge_face_jpeg)).scale == 8  # 2048 -> 256 keeps 4 x 64
    np.testing.assert_array_equal(emb.embed(str(huge_face_jpeg)).bbox, [[0, 0, 2048, 2048]])


def test_min_face_size_turns_reduced_decoding_off(random_pcl_model) -> None:
    from facepcl.pipeline import FaceEmbedder

    assert FaceEmbedder(random_pcl_model, device="cpu", detector={"min_face_size": 40}).decode_min_side is None


def test_an_export_of_a_huge_jpeg_records_file_pixels_and_the_decoding(huge_face_jpeg, random_model_dir, tmp_path,
                                                                       monkeypatch) -> None:
    from facepcl.export import column_to_numpy, read_embeddings, read_metadata
    from facepcl.pipeline import _embedder

    monkeypatch.setattr(images, "REDUCE_ABOVE_PIXELS", 1_000_000)
    monkeypatch.setattr(_embedder, "min_decode_side", lambda detect_size, crop_size: 512)  # 2048 px -> 1/4
    out = tmp_path / "out"
    assert main(["embed", str(huge_face_jpeg), "-o", str(out), "--model", str(random_model_dir), "-q",
                 "--no-progress", "--device", "cpu"]) == 0
    assert read_metadata(out)["decode"] == {"min_side": 512, "reduce_above_pixels": 0}  # the fast default
    bbox = column_to_numpy(read_embeddings(out), "bbox")
    assert len(bbox) == 1
    assert 1024 < bbox[0, 2] <= 2048  # the file's pixels (2048 px), not the decoded 512
