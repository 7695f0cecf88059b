"""Training data: folder layouts, per-sample seeding, sharding and resumable sampling."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from facepcl.errors import ImageLoadError
from facepcl.train.config import load_config
from facepcl.train.data import (
    FACE,
    POSE,
    REC,
    ImageFiles,
    PCLFrames,
    StepSampler,
    VideoTracks,
    build_loader,
    collate,
)

from ._train_helpers import make_video_tree


def test_video_tracks_index_identities_and_skip_empty(tmp_path, caplog) -> None:
    root = make_video_tree(tmp_path / "data", identities=3, videos=2, frames=2)
    (root / "id_empty" / "vid0").mkdir(parents=True)  # a video folder without frames
    (root / "notes.txt").write_text("not a folder")
    with caplog.at_level(logging.WARNING):
        src = VideoTracks(root)
    assert len(src) == 3
    assert "id_empty" in src.skipped
    assert "skipped" in caplog.text
    # a draw is a frame of a video of that identity; over many draws every video and frame appears
    seen = {src.pick(1, np.random.default_rng(s)) for s in range(60)}
    assert seen == {str(root / "id01" / f"vid{v}" / f"{f:04d}.png") for v in range(2) for f in range(2)}


def test_video_tracks_list_file_and_errors(tmp_path) -> None:
    root = make_video_tree(tmp_path / "data", identities=3, videos=1, frames=1)
    lst = tmp_path / "train.txt"
    lst.write_text("# identities\nid02\nid00\n")
    src = VideoTracks(root, lst)
    assert [p.rsplit("/", 1)[-1] for p, _ in src.items] == ["id02", "id00"]
    with pytest.raises(ValueError, match="no such folder"):
        VideoTracks(tmp_path / "missing")
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.png").write_bytes((root / "id00" / "vid0" / "0000.png").read_bytes())
    with pytest.raises(ValueError, match="layout=images"):
        VideoTracks(tmp_path / "flat")
    assert len(ImageFiles(tmp_path / "flat")) == 1
    assert len(ImageFiles(root)) == 3  # recursive


def test_samples_are_a_function_of_the_request(tmp_path) -> None:
    root = make_video_tree(tmp_path / "data", frames=4)
    cfg = load_config(None, [f"data.root={root}", "batch.pose_negatives=5"])
    ds = PCLFrames(VideoTracks(root), cfg)
    for stream in (REC, FACE, POSE):
        a, b = ds[(stream, 1, 7, 2, 3, 4)], ds[(stream, 1, 7, 2, 3, 4)]
        c = ds[(stream, 1, 7, 2, 3, 5)]  # another slot
        assert all(torch.equal(x, y) for x, y in zip(a[1:], b[1:], strict=True))
        assert not all(torch.equal(x, y) for x, y in zip(a[1:], c[1:], strict=True))
    rec, face, pose = ds[(REC, 0, 1, 1, 0, 0)], ds[(FACE, 0, 1, 1, 0, 0)], ds[(POSE, 0, 1, 1, 0, 0)]
    assert rec[1].shape == (64, 64, 3)
    assert rec[1].dtype == torch.uint8
    assert rec[2].shape == (2, 64, 64, 3)
    assert face[1].shape == (2, 64, 64, 3)
    assert face[2].shape == (2, 13)
    assert pose[1].shape == (64, 64, 3)
    assert pose[2].shape == (2 + 5, 13)
    batch = collate([rec, face, pose, rec])
    assert batch["rec_frames"].shape == (2, 64, 64, 3)
    assert batch["pose_params"].shape == (1, 7, 13)


def test_unreadable_frames_are_skipped_with_a_record(tmp_path, caplog) -> None:
    root = make_video_tree(tmp_path / "data", identities=1, videos=1, frames=2)
    bad = root / "id00" / "vid0" / "0001.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    cfg = load_config(None, [f"data.root={root}"])
    ds = PCLFrames(VideoTracks(root), cfg)
    good = root / "id00" / "vid0" / "0000.png"
    with caplog.at_level(logging.WARNING):
        frames = [ds[(REC, 0, 3, 1, 0, slot)][1] for slot in range(12)]
    assert "0001.png" in caplog.text  # the skip is recorded, naming the file
    first = frames[0]
    assert all(torch.equal(f, first) for f in frames)  # every sample fell back to the readable frame
    good.write_bytes(b"")
    with pytest.raises(ImageLoadError, match="unreadable"):
        ds[(REC, 0, 3, 1, 0, 99)]


@pytest.mark.parametrize("world", [2, 3])
def test_sampler_shards_the_global_batch_in_order(world: int) -> None:
    batches = (4, 5, 10)  # with 3 processes: 2+1+1, 2+2+1 and 4+3+3 (the paper's batch.pose=10)
    full = StepSampler(10, batches, iters_per_epoch=2, seed=5, world=1, rank=0, start=(1, 0), steps=4)
    shards = [StepSampler(10, batches, 2, 5, world=world, rank=r, start=(1, 0), steps=4) for r in range(world)]
    for whole, *parts in zip(full, *shards, strict=True):
        for stream in range(3):
            w = [q for q in whole if q[0] == stream]
            got = [q for part in parts for q in part if q[0] == stream]
            assert got == w  # the ranks hold consecutive blocks of the global batch, in rank order
            sizes = [sum(q[0] == stream for q in part) for part in parts]
            assert max(sizes) - min(sizes) <= 1
            assert sizes == sorted(sizes, reverse=True)
    with pytest.raises(ValueError, match="smaller than the 4 processes"):
        StepSampler(10, (4, 4, 3), 2, 5, world=4, rank=0, start=(1, 0), steps=1)


def test_sampler_epochs_are_permutations_and_resume_exactly() -> None:
    s = StepSampler(8, (4, 4, 2), iters_per_epoch=2, seed=1, world=1, rank=0, start=(1, 0), steps=6)
    steps = list(s)
    rec_epoch1 = [q[1] for st in steps[:2] for q in st if q[0] == REC]
    assert sorted(rec_epoch1) == list(range(8))  # one epoch visits each item once
    rec_epoch2 = [q[1] for st in steps[2:4] for q in st if q[0] == REC]
    assert rec_epoch2 != rec_epoch1  # a new order each epoch
    resumed = list(StepSampler(8, (4, 4, 2), 2, 1, world=1, rank=0, start=(2, 1), steps=3))
    assert resumed == steps[3:]
    # more demand than items: concatenated permutations
    small = StepSampler(3, (4, 4, 2), 2, 1, 1, 0, (1, 0), 2)
    assert len(small.order(REC, 1)) == 8
    assert set(small.order(REC, 1)) == {0, 1, 2}


@pytest.mark.slow
def test_loader_output_does_not_depend_on_workers(tmp_path) -> None:
    root = make_video_tree(tmp_path / "data")
    batches = {}
    for workers in (0, 2):
        cfg = load_config(None, [f"data.root={root}", "batch.rec=4", "batch.face=4", "batch.pose=2",
                                 "batch.pose_negatives=3", f"data.num_workers={workers}"])
        sampler = StepSampler(3, (4, 4, 2), 2, cfg.seed, 1, 0, (1, 0), 3)
        batches[workers] = list(build_loader(PCLFrames(VideoTracks(root), cfg), sampler, cfg, torch.device("cpu")))
    for a, b in zip(batches[0], batches[2], strict=True):
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_an_unreadable_identity_is_skipped_and_counted_and_the_run_goes_on(tmp_path, caplog) -> None:
    import shutil

    root = make_video_tree(tmp_path / "data", identities=4, videos=1, frames=2)
    for frame in (root / "id01" / "vid0").iterdir():  # an identity whose every frame is corrupt
        frame.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    cfg = load_config(None, [f"data.root={root}", "batch.rec=4", "batch.face=4", "batch.pose=4",
                             "data.num_workers=0"])
    src = VideoTracks(root)
    shutil.rmtree(root / "id02" / "vid0")  # a video folder removed after the index was built
    ds = PCLFrames(src, cfg)
    sampler = StepSampler(len(ds), (4, 4, 4), iters_per_epoch=3, seed=0, world=1, rank=0, start=(1, 0), steps=6)
    with caplog.at_level(logging.WARNING, logger="facepcl.train.data"):
        batches = list(build_loader(ds, sampler, cfg, torch.device("cpu")))
    assert len(batches) == 6
    assert all(b["rec_frames"].shape == (4, 64, 64, 3) for b in batches)
    skips = [r.getMessage() for r in caplog.records if "skipping an unreadable training frame" in r.getMessage()]
    assert any("id01" in m for m in skips)
    assert any("id02" in m and "cannot list" in m for m in skips)
    assert "(3 skipped so far)" in " ".join(skips)  # counted: two frames of id01, the folder of id02
