"""300W-LP and AFLW2000 in the FSA-Net ``.npz`` format (head pose).

FSA-Net's ``TYY_create_db_type1.py`` writes one ``.npz`` per source folder
(300W-LP: ``AFW.npz``, ``AFW_Flip.npz``, ``HELEN.npz``, ... ; AFLW2000:
``AFLW2000.npz``) with::

    image     (N, 64, 64, 3) uint8, BGR (read with cv2.imread, loosely cropped
              around the 2D landmarks with a 0.6 margin, resized to 64x64)
    pose      (N, 3) float, [yaw, pitch, roll] in degrees
    img_size  scalar, 64

As the reference does, a folder is read as every ``*.npz`` in it (sorted by
name), and samples with any angle outside [-99, 99] degrees are dropped
(31 of AFLW2000's 2000 faces). Unlike the reference, which feeds the
BGR arrays to the network as they are, images are converted to RGB here by
default (the model expects RGB); ``channel_order="RGB"`` keeps the bytes
as stored, which reproduces the reference's input exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...heads.metrics import POSE_ANGLES
from ._base import ArrayImages, LabelledImages, files_key, format_error

MAX_ABS_ANGLE = 99.0


def read_fsanet_npz(path: str | Path, *, name: str | None = None, channel_order: str = "BGR",
                    max_abs_angle: float | None = MAX_ABS_ANGLE) -> LabelledImages:
    """Read one FSA-Net ``.npz`` file, or every ``*.npz`` in a folder.

    Args:
        path: A ``.npz`` file or a folder of them.
        name: Set name (default: the file or folder name).
        channel_order: Byte order of the stored images: "BGR" (FSA-Net's, the
            default) or "RGB" (stored bytes used as they are).
        max_abs_angle: Drop samples with any |angle| above this (degrees);
            None keeps all.

    Returns:
        A regression set with labels ``(N, 3)`` float32 [yaw, pitch, roll] in degrees.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.npz"))
        if not files:
            raise format_error(path, "folder holds no .npz file", "point at FSA-Net's .npz files (e.g. the "
                               "300W_LP folder of AFW.npz, HELEN.npz, ...) or one .npz file")
    elif path.is_file():
        files = [path]
    else:
        raise format_error(path, "does not exist", "pass an FSA-Net .npz file or a folder of them")
    images, poses = [], []
    for f in files:
        try:
            with np.load(f, allow_pickle=False) as z:
                keys = list(z.files)
                img = z["image"] if "image" in keys else None
                pose = z["pose"] if "pose" in keys else None
        except Exception as e:  # numpy raises OSError, ValueError, EOFError or zipfile.BadZipFile
            raise format_error(f, f"not a readable .npz ({e})", "the file is corrupt or truncated") from e
        if img is None or pose is None:
            raise format_error(f, f"lacks the 'image' and/or 'pose' array (keys: {keys})",
                               "expected FSA-Net's keys 'image' (N,H,W,3) uint8 and 'pose' (N,3)")
        if img.dtype != np.uint8 or img.ndim != 4 or img.shape[3] != 3:
            raise format_error(f, f"'image' is {img.dtype} {img.shape}", "expected uint8 (N, H, W, 3)")
        if pose.ndim != 2 or pose.shape != (len(img), 3):
            raise format_error(f, f"'pose' is {pose.shape} for {len(img)} images",
                               "expected (N, 3) [yaw, pitch, roll] in degrees")
        if not np.isfinite(pose).all():
            raise format_error(f, "'pose' holds NaN or infinite values", "regenerate the file")
        images.append(img)
        poses.append(pose.astype(np.float32))
    sizes = {im.shape[1:] for im in images}
    if len(sizes) != 1:
        raise format_error(path, f"files hold images of different sizes {sorted(sizes)}", "use one image size")
    image, pose = np.concatenate(images), np.concatenate(poses)
    index = np.arange(len(image))
    total = len(index)
    if max_abs_angle is not None:
        keep = np.abs(pose).max(1) <= max_abs_angle
        image, pose, index = image[keep], pose[keep], index[keep]
    src = ArrayImages(image, channel_order, path.name, files_key(files) + channel_order, index)
    return LabelledImages(name or path.stem, src, pose, "regression", list(POSE_ANGLES),
                          info={"files": [str(f) for f in files], "dropped": total - len(index)})
