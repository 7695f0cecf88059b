"""Embedding maps: projections, colours, labels, thumbnails and the `facepcl plot` command."""

from __future__ import annotations

import csv
import importlib.util
import shutil
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from facepcl import FaceEmbedder
from facepcl.align import full_image_matrix, warp
from facepcl.cli import main as cli
from facepcl.export import column_to_numpy, read_embeddings
from facepcl.io import load_image
from facepcl.viz import embedding_map, layout, pca, plot_embeddings, project_2d
from facepcl.viz._map import NO_LABEL, colour_points
from facepcl.viz._render import choose_renderer

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "images"
HAVE_SKLEARN = importlib.util.find_spec("sklearn") is not None


# -- projections ---------------------------------------------------------------------------------------------


def test_pca_matches_an_exact_svd_on_small_and_large_matrices():
    rng = np.random.default_rng(0)
    for n, d in ((40, 30), (600, 520)):  # the second takes the randomized path
        spectrum = np.concatenate([[10.0, 6.0], np.linspace(2.0, 0.1, d - 2)])  # two clear components
        x = rng.standard_normal((n, d)) @ np.diag(spectrum) + 5.0
        scores, explained = pca(x, 2, seed=1)
        xc = x - x.mean(0)
        u, s, _ = np.linalg.svd(xc, full_matrices=False)
        ref = u[:, :2] * s[:2]
        for k in range(2):
            sign = np.sign(ref[np.abs(ref[:, k]).argmax(), k])
            assert np.allclose(scores[:, k], sign * ref[:, k], atol=1e-4 * s[0]), (n, k)
            assert scores[np.abs(scores[:, k]).argmax(), k] > 0  # fixed sign convention
        assert np.allclose(explained, s[:2] ** 2 / (s ** 2).sum(), rtol=1e-6)


def test_project_2d_auto_uses_pca_for_few_points_and_says_so():
    x = np.random.default_rng(0).standard_normal((6, 20))
    p = project_2d(x, "auto")
    assert p.method == "pca"
    assert p.coords.shape == (6, 2)
    assert "only 6 points" in p.note
    assert p.axis_labels[0].startswith("PC1 (")


def test_project_2d_normalizes_rows_by_default():
    x = np.random.default_rng(0).standard_normal((12, 20))
    scaled = x * np.linspace(0.5, 8, 12)[:, None]
    assert np.allclose(project_2d(x, "pca").coords, project_2d(scaled, "pca").coords)
    assert not np.allclose(project_2d(x, "pca", normalize=False).coords,
                           project_2d(scaled, "pca", normalize=False).coords)


def test_project_2d_rejects_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        project_2d(np.array([[1.0, np.nan], [0.0, 1.0]]), "pca")
    with pytest.raises(ValueError, match="unknown projection"):
        project_2d(np.ones((3, 2)), "mds")
    with pytest.raises(ValueError, match="at least 4"):
        project_2d(np.eye(3), "tsne")


def test_missing_optional_packages_give_install_hints(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.manifold", None)
    monkeypatch.setitem(sys.modules, "umap", None)
    x = np.random.default_rng(0).standard_normal((20, 8))
    with pytest.raises(ImportError, match="pip install scikit-learn"):
        project_2d(x, "tsne")
    with pytest.raises(ImportError, match="pip install umap-learn"):
        project_2d(x, "umap")


@pytest.mark.skipif(not HAVE_SKLEARN, reason="t-SNE needs scikit-learn (optional)")
def test_tsne_is_seeded_and_separates_clusters():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 0.05, (15, 10)) + 1, rng.normal(0, 0.05, (15, 10)) - 1])
    a, b = project_2d(x, "tsne", seed=3), project_2d(x, "tsne", seed=3)
    assert a.method == "tsne"
    assert np.array_equal(a.coords, b.coords)
    c = a.coords
    within = max(np.ptp(c[:15], axis=0).max(), np.ptp(c[15:], axis=0).max())
    assert np.linalg.norm(c[:15].mean(0) - c[15:].mean(0)) > within


# -- colours -------------------------------------------------------------------------------------------------


def test_colours_categories_numbers_and_missing_labels():
    col = colour_points(np.array(["b", "a10", "a2", "b", None], dtype=object), "person")
    assert col.kind == "categorical"
    assert [e[0] for e in col.legend] == ["a2", "a10", "b", NO_LABEL]  # natural order, missing last
    assert [e[2] for e in col.legend] == [1, 1, 2, 1]
    assert np.array_equal(col.colours[0], col.colours[3])
    assert not np.array_equal(col.colours[0], col.colours[1])
    ints = colour_points(np.array([3, 1, 2, 1]), "face_index")
    assert ints.kind == "categorical"
    assert [e[0] for e in ints.legend] == ["1", "2", "3"]
    cont = colour_points(np.array([0.1, 0.5, 0.9, np.nan]), "det_score")
    assert cont.kind == "continuous"
    assert cont.limits == (0.1, 0.9)
    assert not np.array_equal(cont.colours[0], cont.colours[2])
    many = colour_points(np.array([f"p{i % 30}" for i in range(90)] + ["p0"] * 5, dtype=object), "path")
    assert len(many.legend) == 20
    assert many.legend[-1][0] == "other (11 values)"
    assert sum(e[2] for e in many.legend) == 95


# -- exports -------------------------------------------------------------------------------------------------


def _pictures(root: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for person in ("alice", "bob"):
        (root / person).mkdir(parents=True)
        for k in range(6):
            small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
            p = root / person / f"{k}.png"
            Image.fromarray(small).resize((40 + 8 * k, 48), Image.BILINEAR).save(p)
            paths.append(p)
    return paths


@pytest.fixture(scope="module")
def aligned_export(tmp_path_factory, random_model_dir) -> tuple[Path, list[Path]]:
    """An export of 12 already-aligned pictures in two folders (no detection: fast, and full-image crops)."""
    root = tmp_path_factory.mktemp("aligned")
    paths = _pictures(root / "pics")
    out = root / "emb"
    assert cli(["embed", str(root / "pics"), "-o", str(out), "--model", str(random_model_dir), "--device", "cpu",
                "--no-detect", "-q"]) == 0
    return out, paths


@pytest.fixture(scope="module")
def detected_export(tmp_path_factory, random_model_dir) -> Path:
    """An export of the public-domain example photos, with detection (4 faces in 3 files)."""
    out = tmp_path_factory.mktemp("detected") / "emb"
    assert cli(["embed", str(EXAMPLES), "-o", str(out), "--model", str(random_model_dir), "--device", "cpu",
                "-q"]) == 0
    return out


def test_map_of_an_export_coloured_by_folder(aligned_export):
    out, _ = aligned_export
    emap = embedding_map(out, features="pose", method="pca")
    assert len(emap) == 12
    assert emap.total == 12
    assert emap.colouring.name == "dirname"
    assert [(e[0], e[2]) for e in emap.colouring.legend] == [("alice", 6), ("bob", 6)]
    table = read_embeddings(out)
    ref = project_2d(column_to_numpy(table, "pose"), "pca")
    assert np.allclose(emap.projection.coords, ref.coords)
    assert emap.title.startswith("pose features F_p · PCA · 12 faces")


def test_single_parquet_file_and_table_inputs(aligned_export):
    out, _ = aligned_export
    shard = sorted(out.glob("part-*.parquet"))[0]
    a = embedding_map(shard, method="pca")
    b = embedding_map(pq.read_table(shard), method="pca")
    assert np.allclose(a.projection.coords, b.projection.coords)
    assert len(a) == 12
    assert a.metadata["model_name"] == "random-test"


def test_unknown_colour_or_feature_is_an_error(aligned_export, tmp_path, random_model_dir):
    out, paths = aligned_export
    with pytest.raises(ValueError, match=r"cannot colour by 'person'.*--labels"):
        embedding_map(out, color_by="person")
    face_only = tmp_path / "face-only"
    assert cli(["embed", *map(str, paths[:2]), "-o", str(face_only), "--model", str(random_model_dir), "--device",
                "cpu", "--no-detect", "--features", "face", "-q"]) == 0
    with pytest.raises(ValueError, match=r"no column 'pose' \(this export holds the features \['face'\]\)"):
        embedding_map(face_only, features="pose")
    with pytest.raises(ValueError, match="features must be one of"):
        embedding_map(out, features="both")
    with pytest.raises(FileNotFoundError):
        embedding_map(tmp_path / "nothing-here")


def test_labels_csv_joins_on_paths(aligned_export, tmp_path, monkeypatch):
    out, paths = aligned_export
    labels = tmp_path / "labels.csv"
    with open(labels, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "mood"])
        for k, p in enumerate(paths[:10]):  # two pictures left unlabelled
            w.writerow([str(p), "happy" if k % 2 else "sad"])
    emap = embedding_map(out, labels=labels, method="pca")
    assert emap.colouring.name == "mood"  # the first label column is the default colour
    assert [(e[0], e[2]) for e in emap.colouring.legend] == [("happy", 5), ("sad", 5), (NO_LABEL, 2)]
    assert any("2 of 12 faces have no row" in n for n in emap.notes)
    # paths relative to the CSV's folder match too (run from elsewhere)
    root = paths[0].parents[2]
    lists = root / "lists"
    lists.mkdir(exist_ok=True)
    rel = lists / "rel.csv"
    rel.write_text("path,person\n" + "".join(f"../{p.relative_to(root).as_posix()},{p.parent.name}\n"
                                              for p in paths))
    monkeypatch.chdir(tmp_path)
    emap = embedding_map(out, labels=rel, method="pca", color_by="person")
    assert [(e[0], e[2]) for e in emap.colouring.legend] == [("alice", 6), ("bob", 6)]
    # and relative to the current directory
    monkeypatch.chdir(root)
    cwd_csv = tmp_path / "cwd.csv"
    cwd_csv.write_text("path,person\n" + "".join(f"{p.relative_to(root).as_posix()},x\n" for p in paths))
    emap = embedding_map(out, labels=cwd_csv, method="pca")
    assert [(e[0], e[2]) for e in emap.colouring.legend] == [("x", 12)]


def test_labels_csv_errors_name_the_problem(aligned_export, tmp_path):
    out, paths = aligned_export
    bad = tmp_path / "bad.csv"
    bad.write_text("file,label\na.png,1\n")
    with pytest.raises(ValueError, match="'path' column"):
        embedding_map(out, labels=bad)
    nomatch = tmp_path / "nomatch.csv"
    nomatch.write_text("path,label\nelsewhere/a.png,1\n")
    with pytest.raises(ValueError, match="no path of the labels CSV matches"):
        embedding_map(out, labels=nomatch)
    twice = tmp_path / "twice.csv"
    twice.write_text(f"path,label\n{paths[0]},1\n{paths[0]},2\n")
    with pytest.raises(ValueError, match="listed twice"):
        embedding_map(out, labels=twice)


def test_max_points_takes_a_seeded_sample(aligned_export):
    out, _ = aligned_export
    a = embedding_map(out, method="pca", max_points=5, seed=1)
    b = embedding_map(out, method="pca", max_points=5, seed=1)
    assert len(a) == 5
    assert a.total == 12
    assert np.array_equal(a.item, b.item)
    assert "(sample of 12)" in a.title
    assert any("random sample of 5 of 12" in n for n in a.notes)


@pytest.mark.slow
def test_thumbnails_are_the_exports_own_crops(aligned_export, detected_export, random_pcl_model):
    out, _ = aligned_export
    emap = embedding_map(out, method="pca")
    lay = layout(emap, thumb_size=32, max_thumbnails=100)
    assert lay.thumbnails
    assert not lay.problems
    for row, crop in lay.thumbnails.items():  # no detection: the whole picture, letterboxed, as embedded
        image = load_image(emap.paths[row])
        assert np.array_equal(crop, warp(image, full_image_matrix(*image.shape[:2], 32), 32))
    emap = embedding_map(detected_export, method="pca")
    lay = layout(emap, thumb_size=48, max_thumbnails=100, size=(3000, 2400))
    assert len(lay.thumbnails) >= 3
    embedder = FaceEmbedder(random_pcl_model, crop_size=48, return_crops=True, device="cpu")
    for row, crop in lay.thumbnails.items():  # detected faces: aligned like the embedder at 48 px
        ref = embedder(str(Path(emap.metadata["cwd"]) / emap.paths[row]))
        assert np.array_equal(crop, ref.crops[int(emap.face_index[row])])


def test_thumbnails_never_overlap_and_stay_inside(aligned_export):
    out, _ = aligned_export
    emap = embedding_map(out, method="pca")
    lay = layout(emap, size=(500, 400), thumb_size=48, max_thumbnails=100)
    rows = list(lay.thumbnails)
    x0, y0, x1, y1 = lay.box
    for i in rows:
        assert x0 <= lay.xy[i, 0] - 24
        assert lay.xy[i, 0] + 24 <= x1
        assert y0 <= lay.xy[i, 1] - 24 <= y1
        for j in rows:
            if i < j:
                assert np.abs(lay.xy[i] - lay.xy[j]).max() >= 48
    assert len(lay.thumbnails) <= layout(emap, size=(3000, 2400), thumb_size=48).thumbnails.__len__()


def test_moved_files_give_dots_and_a_reason(aligned_export, tmp_path):
    out, _ = aligned_export
    moved = tmp_path / "moved-export"
    shutil.copytree(out, moved)
    emap = embedding_map(moved, method="pca")
    emap.paths = np.array([str(tmp_path / "gone" / Path(p).parent.name / Path(p).name) for p in emap.paths],
                          dtype=object)
    lay = layout(emap)
    assert not lay.thumbnails
    assert "12 source file(s) not found" in lay.problems[0]


def test_renderer_choice_and_formats(monkeypatch):
    assert choose_renderer("pil", "map.png") == "pil"
    with pytest.raises(ValueError, match="Pillow renderer writes"):
        choose_renderer("pil", "map.svg")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else object())
    assert choose_renderer("auto", "map.png") == "pil"
    with pytest.raises(ImportError, match="facepcl\\[plot\\]"):
        choose_renderer("matplotlib", "map.png")


def test_pil_picture_shows_the_thumbnails(aligned_export, tmp_path):
    out, _ = aligned_export
    path = tmp_path / "map.png"
    emap, lay = plot_embeddings(out, path, renderer="pil", method="pca", size=(800, 600), thumb_size=40)
    img = np.asarray(Image.open(path).convert("RGB"))
    assert img.shape == (600, 800, 3)
    for row, crop in lay.thumbnails.items():
        x, y = (round(v) - 20 for v in lay.xy[row])
        assert np.array_equal(img[y:y + 40, x:x + 40], crop)
        assert tuple(img[y - 2, x + 10]) == tuple(emap.colouring.colours[row])  # the frame shows the colour


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="matplotlib is optional")
def test_matplotlib_renderer_writes_vector_and_raster(aligned_export, tmp_path):
    out, _ = aligned_export
    for name in ("map.svg", "map.png"):
        plot_embeddings(out, tmp_path / name, renderer="matplotlib", method="pca", size=(800, 600))
    assert (tmp_path / "map.svg").read_text().lstrip().startswith("<?xml")
    assert Image.open(tmp_path / "map.png").size == (800, 600)


def test_cli_plot_writes_map_and_coordinates(aligned_export, tmp_path, capsys):
    out, _ = aligned_export
    picture, coords = tmp_path / "m.png", tmp_path / "xy.csv"
    code = cli(["plot", str(out), "-o", str(picture), "--features", "trunk", "--method", "pca", "--renderer",
                "pil", "--size", "640x480", "--color-by", "width", "--save-coords", str(coords)])
    assert code == 0
    assert Image.open(picture).size == (640, 480)
    with open(coords, newline="") as f:
        rows = list(csv.DictReader(f))
    emap = embedding_map(out, features="trunk", method="pca", color_by="width")
    assert [float(r["x"]) for r in rows] == pytest.approx(emap.projection.coords[:, 0], rel=1e-5)
    assert {r["width"] for r in rows} == {str(40 + 8 * k) for k in range(6)}
    printed = capsys.readouterr()
    assert "12 faces, trunk features, pca, coloured by width (6 groups)" in printed.out


def test_cli_plot_errors(aligned_export, tmp_path, capsys, monkeypatch):
    out, _ = aligned_export
    assert cli(["plot", str(out), "-o", str(tmp_path / "m.png"), "--color-by", "mood"]) == 1
    assert "cannot colour by 'mood'" in capsys.readouterr().err
    assert cli(["plot", str(out), "-o", str(tmp_path / "m.svg"), "--renderer", "pil"]) == 1
    assert "Pillow renderer writes" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.manifold", None)
    assert cli(["plot", str(out), "-o", str(tmp_path / "m.png"), "--method", "tsne"]) == 1
    assert "pip install scikit-learn" in capsys.readouterr().err
