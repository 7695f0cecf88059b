"""The one folder protocol: a writer lock that names its owner and dies with it; files checked against records."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys

import pytest

from facepcl._utils.atomic import atomic_write
from facepcl._utils.folders import FolderLock, FolderLockedError, check_file, file_record

HOLD = "import sys, time; from facepcl._utils.folders import FolderLock; FolderLock(sys.argv[1], 'index').acquire(); " \
       "print('held', flush=True); time.sleep(600)"


def test_a_second_writer_is_refused_with_the_owner_named_until_the_owner_is_killed(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(FolderLockedError, match=rf"another process is writing this index \(pid {proc.pid} "):
            FolderLock(tmp_path, "index").acquire()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    with FolderLock(tmp_path, "index") as lock:  # kill -9 released it: no stale lock to break by hand
        assert lock.held
    assert not lock.held


def test_check_file_finds_truncation_bit_flips_and_missing_files(tmp_path):
    path = tmp_path / "part.bin"
    path.write_bytes(bytes(range(256)) * 16)
    record = file_record(path)
    assert check_file(path, record) is None
    data = bytearray(path.read_bytes())
    data[100] ^= 1
    path.write_bytes(bytes(data))
    assert "SHA-256 differs" in check_file(path, record)
    path.write_bytes(bytes(data[:10]))
    assert check_file(path, record) == f"10 bytes, the manifest says {record['size']}"
    path.unlink()
    assert check_file(path, record) == "missing"


def test_a_failed_fsync_fails_the_write_and_commits_nothing(tmp_path, monkeypatch):
    def broken(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(OSError, match="Input/output"):
        atomic_write(tmp_path / "shard.parquet", lambda p: open(p, "wb").write(b"rows"))  # noqa: SIM115
    assert os.listdir(tmp_path) == []  # no file in place, no temporary left
