"""One-to-one mapping between the official PCL checkpoint keys and ours.

The official checkpoint (github.com/DreamMr/PCL) stores ``ExpPoseModel``
wrapped in DataParallel, so every key starts with ``module.``. After that
prefix, keys differ from ours only by these prefixes; everything after them
(Sequential indices, ``g``/``theta``/``phi``, ``conv1``/``conv2``,
``weight``/``bias``/running stats) is identical.
"""

from __future__ import annotations

# (official prefix, facepcl prefix, component)
PREFIXES: tuple[tuple[str, str, str], ...] = (
    ("encoder.conv1.", "encoder.trunk.stem.", "encoder"),
    ("encoder.layer1.", "encoder.trunk.stage1.", "encoder"),
    ("encoder.layer2_1.", "encoder.trunk.stage2.", "encoder"),
    ("encoder.resblock1.", "encoder.trunk.res1.", "encoder"),
    ("encoder.resblock2.", "encoder.trunk.res2.", "encoder"),
    ("encoder.layer2_2.", "encoder.trunk.stage3.", "encoder"),
    ("encoder.layer3_1.", "encoder.trunk.stage4.", "encoder"),
    ("encoder.layer3_2_exp.", "encoder.face_branch.", "encoder"),
    ("encoder.layer3_2_pose.", "encoder.pose_branch.", "encoder"),
    ("exp_fc.", "face_head.", "face_head"),
    ("pose_fc.", "pose_head.", "pose_head"),
    ("decoder.fc.", "decoder.fc.", "decoder"),
    ("decoder.model.", "decoder.layers.", "decoder"),
)

OFFICIAL_WRAPPER = "module."


def official_to_ours(key: str) -> str | None:
    """Map an official key (without ``module.``) to ours; None if it has no counterpart."""
    for official, ours, _ in PREFIXES:
        if key.startswith(official):
            return ours + key[len(official):]
    return None


def ours_to_official(key: str) -> str:
    """Map one of our keys to the official name (without ``module.``)."""
    for official, ours, _ in PREFIXES:
        if key.startswith(ours):
            return official + key[len(ours):]
    raise KeyError(f"{key!r} has no official counterpart")


def component_of(key: str) -> str | None:
    """Which component (encoder, face_head, pose_head, decoder) one of our keys belongs to."""
    head = key.split(".", 1)[0]
    return head if head in ("encoder", "face_head", "pose_head", "decoder") else None
