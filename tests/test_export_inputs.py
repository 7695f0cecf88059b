"""Input enumeration of `facepcl embed`: order, folders, globs, @lists, rank slices, streaming."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from facepcl.io import inputs as _inputs
from facepcl.io.inputs import ListingInterrupted, check_arguments, iter_inputs, select


def touch(root: Path, *names: str) -> None:
    for name in names:
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")


@pytest.fixture()
def tree(tmp_path: Path, monkeypatch) -> Path:
    touch(tmp_path, "data/b.jpg", "data/a.PNG", "data/c.txt", "data/.hidden.jpg", "data/sub/z.mp4",
          "data/sub/deeper/y.webp", "data/.git/x.jpg", "data/aa/m.jpeg", "other/q.jpg", "other/r.mov")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def paths(args) -> list[str]:
    return [it.path for it in iter_inputs(args)]


def test_folder_is_walked_recursively_in_sorted_order(tree) -> None:
    got = paths(["data"])
    # sorted by name at every level, folders in place; hidden names and non-media files skipped
    assert got == ["data/a.PNG", "data/aa/m.jpeg", "data/b.jpg", "data/sub/deeper/y.webp", "data/sub/z.mp4"]
    items = list(iter_inputs(["data"]))
    assert [it.index for it in items] == list(range(5))
    assert [it.kind for it in items] == ["image", "image", "image", "image", "video"]


def test_explicit_files_keep_any_extension_and_missing_paths_stay(tree) -> None:
    got = list(iter_inputs(["data/c.txt", "nope.jpg", "other"]))
    assert [it.path for it in got] == ["data/c.txt", "nope.jpg", "other/q.jpg", "other/r.mov"]
    assert [it.kind for it in got] == ["image", "image", "image", "video"]


def test_globs(tree) -> None:
    assert paths(["data/*.jpg"]) == ["data/b.jpg"]
    assert paths(["data/?.*"]) == ["data/a.PNG", "data/b.jpg"]  # c.txt matches but is not media
    assert paths(["data/**/*.jp*g"]) == ["data/b.jpg", "data/aa/m.jpeg"]
    assert paths(["data/**"]) == paths(["data"])
    assert paths(["*/s[u]b/*"]) == ["data/sub/z.mp4"]
    assert paths(["data/**/**/y.webp"]) == ["data/sub/deeper/y.webp"]  # no duplicate from repeated **
    assert paths([str(tree / "other" / "*")]) == [str(tree / "other" / "q.jpg"), str(tree / "other" / "r.mov")]
    assert paths(["nothing/*.jpg"]) == []


def test_list_file(tree) -> None:
    lists = tree / "lists"
    lists.mkdir()
    (lists / "l.txt").write_text("# a comment\n\n../data/b.jpg\n  ../other  \n" + str(tree / "data/a.PNG") + "\n"
                                 "../data/sub/*.mp4\n")
    assert paths(["@lists/l.txt"]) == ["lists/../data/b.jpg", "lists/../other/q.jpg", "lists/../other/r.mov",
                                       str(tree / "data/a.PNG"), "lists/../data/sub/z.mp4"]
    with pytest.raises(FileNotFoundError, match=r"missing\.txt"):
        check_arguments(["@missing.txt"])
    check_arguments(["@lists/l.txt", "data"])


def test_digest_depends_on_every_path_before(tree) -> None:
    a = list(iter_inputs(["data", "other"]))
    b = list(iter_inputs(["data", "other"]))
    assert [x.digest for x in a] == [x.digest for x in b]
    touch(tree, "data/a0.jpg")  # a new file early in the order
    c = list(iter_inputs(["data", "other"]))
    assert c[0].digest == a[0].digest
    assert c[1].path == "data/a0.jpg"
    assert all(x.digest != y.digest for x, y in zip(a[1:], c[2:], strict=False))
    assert len({x.digest for x in a}) == len(a)


def test_rank_slices_are_disjoint_and_cover_everything(tree) -> None:
    everything = list(iter_inputs(["data", "other"]))
    for world in (1, 2, 3):
        slices = [list(select(iter_inputs(["data", "other"]), r, world)) for r in range(world)]
        got = sorted((it for s in slices for it in s), key=lambda it: it.index)
        assert got == everything
        for r, s in enumerate(slices):
            assert all(it.index % world == r for it in s)


def test_symlink_loop_is_walked_once(tmp_path: Path) -> None:
    touch(tmp_path, "d/x.jpg")
    os.symlink(tmp_path / "d", tmp_path / "d" / "loop")
    assert paths([str(tmp_path / "d")]) == [str(tmp_path / "d" / "x.jpg")]


def test_unreadable_folder_becomes_a_recorded_input(tmp_path: Path, monkeypatch) -> None:
    touch(tmp_path, "d/locked/x.jpg", "d/y.jpg")
    real = os.scandir

    def scandir(path="."):
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(_inputs.os, "scandir", scandir)
    got = list(iter_inputs([str(tmp_path / "d")]))
    assert [it.path for it in got] == [str(tmp_path / "d" / "locked"), str(tmp_path / "d" / "y.jpg")]
    assert "cannot list the folder (Permission denied)" in got[0].error
    assert got[1].error is None


def test_enumeration_streams_one_folder_at_a_time(tmp_path: Path, monkeypatch) -> None:
    for i in range(5):
        touch(tmp_path, f"f{i}/img.jpg")
    listed = []
    real = _inputs._listing

    def spy(folder):
        listed.append(folder)
        return real(folder)

    monkeypatch.setattr(_inputs, "_listing", spy)
    stream = iter_inputs([str(tmp_path)])
    first = next(stream)
    assert first.path.endswith("f0/img.jpg")
    assert len(listed) == 2  # the root and f0 only: later folders are listed when the stream reaches them
    assert len(list(stream)) == 4
    assert len(listed) == 6


def test_list_file_is_read_lazily(tmp_path: Path) -> None:
    big = tmp_path / "big.txt"
    with open(big, "w") as f:
        for i in range(100_000):
            f.write(f"img{i:06d}.jpg\n")
    stream = iter_inputs([f"@{big}"])
    first = next(stream)
    assert first.path == str(tmp_path / "img000000.jpg")
    assert first.index == 0
    assert sum(1 for _ in stream) == 99_999


def test_a_fan_out_of_symlinks_to_one_file_lists_it_once(tmp_path: Path) -> None:
    touch(tmp_path, "d/m.jpg", "other/n.jpg")
    for i in range(64):  # links sorting before and after the real name, in the folder and beside it
        os.symlink(tmp_path / "d" / "m.jpg", tmp_path / "d" / f"{'a' if i % 2 else 'z'}{i:03d}.jpg")
        os.symlink(tmp_path / "other" / "n.jpg", tmp_path / "d" / f"n{i:03d}.jpg")
    got = paths([str(tmp_path / "d"), str(tmp_path / "other")])
    # n.jpg is reached first through a link (its folder is walked later), then never again
    assert got == [str(tmp_path / "d" / "m.jpg"), str(tmp_path / "d" / "n000.jpg")]
    assert paths([str(tmp_path / "d" / "*.jpg")]) == got


def test_folders_reached_by_several_links_are_walked_once(tmp_path: Path) -> None:
    touch(tmp_path, "real/x.jpg", "real/sub/y.jpg")
    for i in range(20):
        os.symlink(tmp_path / "real", tmp_path / f"link{i:02d}")
    os.symlink(tmp_path, tmp_path / "real" / "sub" / "up")  # a loop through the root
    got = paths([str(tmp_path)])
    # the first link reaches the folder first (sorted names); each file comes once
    assert got == [str(tmp_path / "link00" / "sub" / "y.jpg"), str(tmp_path / "link00" / "x.jpg")]


def test_a_set_stop_event_ends_the_listing(tmp_path: Path) -> None:
    touch(tmp_path, "a/x.jpg", "b/y.jpg")
    stop = threading.Event()
    stream = iter_inputs([str(tmp_path)], stop=stop)
    assert next(stream).path.endswith("x.jpg")
    stop.set()
    with pytest.raises(ListingInterrupted):
        next(stream)


def test_an_input_list_that_is_a_device_is_not_a_regular_file() -> None:
    with pytest.raises(ValueError, match=r"'/dev/zero' .* is not a regular file \(it is a character device\)"):
        check_arguments(["@/dev/zero"])


def test_a_device_as_input_list_is_recorded_when_listed_directly() -> None:
    (item,) = iter_inputs(["@/dev/zero"])  # never read: it would never end
    assert item.path == "/dev/zero"
    assert "not a regular file (it is a character device)" in item.error
