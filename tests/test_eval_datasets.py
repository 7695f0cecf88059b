"""Readers of the datasets' own on-disk formats, on small files written here in those formats."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from facepcl.eval import demo
from facepcl.eval.datasets import (
    DatasetFormatError,
    open_dataset,
    read_bu3dfe,
    read_cplfw,
    read_disfa,
    read_fer2013,
    read_fsanet_npz,
    read_image_folder,
    read_label_csv,
    read_lfw,
    read_rafdb,
    subject_folds,
)


def _png(path, value=(10, 20, 30), size=8):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(path)
    return path


# --- RAF-DB -------------------------------------------------------------------------------------------------


def test_rafdb_reads_list_labels_and_aligned_names(tmp_path):
    root = tmp_path / "basic"
    _png(root / "Image/aligned/train_00001_aligned.jpg")
    _png(root / "Image/aligned/train_00002_aligned.jpg")
    _png(root / "Image/aligned/test_0001_aligned.jpg")
    (root / "EmoLabel").mkdir(parents=True)
    (root / "EmoLabel/list_patition_label.txt").write_text("train_00001.jpg 1\ntrain_00002.jpg 7\n\ntest_0001.jpg 4\n")
    d = read_rafdb(root)
    assert d["train"].labels.tolist() == [0, 6]  # 1..7 -> 0..6
    assert d["test"].labels.tolist() == [3]
    assert d["train"].label_names[0] == "surprise"
    assert d["train"].label_names[6] == "neutral"
    assert d["train"].images.describe(1).endswith("train_00002_aligned.jpg")
    assert d["test"].images.read(0).shape == (8, 8, 3)


def test_rafdb_errors_name_file_and_line(tmp_path):
    root = tmp_path / "basic"
    (root / "Image/aligned").mkdir(parents=True)
    (root / "EmoLabel").mkdir(parents=True)
    lst = root / "EmoLabel/list_patition_label.txt"
    lst.write_text("train_00001.jpg 1\ntrain_00002.jpg 9\n")
    with pytest.raises(DatasetFormatError, match=r"list_patition_label.txt:2: malformed line 'train_00002.jpg 9'"):
        read_rafdb(root)
    lst.write_text("train_00001.jpg 1\ntest_0001.jpg 2\n")
    _png(root / "Image/aligned/test_0001_aligned.jpg")
    with pytest.raises(DatasetFormatError, match=r"1 of 1 listed images are missing: .*train_00001_aligned.jpg"):
        read_rafdb(root)
    with pytest.raises(DatasetFormatError, match="RAF-DB label list does not exist"):
        read_rafdb(tmp_path / "nowhere")


# --- FER-2013 -----------------------------------------------------------------------------------------------


def test_fer2013_decodes_pixel_strings_and_usage_splits(tmp_path):
    pix = np.arange(48 * 48) % 256
    rows = ["emotion,pixels,Usage",
            f"3,{' '.join(map(str, pix))},Training",
            f"0,{' '.join(['7'] * 2304)},PublicTest",
            f"6,{' '.join(['200'] * 2304)},PrivateTest"]
    (tmp_path / "fer2013.csv").write_text("\n".join(rows) + "\n")
    d = read_fer2013(tmp_path)
    assert set(d) == {"train", "val", "test"}
    img = d["train"].images.read(0)
    assert img.shape == (48, 48, 3)
    assert (img[..., 0] == img[..., 2]).all()  # gray replicated to RGB
    assert img[0, 5, 0] == 5
    assert img[1, 0, 0] == 48  # row-major
    assert d["train"].labels.tolist() == [3]
    assert d["train"].label_names[3] == "happy"
    assert d["test"].images.read(0)[0, 0, 0] == 200
    assert d["test"].images.describe(0) == "fer2013.csv line[4]"


def test_fer2013_malformed_rows(tmp_path):
    f = tmp_path / "fer2013.csv"
    f.write_text("emotion,pixels,Usage\n3,1 2 3,Training\n")
    with pytest.raises(DatasetFormatError, match=r"fer2013.csv:2: pixels hold 3 values"):
        read_fer2013(f)
    f.write_text("label,pixels,Usage\n")
    with pytest.raises(DatasetFormatError, match="expected the Kaggle header"):
        read_fer2013(f)


# --- LFW / CPLFW --------------------------------------------------------------------------------------------


def test_lfw_pairs_folds_and_image_names(tmp_path):
    root = demo.make_lfw(tmp_path / "lfw", sets=10, per=3, size=16)
    pairs = read_lfw(root)
    assert len(pairs) == 60
    assert np.bincount(pairs.folds).tolist() == [6] * 10
    # each set: 3 matched then 3 mismatched
    assert pairs.same[:6].tolist() == [True] * 3 + [False] * 3
    a, b = pairs.pairs[0]
    assert pairs.images.describe(a).endswith("lfw/Person_000/Person_000_0001.jpg")
    assert pairs.images.describe(b).endswith("lfw/Person_000/Person_000_0002.jpg")
    # images shared between pairs are read once
    assert len(pairs.images) == len({p for pair in pairs.pairs.tolist() for p in pair})


def test_lfw_wrong_line_and_count(tmp_path):
    root = demo.make_lfw(tmp_path / "lfw", sets=2, per=2, size=16)
    text = (root / "pairs.txt").read_text().splitlines()
    text[1] = "Person_000\t1\tPerson_001\t2"  # a mismatched line where a matched one belongs
    (root / "pairs.txt").write_text("\n".join(text))
    with pytest.raises(DatasetFormatError, match=r"pairs.txt:2: .* should be 'name n1 n2' \(matched\)"):
        read_lfw(root)
    (root / "pairs.txt").write_text("\n".join(["2\t2", *text[1:4]]))
    with pytest.raises(DatasetFormatError, match="has 3 pair lines, the header promises 2 sets x 4"):
        read_lfw(root)


def test_cplfw_two_lines_per_pair(tmp_path):
    root = demo.make_cplfw(tmp_path / "cplfw", folds=10, per=2, size=16)
    pairs = read_cplfw(root)
    assert len(pairs) == 40
    assert np.bincount(pairs.folds).tolist() == [4] * 10
    assert pairs.same[:4].tolist() == [True, True, False, False]
    lines = (root / "pairs_CPLFW.txt").read_text().splitlines()
    lines[1] = lines[1].replace(" 1", " 0")
    (root / "pairs_CPLFW.txt").write_text("\n".join(lines))
    with pytest.raises(DatasetFormatError, match=r"pairs_CPLFW.txt:2: the two lines of a pair disagree"):
        read_cplfw(root)


# --- FSA-Net npz --------------------------------------------------------------------------------------------


def test_fsanet_npz_bgr_to_rgb_filter_and_concat(tmp_path):
    img = np.zeros((3, 4, 4, 3), np.uint8)
    img[..., 0] = 255  # stored BGR: blue channel first
    pose = np.array([[10.0, -5.0, 2.0], [120.0, 0.0, 0.0], [-30.0, 99.0, -99.0]])
    np.savez(tmp_path / "AFW.npz", image=img, pose=pose, img_size=4)
    np.savez(tmp_path / "HELEN.npz", image=img[:1], pose=pose[:1], img_size=4)
    d = read_fsanet_npz(tmp_path)
    assert len(d) == 3
    assert d.info["dropped"] == 1  # the 120 degree face is left out, 99 is kept
    assert d.labels.dtype == np.float32
    assert d.label_names == ["yaw", "pitch", "roll"]
    np.testing.assert_allclose(d.labels[1], [-30, 99, -99])
    assert d.images.read(0)[0, 0].tolist() == [0, 0, 255]  # converted to RGB: blue
    raw = read_fsanet_npz(tmp_path / "AFW.npz", channel_order="RGB", max_abs_angle=None)
    assert len(raw) == 3
    assert raw.images.read(0)[0, 0].tolist() == [255, 0, 0]


def test_fsanet_npz_errors(tmp_path):
    np.savez(tmp_path / "bad.npz", image=np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(DatasetFormatError, match=r"bad.npz: lacks the 'image' and/or 'pose' array"):
        read_fsanet_npz(tmp_path / "bad.npz")
    np.savez(tmp_path / "bad.npz", image=np.zeros((2, 4, 4, 3), np.uint8), pose=np.zeros((3, 3)))
    with pytest.raises(DatasetFormatError, match=r"'pose' is \(3, 3\) for 2 images"):
        read_fsanet_npz(tmp_path / "bad.npz")
    (tmp_path / "trunc.npz").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(DatasetFormatError, match=r"trunc\.npz: not a readable \.npz"):
        read_fsanet_npz(tmp_path / "trunc.npz")


# --- DISFA --------------------------------------------------------------------------------------------------


def test_disfa_threshold_two_and_subjects(tmp_path):
    labels = tmp_path / "ActionUnit_Labels"
    aus = (1, 2, 4, 6, 9, 12, 25, 26)
    for sn in ("SN001", "SN002"):
        (labels / sn).mkdir(parents=True)
        for k, au in enumerate(aus):
            # frame 1 intensity k % 6, frame 2 intensity 1 everywhere
            (labels / sn / f"{sn}_au{au}.txt").write_text(f"1,{k % 6}\n2,1\n")
        for frame in (0, 1):  # frames extracted from 0
            _png(tmp_path / "frames" / sn / f"{frame:03d}.png")
    d = read_disfa(labels, tmp_path / "frames", frame_pattern="{subject}/{frame:03d}.png", frame_offset=-1)
    assert d.label_names == [f"AU{a}" for a in aus]
    # intensities 0,1,2,3,4,5,0,1 -> present at >= 2
    assert d.labels[0].tolist() == [0, 0, 1, 1, 1, 1, 0, 0]
    assert d.labels[1].tolist() == [0] * 8
    assert d.groups.tolist() == ["SN001", "SN001", "SN002", "SN002"]
    assert d.images.describe(3).endswith("frames/SN002/001.png")


def test_disfa_errors(tmp_path):
    labels, frames = demo.make_disfa(tmp_path, subjects=1, frames=3, size=8)
    with pytest.raises(DatasetFormatError, match=r"1 of 3 listed images are missing: .*SN001/0.jpg"):
        read_disfa(labels, frames, frame_offset=-1)
    (labels / "SN001/SN001_au4.txt").write_text("1,0\n2,7\n")
    with pytest.raises(DatasetFormatError, match=r"SN001_au4.txt:2: malformed line '2,7'"):
        read_disfa(labels, frames)
    (labels / "SN001/SN001_au4.txt").write_text("1,0\n2,1\n")
    with pytest.raises(DatasetFormatError, match=r"SN001_au4\.txt: lists other frames than SN001_au1\.txt"):
        read_disfa(labels, frames)
    (labels / "SN001/SN001_au4.txt").unlink()
    with pytest.raises(DatasetFormatError, match=r"SN001_au4\.txt: AU label file does not exist"):
        read_disfa(labels, frames)


def test_subject_folds_are_subject_exclusive():
    groups = np.array([f"SN{i:03d}" for i in range(1, 28) for _ in range(4)])
    folds = subject_folds(groups, 3)
    assert np.bincount(folds).tolist() == [36, 36, 36]
    for s in np.unique(groups):
        assert len(set(folds[groups == s])) == 1


# --- BU-3DFE, generic ---------------------------------------------------------------------------------------


def test_bu3dfe_label_column(tmp_path):
    for name in ("a.png", "b.png", "c.png"):
        _png(tmp_path / "img" / name)
    (tmp_path / "train_list.txt").write_text("img/a.png,3,10\nimg/b.png,5,20\n")
    (tmp_path / "test_list.txt").write_text("img/c.png,3,20\n")
    d = read_bu3dfe(tmp_path)
    assert d["train"].labels.tolist() == [0, 1]
    assert d["train"].label_names == ["10", "20"]
    assert d["test"].labels.tolist() == [1]
    e = read_bu3dfe(tmp_path, label_column=1)
    assert e["train"].label_names == ["3", "5"]
    assert e["test"].labels.tolist() == [0]
    (tmp_path / "test_list.txt").write_text("img/c.png;3;20\n")
    with pytest.raises(DatasetFormatError, match=r"test_list.txt:1: line 'img/c.png;3;20' has no integer field 2"):
        read_bu3dfe(tmp_path)


def test_image_folder_splits_share_classes(tmp_path):
    root = demo.make_image_folder(tmp_path / "mine", classes=("a", "b"), per_class=2, size=8)
    d = read_image_folder(root)
    assert set(d) == {"train", "test"}
    assert d["train"].label_names == ["a", "b"]
    assert d["train"].labels.tolist() == [0, 0, 1, 1]


def test_label_csv_tasks_and_errors(tmp_path):
    for n in ("x.png", "y.png", "z.png"):
        _png(tmp_path / n)
    (tmp_path / "c.csv").write_text("path,label,split\nx.png,happy,train\ny.png,sad,train\nz.png,happy,test\n")
    d = read_label_csv(tmp_path / "c.csv", "classification")
    assert d["train"].labels.tolist() == [0, 1]
    assert d["test"].labels.tolist() == [0]
    (tmp_path / "r.csv").write_text("path,yaw,pitch,roll\nx.png,1,2,3\ny.png,-4,5.5,6\n")
    r = read_label_csv(tmp_path / "r.csv", "regression")
    assert r["all"].labels.tolist() == [[1, 2, 3], [-4, 5.5, 6]]
    assert r["all"].label_names == ["yaw", "pitch", "roll"]
    (tmp_path / "m.csv").write_text("path,AU1,AU2\nx.png,1,2\n")
    with pytest.raises(DatasetFormatError, match=r"m.csv:2: labels \['1', '2'\] are not 0/1"):
        read_label_csv(tmp_path / "m.csv", "multilabel")
    (tmp_path / "n.csv").write_text("path,label\nmissing.png,a\n")
    with pytest.raises(DatasetFormatError, match="1 of 1 listed images are missing"):
        read_label_csv(tmp_path / "n.csv", "classification")


def test_open_dataset_checks_task_and_needs(tmp_path):
    with pytest.raises(ValueError, match="evaluated with --task fer, not pose"):
        open_dataset("rafdb", tmp_path, protocol="pose")
    with pytest.raises(ValueError, match="needs --test-data"):
        open_dataset("fsanet", tmp_path)
    with pytest.raises(ValueError, match="needs --frames"):
        open_dataset("disfa", tmp_path)
