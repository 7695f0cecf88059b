"""Task heads on PCL features: linear probes, MLPs and full fine-tuning.

Inference (always importable): :class:`LinearHead` (the paper's probe),
:class:`BNLinearHead` (its BatchNorm variant for pose), :class:`MLPHead`,
:class:`TaskHead` + :class:`HeadSpec`, :func:`save_head`, :func:`load_head`,
:func:`push_head_to_hub`, :func:`attach_head`, :func:`predict_crops`.

Training (imported on first use, so inference never loads it):
:class:`FineTuner`, :class:`HeadTrainConfig`, :func:`fit_features`,
:func:`fit_pairs`. (:class:`HeadTrainConfig` configures head training;
:class:`facepcl.train.config.TrainConfig` configures pretraining.)
"""

from __future__ import annotations

import importlib
from typing import Any

from ._inputs import FEATURES, check_features, select_features
from ._io import HEAD_CONFIG, HEAD_WEIGHTS, head_dirname, list_heads, load_head, push_head_to_hub, save_head
from ._modules import HEAD_KINDS, BNLinearHead, LinearHead, MLPHead, build_head
from ._predict import attach_head, attached_heads, load_with_head, predict_crops, predict_features
from ._spec import TASKS, HeadPrediction, HeadSpec, TaskHead, postprocess

_TRAINING = {"FineTuner": "._finetune", "HeadTrainConfig": "._train", "FitResult": "._train",
             "fit_features": "._train", "fit_pairs": "._train", "task_metrics": "._train"}


def __getattr__(name: str) -> Any:
    if name in _TRAINING:
        return getattr(importlib.import_module(_TRAINING[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "FEATURES", "HEAD_CONFIG", "HEAD_KINDS", "HEAD_WEIGHTS", "TASKS", "BNLinearHead", "FineTuner", "FitResult",
    "HeadPrediction", "HeadSpec", "HeadTrainConfig", "LinearHead", "MLPHead", "TaskHead", "attach_head",
    "attached_heads", "build_head", "check_features", "fit_features", "fit_pairs", "head_dirname", "list_heads",
    "load_head", "load_with_head", "postprocess", "predict_crops", "predict_features",
    "push_head_to_hub", "save_head", "select_features",
    "task_metrics",
]
