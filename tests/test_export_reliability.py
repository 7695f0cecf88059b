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
from facepcl.export import ExportStateError, _formats, column_to_numpy, read_embeddings, read_errors
from facepcl.export._layout import MANIFESTS, read_manifest

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
    fmt = _formats.FORMATS["parquet"]
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
    fmt = _formats.FORMATS["parquet"]
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


# --- nothing half-written, nothing silent ---------------------------------------------------------------------


def test_failed_fsync_of_a_shard_fails_the_run_and_resume_completes_it(crops, embed, reference, tmp_path,
                                                                     monkeypatch) -> None:
    out = tmp_path / "out"
    real = os.fsync

    def fsync(fd: int) -> None:
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(".part-r"):  # shard data files
            raise OSError(errno.EIO, "Input/output error")
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    rc, err = embed([crops], out)
    assert rc == 1
    assert "Traceback" not in err
    assert "cannot write" in err
    assert "part-r00000-000000.parquet" in err
    assert "Input/output error" in err
    assert "--resume" in err
    assert not list(out.glob("part-*"))  # nothing committed
    assert not list((out / MANIFESTS).glob("part-*"))
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]
    monkeypatch.undo()
    rc, err = embed([crops], out, "--resume")
    assert rc == 0, err
    assert_same_rows(out, reference)


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":  # head -c, or a copy to another disk that stopped part way
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    else:  # one flipped bit, same size
        flipped = bytearray(data)
        flipped[len(data) // 2] ^= 0x10
        path.write_bytes(bytes(flipped))


@pytest.mark.parametrize("how", ["truncated", "empty", "bitflip"])
def test_a_damaged_shard_is_refused_by_readers_and_redone_by_resume(crops, embed, reference, tmp_path, how) -> None:
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    _damage(out / "part-r00000-000001.parquet", how)
    with pytest.raises(ExportStateError, match=r"part-r00000-000001\.parquet is damaged \(.*--resume"):
        read_embeddings(out)
    rc, err = embed([crops], out, "--resume")
    assert rc == 0, err
    problem = {"truncated": "bytes, the manifest says", "empty": "0 bytes, the manifest says",
               "bitflip": "SHA-256 differs"}[how]
    assert "redoing part-r00000-000001.parquet: " in err
    assert problem in err
    assert "redoing part-r00000-000002.parquet: comes after a shard that is redone" in err
    assert "redoing part-r00000-000000" not in err
    assert_same_rows(out, reference)
    assert_consistent(out)
    assert read_errors(out) == read_errors(reference)


@pytest.mark.parametrize("content", ['{"shard": 1, "rank": 0, "file": "part-r0', "\x00\x00garbage"])
def test_a_damaged_manifest_is_a_clear_error(crops, embed, reference, tmp_path, content) -> None:
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    manifest = out / MANIFESTS / "part-r00000-000001.json"
    manifest.write_text(content)
    rc, err = embed([crops], out, "--resume")
    assert rc == 1
    assert "Traceback" not in err
    assert f"{manifest} is damaged (" in err
    assert "run with --overwrite or restore it" in err
    with pytest.raises(ExportStateError, match="is damaged"):
        read_embeddings(out)
    rc, err = embed([crops], out, "--overwrite")
    assert rc == 0, err
    assert_same_rows(out, reference)


@pytest.fixture(scope="module")
def overflowing_model_dir(random_model_dir, tmp_path_factory) -> Path:
    """The random model with finite weights scaled so far up that its activations overflow to inf/NaN."""
    from safetensors import safe_open
    from safetensors.numpy import save_file

    folder = tmp_path_factory.mktemp("overflowing")
    shutil.copytree(random_model_dir, folder, dirs_exist_ok=True)
    path = folder / "model.safetensors"
    with safe_open(str(path), framework="np") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    for k, v in tensors.items():
        if v.dtype == np.float32 and v.ndim == 4:  # conv kernels
            tensors[k] = v * np.float32(1e12)
    save_file(tensors, str(path), metadata=meta)
    return folder


def test_a_model_giving_nan_is_a_fatal_error_and_nothing_is_written(crops, embed, tmp_path,
                                                                   overflowing_model_dir) -> None:
    out = tmp_path / "out"
    rc, err = embed([crops], out, "--model", str(overflowing_model_dir))
    assert rc == 1
    assert "Traceback" not in err
    assert "non-finite (NaN or infinite)" in err
    assert "encoder_sha256" in err
    assert "c00.png" in err
    assert "nothing of this batch was written" in err
    assert read_embeddings(out).num_rows == 0
    assert not list(out.glob("part-*"))


def test_safetensors_shards_on_a_full_disk_say_so_and_resume(crops, embed, reference, tmp_path,
                                                            monkeypatch) -> None:
    out = tmp_path / "out"
    fmt = _formats.FORMATS["safetensors"]
    monkeypatch.setattr(fmt, "write", _FailingWrite(fmt, 2, OSError(errno.ENOSPC, "No space left on device")))
    rc, err = embed([crops], out, "--format", "safetensors")
    assert rc == 1
    assert "Traceback" not in err
    assert "disk is full" in err
    assert "part-r00000-000001.safetensors" in err
    assert "--resume" in err
    monkeypatch.undo()
    rc, err = embed([crops], out, "--format", "safetensors", "--resume")
    assert rc == 0, err
    assert_same_rows(out, reference)


def test_overwrite_of_a_folder_it_cannot_delete_from_is_a_clear_error(crops, embed, reference, tmp_path,
                                                                      monkeypatch) -> None:
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    real = os.remove

    def remove(path, *args, **kwargs):
        if os.path.basename(path).startswith("part-"):
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "remove", remove)
    rc, err = embed([crops], out, "--overwrite")
    assert rc == 1
    assert "Traceback" not in err
    assert "--overwrite cannot delete" in err
    assert "part-r00000-" in err
    assert "not writable" in err


@pytest.mark.photos
def test_a_video_cut_short_keeps_its_frames_and_records_where_it_stopped(embed, tmp_path) -> None:
    from tests import _samples
    from tests.test_export_video import remux_avi

    whole = tmp_path / "whole.avi"
    remux_avi(_samples.pyfeat("single_face.mp4"), whole)
    cut = tmp_path / "in" / "clip.avi"
    cut.parent.mkdir()
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    rc, err = embed([cut], out, "--every", "12", "--shard-size", "100")
    assert rc == 0, err
    frames = read_embeddings(out).column("frame").to_pylist()
    (record,) = read_errors(out)
    assert record["kind"] == "truncated"
    assert record["frame"] == -1
    assert record["path"] == str(cut)
    last = int(record["reason"].split("truncated after frame ")[1].split(":")[0])
    assert frames == list(range(0, last + 1, 12))
    assert 2 <= len(frames) < 6
    assert "declares 72 frames" in record["reason"]
    assert "1 skipped" in err


def test_a_signal_while_the_inputs_are_listed_stops_there_and_resume_completes(crops, embed, tmp_path,
                                                                            monkeypatch) -> None:
    import signal

    from facepcl.io import inputs as _inputs

    folder = tmp_path / "in"
    for i, part in enumerate(["a", "a", "a", "a", "b", "b", "b", "b", "b"]):
        (folder / part).mkdir(parents=True, exist_ok=True)
        shutil.copy(crops / f"c{i:02d}.png", folder / part / f"c{i:02d}.png")
    straight = tmp_path / "straight"
    rc, err = embed([folder], straight)
    assert rc == 0, err
    real = _inputs._listing
    sent = []

    def listing(path: str):
        if path.endswith(os.sep + "b") and not sent:  # SIGTERM arrives while the walk reaches folder b
            sent.append(path)
            signal.raise_signal(signal.SIGTERM)
        return real(path)

    monkeypatch.setattr(_inputs, "_listing", listing)
    out = tmp_path / "out"
    rc, err = embed([folder], out)
    assert rc == 128 + signal.SIGTERM, err
    assert sent
    assert "interrupted" in err
    assert "--resume" in err
    assert "Traceback" not in err
    assert_consistent(out)
    assert 0 < read_embeddings(out).num_rows < N_IMAGES
    monkeypatch.undo()
    rc, err = embed([folder], out, "--resume")
    assert rc == 0, err
    assert_same_rows(out, straight)


def test_a_fan_out_of_symlinks_to_one_file_is_embedded_once(crops, embed, tmp_path) -> None:
    folder = tmp_path / "in"
    (folder / "links").mkdir(parents=True)
    shutil.copy(crops / "c00.png", folder / "real.png")
    for i in range(40):
        os.symlink(folder / "real.png", folder / "links" / f"l{i:02d}.png")
        os.symlink(folder, folder / "links" / f"up{i:02d}")  # and loops back to the top
    rc, err = embed([folder], tmp_path / "out")
    assert rc == 0, err
    # the folder holding the real file is walked anyway: the file is taken by its own name, the links skipped
    assert read_embeddings(tmp_path / "out").column("path").to_pylist() == [str(folder / "real.png")]
