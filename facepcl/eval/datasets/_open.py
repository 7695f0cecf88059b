"""Open a dataset by name: the one entry point the command line and the examples use."""

from __future__ import annotations

from pathlib import Path

from ._base import LabelledImages, PairList
from .bu3dfe import read_bu3dfe
from .disfa import AUS, read_disfa
from .fer2013 import read_fer2013
from .fsanet_npz import read_fsanet_npz
from .generic import read_image_folder, read_label_csv
from .pairs import read_cplfw, read_lfw
from .rafdb import read_rafdb

# dataset name -> the protocol it is evaluated with (None: the user's data, any task).
DATASETS: dict[str, str | None] = {
    "rafdb": "fer", "fer2013": "fer", "bu3dfe": "fer", "fsanet": "pose", "disfa": "au",
    "lfw": "verify", "cplfw": "verify", "calfw": "verify", "folder": None, "csv": None,
}
TASK_OF_PROTOCOL = {"fer": "classification", "au": "multilabel", "pose": "regression", "verify": "verification"}


def open_dataset(name: str, data: str | Path, *, protocol: str | None = None, test_data: str | Path | None = None,
                 images: str | Path | None = None, frames: str | Path | None = None,
                 frame_pattern: str = "{subject}/{frame}.jpg", frame_offset: int = 0, label_column: int = 2,
                 pairs_file: str | Path | None = None, channel_order: str = "BGR",
                 train_list: str = "train_list.txt", test_list: str = "test_list.txt"
                 ) -> dict[str, LabelledImages] | PairList:
    """Read a dataset in its own on-disk format.

    Args:
        name: One of :data:`DATASETS`.
        data: Its main path (folder or file; for "fsanet" the training
            ``.npz`` file or folder, for "disfa" the ``ActionUnit_Labels`` folder).
        protocol: "fer", "au", "pose" or "verify"; needed for "csv" (which
            task its columns are) and checked against the dataset's own.
        test_data: Separate test data ("fsanet": AFLW2000's ``.npz``;
            "folder"/"csv": a test folder or CSV when ``data`` has no test split).
        images: Image root (BU-3DFE lists, RAF-DB aligned folder, CSV paths).
        frames: DISFA's extracted frames folder.
        frame_pattern, frame_offset: DISFA frame names.
        label_column: BU-3DFE list field used as the label.
        pairs_file: LFW/CPLFW pairs file when not in the default place.
        channel_order: Byte order of FSA-Net ``.npz`` images ("BGR").
        train_list, test_list: BU-3DFE list files.

    Returns:
        ``{"train", "test"[, "val"]}`` (or DISFA's ``{"all"}``), or a :class:`PairList`.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {sorted(DATASETS)}")
    own = DATASETS[name]
    if own is not None and protocol is not None and protocol != own:
        raise ValueError(f"dataset {name!r} is evaluated with --task {own}, not {protocol}")
    protocol = protocol or own
    if name == "rafdb":
        return read_rafdb(data, image_dir=images)
    if name == "fer2013":
        return read_fer2013(data)
    if name == "bu3dfe":
        return read_bu3dfe(data, image_dir=images, label_column=label_column, train_list=train_list,
                           test_list=test_list)
    if name == "fsanet":
        if test_data is None:
            raise ValueError("dataset 'fsanet' needs --test-data (e.g. AFLW2000.npz) besides --data (300W-LP)")
        return {"train": read_fsanet_npz(data, name="train", channel_order=channel_order),
                "test": read_fsanet_npz(test_data, name="test", channel_order=channel_order)}
    if name == "disfa":
        if frames is None:
            raise ValueError("dataset 'disfa' needs --frames (the folder of extracted video frames)")
        return {"all": read_disfa(data, frames, frame_pattern=frame_pattern, frame_offset=frame_offset, aus=AUS)}
    if name == "lfw":
        return read_lfw(data, pairs_file=pairs_file, image_dir=images)
    if name in ("cplfw", "calfw"):
        return read_cplfw(data, pairs_file=pairs_file, image_dir=images, name=name)
    if protocol is None:
        raise ValueError(f"dataset {name!r} holds the user's own data: say which task with --task")
    task = TASK_OF_PROTOCOL[protocol]
    if task == "verification":
        raise ValueError("verification needs a pairs file (datasets 'lfw', 'cplfw' or 'calfw' formats)")
    if name == "folder":
        if task != "classification":
            raise ValueError("a folder per class holds classification data; use 'csv' for other tasks")
        splits = read_image_folder(data)
        extra = read_image_folder(test_data) if test_data is not None else None
    else:
        splits = read_label_csv(data, task, image_dir=images)
        extra = read_label_csv(test_data, task, image_dir=images) if test_data is not None else None
    return _with_test(splits, extra, data)


def _with_test(splits: dict[str, LabelledImages], extra: dict[str, LabelledImages] | None, data) -> dict:
    if extra is not None:
        test = extra.get("test") or extra.get("all")
        if test is None:
            raise ValueError(f"test data has no 'test' or unsplit rows (splits {sorted(extra)})")
        if test.task == "classification" and test.label_names != splits.get("train", splits.get("all")).label_names:
            raise ValueError("train and test data name different classes; give both the same class folders")
        splits = dict(splits)
        if "all" in splits:
            splits["train"] = splits.pop("all")
        splits["test"] = test
    if "all" in splits or "train" not in splits or "test" not in splits:
        raise ValueError(f"{data}: needs train and test splits (has {sorted(splits)}); use train/ and test/ "
                         "folders, a 'split' column, or pass --test-data")
    return splits


def paper_key(name: str, data: str | Path, test_data: str | Path | None) -> str:
    """Key of the paper's table row for this dataset ("aflw2000" for FSA-Net data tested on AFLW2000)."""
    if name == "fsanet":
        return "aflw2000" if test_data is not None and "aflw2000" in str(test_data).lower() else "fsanet"
    return name
