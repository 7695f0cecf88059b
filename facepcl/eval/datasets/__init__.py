"""Readers for the datasets' own on-disk formats.

Each reader checks its files and reports a missing file or malformed line
with the path (and line number) and the fix. See each module for the
format it reads.
"""

from ._base import (
    ArrayImages,
    DatasetFormatError,
    ImageSource,
    LabelledImages,
    PairList,
    PathImages,
    read_image_file,
)
from ._open import DATASETS, open_dataset, paper_key
from .bu3dfe import read_bu3dfe
from .disfa import read_disfa, subject_folds
from .fer2013 import read_fer2013
from .fsanet_npz import read_fsanet_npz
from .generic import read_image_folder, read_label_csv
from .pairs import read_cplfw, read_lfw
from .rafdb import read_rafdb

__all__ = [
    "DATASETS",
    "ArrayImages",
    "DatasetFormatError",
    "ImageSource",
    "LabelledImages",
    "PairList",
    "PathImages",
    "open_dataset",
    "paper_key",
    "read_bu3dfe",
    "read_cplfw",
    "read_disfa",
    "read_fer2013",
    "read_fsanet_npz",
    "read_image_file",
    "read_image_folder",
    "read_label_csv",
    "read_lfw",
    "read_rafdb",
    "subject_folds",
]
