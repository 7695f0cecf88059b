"""`facepcl embed` under failure: full disks, interrupts during a write, odd file names, special files, changed inputs.

Every run embeds small synthetic face crops without detection (``--no-detect``),
one image per batch and one torch thread, so that a run that failed and was
resumed must give bit-identical rows to an uninterrupted one.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facepcl.cli import main
from facepcl.export import _writers, column_to_numpy, read_embeddings, read_errors
from facepcl.export._state import MANIFESTS, read_manifest

from ._threads import torch_threads

N_IMAGES = 9


@pytest.fixture(scope="module")
def crops(tmp_path_factory) -> Path:
    """Nine distinct 64 px "aligned crops" (random textures), as PNG files."""
    folder = tmp_path_factory.mktemp("crops")
    rng = np.random.default_rng(7)
    for i in range(N_IMAGES):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / f"c{i:02d}.png")
    return folder


@pytest.fixture()
def embed(capsys, random_model_dir):
    """Run `facepcl embed INPUT... -o OUT` in this process; returns (exit code, stderr)."""
    def call(inputs: list, out: Path, *extra: str) -> tuple[int, str]:
        capsys.readouterr()
        rc = main(["embed", *map(str, inputs), "-o", str(out), "--model", str(random_model_dir), "--no-detect",
                   "--batch-size", "1", "--num-workers", "1", "--device", "cpu", "--shard-size", "2",
                   "--no-progress", *extra])
        return rc, capsys.readouterr().err

    with torch_threads(1):
        yield call


@pytest.fixture()
def reference(crops, embed, tmp_path) -> Path:
    out = tmp_path / "reference"
    rc, err = embed([crops], out)
    assert rc == 0, err
    return out


def assert_same_rows(out: Path, ref: Path) -> None:
    a, b = read_embeddings(out), read_embeddings(ref)
    assert a.num_rows == b.num_rows == N_IMAGES
    assert a.column("path").to_pylist() == b.column("path").to_pylist()
    for name in ("face", "pose", "trunk"):
        np.testing.assert_array_equal(column_to_numpy(a, name), column_to_numpy(b, name), err_msg=name)


def assert_consistent(out: Path) -> None:
    """Every committed shard holds the rows its manifest counts, and every input marked finished has its row."""
    table = read_embeddings(out)
    finished = 0
    for man in sorted((out / MANIFESTS).glob("part-*.json")):
        m = read_manifest(str(man))
        if not (out / m["file"]).exists():
            continue
        finished += m["stats"]["inputs"]
        assert m["rows"] == m["stats"]["faces"] == m["stats"]["inputs"] > 0, m
    assert table.num_rows == finished
    assert sorted(table.column("item").to_pylist()) == list(range(finished))


class _FailingWrite:
    """Wraps a shard format's write: call number ``at`` writes half a file, then raises ``error``."""

    def __init__(self, fmt, at: int, error: BaseException) -> None:
        self.fmt, self.write, self.at, self.error, self.calls = fmt, fmt.write, at, error, 0

    def __call__(self, cols, dest, *args, **kwargs):
        self.calls += 1
        if self.calls == self.at:
            with open(dest, "wb") as f:
                f.write(b"PAR1" + bytes(100))
            raise self.error
        return self.write(cols, dest, *args, **kwargs)


def test_full_disk_fails_loudly_and_resume_completes_every_row(crops, embed, reference, tmp_path,
                                                               monkeypatch) -> None:
    out = tmp_path / "out"
    fmt = _writers.FORMATS["parquet"]
    monkeypatch.setattr(fmt, "write", _FailingWrite(fmt, 3, OSError(errno.ENOSPC, "No space left on device")))
    rc, err = embed([crops], out)
    assert rc == 1
    assert "disk is full" in err
    assert "--resume" in err
    assert "part-r00000-000002.parquet" in err
    assert_consistent(out)
    assert read_embeddings(out).num_rows == 4  # two whole shards, nothing of the failed one
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]
    monkeypatch.undo()
    rc, err = embed([crops], out, "--resume")
    assert rc == 0, err
    assert_same_rows(out, reference)
    assert read_errors(out) == []


def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir()
    try:
        return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                              capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def test_real_full_disk_then_resume_on_a_disk_with_room(crops, embed, reference, tmp_path) -> None:
    small = tmp_path / "small"
    if not _mount_tmpfs(small, "160k"):
        pytest.skip("cannot mount a tmpfs here (needs root); the simulated full disk above covers the logic")
    try:
        rc, err = embed([crops], small / "out")
        assert rc == 1, err
        assert "disk is full" in err, err
        assert_consistent(small / "out")
        shutil.copytree(small / "out", tmp_path / "moved")
    finally:
        subprocess.run(["umount", str(small)], capture_output=True, timeout=30)
    rc, err = embed([crops], tmp_path / "moved", "--resume")
    assert rc == 0, err
    assert_same_rows(tmp_path / "moved", reference)


def test_second_ctrl_c_during_a_shard_write_commits_nothing_of_it(crops, embed, reference, tmp_path,
                                                                  monkeypatch) -> None:
    out = tmp_path / "out"
    fmt = _writers.FORMATS["parquet"]
    monkeypatch.setattr(fmt, "write", _FailingWrite(fmt, 2, KeyboardInterrupt()))
    rc, err = embed([crops], out)
    assert rc == 130
    assert "interrupted" in err
    assert_consistent(out)
    assert read_embeddings(out).num_rows == 2
    monkeypatch.undo()
    rc, err = embed([crops], out, "--resume")
    assert rc == 0, err
    assert_same_rows(out, reference)


@pytest.mark.parametrize("fmt", ["parquet", "npz", "safetensors"])
def test_file_names_that_are_not_utf8(crops, embed, tmp_path, fmt) -> None:
    folder = tmp_path / "in"
    shutil.copytree(crops, folder)
    odd = os.path.join(os.fsencode(folder), b"caf\xe9-\xff.png")
    os.rename(folder / "c04.png", odd)
    out = tmp_path / "out"
    rc, err = embed([folder], out, "--format", fmt)
    assert rc == 0, err
    table = read_embeddings(out)
    assert table.num_rows == N_IMAGES
    assert str(folder / "caf\\xe9-\\xff.png") in table.column("path").to_pylist()
    assert read_errors(out) == []
    if fmt != "parquet":
        assert "caf\\xe9-\\xff.png" in (out / "index.csv").read_text(encoding="utf-8")
    rc, err = embed([folder], out, "--format", fmt, "--resume")
    assert rc == 0, err
    assert read_embeddings(out).num_rows == N_IMAGES


def test_list_file_with_lines_that_are_not_utf8(crops, embed, tmp_path) -> None:
    odd = os.path.join(os.fsencode(tmp_path), b"\xe9t\xe9.png")
    shutil.copy(crops / "c00.png", odd)
    listing = tmp_path / "list.txt"
    listing.write_bytes(b"\xe9t\xe9.png\n" + str(crops / "c01.png").encode() + b"\nmissing-\xfe.png\n"
                        + str(crops / "c02.png").encode() + b"\n")
    out = tmp_path / "out"
    rc, err = embed([f"@{listing}"], out)
    assert rc == 0, err
    table = read_embeddings(out)
    assert table.column("path").to_pylist() == [str(tmp_path / "\\xe9t\\xe9.png"), str(crops / "c01.png"),
                                                str(crops / "c02.png")]
    (failure,) = read_errors(out)
    assert failure["item"] == 2
    assert failure["path"].endswith("missing-\\xfe.png")
    assert "no such file" in failure["reason"]
    json.dumps(failure, ensure_ascii=False).encode("utf-8")
    rc, err = embed([f"@{listing}"], out, "--resume")
    assert rc == 0, err


def test_special_files_are_recorded_not_read(crops, embed, tmp_path) -> None:
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    out = tmp_path / "out"
    rc, err = embed([crops / "c00.png", fifo, "/dev/zero"], out)
    assert rc == 0, err
    assert read_embeddings(out).num_rows == 1
    reasons = {Path(e["path"]).name: e["reason"] for e in read_errors(out)}
    assert "FIFO" in reasons["pipe.jpg"]
    assert "character device" in reasons["zero"]


def test_summary_counts_a_missing_file_as_an_input_not_an_image(crops, embed, tmp_path) -> None:
    rc, err = embed([crops / "c00.png", tmp_path / "missing.png"], tmp_path / "out")
    assert rc == 0, err
    assert "2 inputs (1 images, 0 videos, 0 frames), 1 faces, 1 skipped" in err


def test_resume_refuses_a_finished_input_whose_contents_changed(crops, embed, tmp_path) -> None:
    folder = tmp_path / "in"
    shutil.copytree(crops, folder)
    out = tmp_path / "out"
    rc, err = embed([folder], out)
    assert rc == 0, err
    rc, err = embed([folder], out, "--resume")
    assert rc == 0, err  # nothing changed: nothing to do
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(folder / "c03.png")
    rc, err = embed([folder], out, "--resume")
    assert rc == 1
    assert "c03.png" in err
    assert "changed" in err
    assert "--overwrite" in err


def test_output_path_that_is_a_file_is_a_clear_error(crops, embed, tmp_path) -> None:
    blocker = tmp_path / "taken"
    blocker.write_text("a file, not a folder")
    rc, err = embed([crops], blocker)
    assert rc == 1
    assert "cannot write" in err
    assert "choose another -o folder" in err
    assert "Traceback" not in err


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder_is_a_clear_error(crops, embed, tmp_path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        rc, err = embed([crops], ro / "out")
    finally:
        ro.chmod(0o755)
    assert rc == 1
    assert "not writable" in err
