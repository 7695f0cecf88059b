"""The documentation site builds in strict mode, and its generated parts and picture scripts work.

A strict MkDocs build fails on any warning: a broken link or anchor, a
missing picture, a docstring mkdocstrings cannot parse, an API reference to
an object that does not exist.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from facepcl import PCLConfig, PCLModel
from facepcl.cli import SUBCOMMANDS

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SCRIPTS = DOCS / "scripts"


def _module(name: str):
    spec = importlib.util.spec_from_file_location(f"_docs_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(SCRIPTS))  # the scripts import their sibling _views.py
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(SCRIPTS))
    return module


@pytest.mark.slow
def test_mkdocs_build_is_strict_clean(tmp_path):
    for package in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python"):
        pytest.importorskip(package, reason="the docs tools come with the [dev] extra")
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
                           "-d", str(site)], cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log
    assert "WARNING" not in log, log
    cli_page = (site / "cli-reference" / "index.html").read_text()
    for name in SUBCOMMANDS:
        assert f"usage: facepcl {name}" in cli_page, name
    api = (site / "api" / "embedding" / "index.html").read_text()
    for anchor in ("facepcl.embed", "facepcl.FaceEmbedder", "facepcl.EmbeddingResult", "facepcl.load_image"):
        assert f'id="{anchor}"' in api, anchor
    assert 'id="facepcl.viz.swap_grid"' in (site / "api" / "viz" / "index.html").read_text()
    # Sphinx roles in docstrings become links (or code), never raw ":func:" text
    assert ":func:`" not in api
    assert 'href="../models/#facepcl.load"' in api
    pictures = (site / "pictures" / "index.html").read_text()
    hooks = _module("mkdocs_hooks")
    for picture, command in hooks.MODEL_PICTURES.items():
        if (DOCS / picture).exists():
            assert f'src="../{picture}"' in pictures
        else:
            assert command in pictures
    assert 'src="../img/views.png"' in pictures
    examples = (site / "examples" / "index.html").read_text()
    assert "Cosine similarity of every row" in examples  # the scripts are included from examples/: no drift


def test_cli_reference_has_every_subcommand(monkeypatch):
    monkeypatch.setenv("COLUMNS", "40")
    text = _module("mkdocs_hooks").cli_reference()
    headings = re.findall(r"^## `facepcl ?([a-z]*)`$", text, re.M)
    assert headings == ["", *SUBCOMMANDS]
    assert "--faces-a" in text
    assert "--color-by" in text
    assert "--shard-size" in text
    # wrapped at the fixed width, whatever the terminal, which is left as it was
    assert re.search(r"^usage: facepcl swap .{45,}", text, re.M)
    assert os.environ["COLUMNS"] == "40"


def test_pictures_that_need_a_model_are_noted_until_made(tmp_path):
    hooks = _module("mkdocs_hooks")
    page = "Intro\n\n![A grid](img/swap.png)\n\n![Other](img/other.png)\n"
    noted = hooks.pending_pictures(page, str(tmp_path))
    assert "![A grid](img/swap.png)" not in noted
    assert '!!! note "Picture not made yet: A grid"' in noted
    assert hooks.MODEL_PICTURES["img/swap.png"] in noted
    assert "![Other](img/other.png)" in noted  # not a model picture: left for the strict build to check
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "swap.png").write_bytes(b"png")
    assert hooks.pending_pictures(page, str(tmp_path)) == page
    # from a page in a sub-folder the same file is ../img/swap.png
    sub = "![A grid](../img/swap.png)"
    assert hooks.pending_pictures(sub, str(tmp_path / "nowhere"), "api").startswith("\n\n!!! note")


def test_sphinx_roles_become_optional_links():
    roles = _module("griffe_roles")

    obj = SimpleNamespace(path="facepcl.viz", members={"swap_faces": None}, parent=None)
    obj.module = obj
    out = roles.rewrite("See :func:`swap_faces`, :class:`~facepcl.PCLModel` and :meth:`x.y()`.", obj)
    assert '<autoref identifier="facepcl.viz.swap_faces" optional><code>swap_faces</code></autoref>' in out
    assert '<autoref identifier="facepcl.PCLModel" optional><code>PCLModel</code></autoref>' in out
    assert ":func:" not in out
    assert ":class:" not in out


def test_docs_link_only_to_pages_and_pictures_that_exist():
    hooks = _module("mkdocs_hooks")
    for page in DOCS.rglob("*.md"):
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if target.startswith(("http://", "https://")):
                continue
            path = (page.parent / target).resolve()
            key = path.relative_to(DOCS).as_posix() if path.is_relative_to(DOCS) else None
            assert path.exists() or key in hooks.MODEL_PICTURES, f"{page.relative_to(ROOT)} links to {target}"
    for script in re.findall(r"python (docs/scripts/\w+\.py)", "\n".join(p.read_text() for p in DOCS.rglob("*.md"))):
        assert (ROOT / script).is_file(), script


def _decoder_model_dir(tmp_path: Path) -> Path:
    torch.manual_seed(5)
    folder = tmp_path / "model"
    PCLModel(PCLConfig(components=["encoder", "decoder"], name="random-decoder")).save_pretrained(str(folder))
    return folder


@pytest.mark.slow
def test_picture_scripts_run(tmp_path):
    # Random weights only check that the scripts work; the published pictures are made with pcl-demo.
    model = _decoder_model_dir(tmp_path)
    out = tmp_path / "img"
    assert _module("make_swap_figure").main(["--model", str(model), "--out-dir", str(out), "--device", "cpu"]) == 0
    assert _module("make_map_figures").main(["--model", str(model), "--out-dir", str(out), "--device", "cpu",
                                             "--method", "pca"]) == 0
    assert _module("make_crops_figure").main(["--model", str(model), "--out", str(out / "views.png")]) == 0
    made = {p.name: Image.open(p).size for p in out.iterdir()}
    assert set(made) == {"swap.png", "swap-turned.png", "map-face.png", "map-pose.png", "map-pose-by-person.png",
                         "views.png"}
    assert made["map-face.png"] == (1200, 900)
    # the crops figure needs no weights: the committed one is what the script makes (up to JPEG codec and
    # float differences between OpenCV builds, which may move a crop by a fraction of a pixel)
    committed = np.asarray(Image.open(DOCS / "img" / "views.png").convert("RGB")).astype(float)
    made_now = np.asarray(Image.open(out / "views.png").convert("RGB")).astype(float)
    assert made_now.shape == committed.shape
    assert np.abs(made_now - committed).mean() < 2.0
