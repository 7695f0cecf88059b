"""Pose swaps: decode the face code of one face with the pose code of another.

PCL's decoder D was trained to rebuild a frame from ``normalize(F_f + F_p)``,
and, with a frame and its mirror image, to rebuild the mirror from the
frame's face code and the mirror's pose code. So for two faces A and B,
``D(face A + pose B)`` should show A's identity and appearance in B's pose:
a picture of how well the two codes come apart. Only a trained decoder
shows this; with random weights the reconstructions are noise.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..errors import ModelLoadError
from ..model import PCLModel
from ._draw import font, resize_tile, save_image, shorten, text_size, to_uint8

#: Column titles of a swap grid (two lines each): the two aligned inputs, then the four reconstructions.
COLUMNS: tuple[str, ...] = ("A\n(aligned)", "B\n(aligned)", "face A\n+ pose A", "face A\n+ pose B",
                            "face B\n+ pose A", "face B\n+ pose B")
#: Which (face, pose) codes each reconstruction column decodes, as (source of face, source of pose).
RECONSTRUCTIONS: tuple[tuple[str, str], ...] = (("A", "A"), ("A", "B"), ("B", "A"), ("B", "B"))


@dataclass
class SwapResult:
    """Aligned faces of two images and the decoder's four reconstructions for each pair of faces.

    Attributes:
        pairs: ``(P, 2)`` int: the face index in image A and in image B of each row
            (faces are numbered by detector score, highest first, as in :func:`facepcl.embed`).
        aligned_a: ``(P, S, S, 3)`` uint8 RGB aligned crops of A's faces (what the encoder saw).
        aligned_b: ``(P, S, S, 3)`` uint8 RGB aligned crops of B's faces.
        reconstructions: ``(P, 4, 64, 64, 3)`` uint8 RGB decoder outputs, clamped to [0, 1]
            before conversion, in the order of :data:`RECONSTRUCTIONS`:
            D(face A + pose A), D(face A + pose B), D(face B + pose A), D(face B + pose B).
        names: How the two inputs are called in titles (file names for paths).
        info: Provenance of the embeddings (model id, revision, config hash, crop size, ...).
    """

    pairs: np.ndarray
    aligned_a: np.ndarray
    aligned_b: np.ndarray
    reconstructions: np.ndarray
    names: tuple[str, str] = ("A", "B")
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.pairs)

    def grid(self, *, scale: int = 3, resample: str = "bicubic", labels: bool = True) -> Image.Image:
        """The picture: one row per pair; see :func:`render_swap_grid`."""
        return render_swap_grid(self, scale=scale, resample=resample, labels=labels)


def load_decoder_model(model: PCLModel | str | os.PathLike | None = None, *,
                       device: str | torch.device | None = None, revision: str | None = None) -> PCLModel:
    """A model with its decoder: a :class:`~facepcl.PCLModel`, or a name / Hub id / folder to load.

    Raises:
        ModelLoadError: The model has no decoder (its ``config.json`` lists
            only other components, or the object was loaded without it).
    """
    if isinstance(model, PCLModel):
        if model.decoder is None:
            raise ModelLoadError(
                "this model has no decoder, which swap grids need: load it with "
                "facepcl.load(NAME, components=['encoder', 'decoder']) (the model's config.json must list "
                "'decoder' among its components)")
        if device is not None:
            from .._utils.device import resolve_device

            model.to(resolve_device(device))
        return model
    from ..config import PCLConfig
    from ..hub import default_model_name, load_folder, resolve

    name = default_model_name() if model is None else model
    resolved = resolve(name, revision=revision)
    try:
        config = PCLConfig.from_json_file(resolved.config_path)
    except ValueError as e:
        raise ModelLoadError(str(e)) from e
    if "decoder" not in config.components:
        raise ModelLoadError(
            f"model {resolved.model_id!r} has no decoder (its config.json lists components {config.components}); "
            "swap grids decode face + pose codes with PCL's decoder. Use a model saved with it: the bundled "
            "pcl-demo, a model exported by `facepcl train`, or an official checkpoint converted with its decoder")
    return load_folder(resolved, device=device, components=["encoder", "decoder"])


@torch.inference_mode()
def decode_pairs(model: PCLModel, face: np.ndarray | torch.Tensor, pose: np.ndarray | torch.Tensor) -> np.ndarray:
    """Decode face and pose codes, row by row: ``D(normalize(face[i] + pose[i]))``.

    Args:
        model: A model with its decoder (run in eval mode: its BatchNorm uses
            the stored statistics, so a row never depends on the others).
        face: ``(B, D)`` face features F_f.
        pose: ``(B, D)`` pose features F_p.

    Returns:
        ``(B, 64, 64, 3)`` uint8 RGB images (decoder output clamped to [0, 1]).
    """
    if model.decoder is None:
        raise ModelLoadError("this model has no decoder; load it with components=['encoder', 'decoder']")
    param = next(model.decoder.parameters())
    f = torch.as_tensor(np.asarray(face), dtype=param.dtype, device=param.device)
    p = torch.as_tensor(np.asarray(pose), dtype=param.dtype, device=param.device)
    was_training = model.training
    model.eval()
    try:
        out = model.reconstruct(f, p)
    finally:
        model.train(was_training)
    return to_uint8(out.float().permute(0, 2, 3, 1).cpu().numpy())


def swap_faces(a: Any, b: Any, model: PCLModel | str | os.PathLike | None = None, *,
               faces_a: Sequence[int] | str = (0,), faces_b: Sequence[int] | str = (0,),
               names: tuple[str, str] | None = None, **options: Any) -> SwapResult:
    """Detect and align the faces of two images and decode every face/pose combination.

    For each chosen pair of faces (A_i, B_j) the decoder rebuilds
    D(face A + pose A), D(face A + pose B), D(face B + pose A) and
    D(face B + pose B) from the encoder's face (F_f) and pose (F_p) codes.

    Args:
        a: Image A: anything :func:`facepcl.load_image` reads (path, bytes, PIL image, array, tensor).
        b: Image B.
        model: A :class:`~facepcl.PCLModel` with its decoder, or a name / Hub id /
            folder (loaded with ``components=["encoder", "decoder"]``); None:
            ``$FACEPCL_MODEL``, else the bundled ``pcl-demo``.
        faces_a: Indices of A's faces to use (0 = highest detector score), or "all".
        faces_b: Indices of B's faces, or "all". Rows are every (A_i, B_j) combination.
        names: Names of the inputs for titles (default: file names, else "A" and "B").
        **options: :class:`~facepcl.FaceEmbedder` and detector options, as
            :func:`facepcl.embed` takes them: ``device``, ``detect=False``
            when the inputs are already aligned face crops, ``mode``,
            ``det_threshold``, ... (``return_crops``, ``on_no_face`` and
            ``crop_size`` are set by this function).

    Returns:
        A :class:`SwapResult`; ``.grid()`` draws it.

    Raises:
        ModelLoadError: The model has no decoder.
        ImageLoadError: An input cannot be read.
        NoFaceError: An input has no face.
        ValueError: A face index does not exist in its image.
        TypeError: An unknown option, or one this function sets.
    """
    from ..pipeline import FaceEmbedder
    from ..pipeline._options import split_options

    fixed = sorted({"return_crops", "on_no_face", "crop_size"} & set(options))
    if fixed:
        raise TypeError(f"swap_faces: {fixed} are set by swap_faces itself; leave them out")
    options = split_options(options, FaceEmbedder.options(), "swap_faces")
    net = load_decoder_model(model, device=options.pop("device", None))
    embedder = FaceEmbedder(net, return_crops=True, on_no_face="error", crop_size=net.config.input_size, **options)
    if embedder.dim != net.decoder.fc.in_features:
        raise ValueError(f"the decoder takes {net.decoder.fc.in_features}-d codes but crops of "
                         f"{embedder.crop_size} px give {embedder.dim}-d features")
    names = names or (_name(a, "A"), _name(b, "B"))
    results = []
    for source, label, name in ((a, "A", names[0]), (b, "B", names[1])):
        result = embedder.embed(source)
        if result.failures:  # a single input raises instead; kept for iterables of one
            raise ValueError(f"image {label} ({name}): {result.failures[0].reason}")
        results.append(result)
    ra, rb = results
    ia = _pick(faces_a, len(ra), "A", names[0])
    ib = _pick(faces_b, len(rb), "B", names[1])
    pairs = np.array(list(itertools.product(ia, ib)), dtype=np.int64).reshape(-1, 2)
    fa, pa = ra.face[pairs[:, 0]], ra.pose[pairs[:, 0]]
    fb, pb = rb.face[pairs[:, 1]], rb.pose[pairs[:, 1]]
    codes = {"A": (fa, pa), "B": (fb, pb)}
    face = np.concatenate([codes[f][0] for f, _ in RECONSTRUCTIONS])
    pose = np.concatenate([codes[p][1] for _, p in RECONSTRUCTIONS])
    images = decode_pairs(net, face, pose)
    n = len(pairs)
    recon = images.reshape(len(RECONSTRUCTIONS), n, *images.shape[1:]).transpose(1, 0, 2, 3, 4)
    info = dict(ra.info)
    return SwapResult(pairs=pairs, aligned_a=ra.crops[pairs[:, 0]], aligned_b=rb.crops[pairs[:, 1]],
                      reconstructions=np.ascontiguousarray(recon), names=tuple(names), info=info)


def render_swap_grid(swaps: SwapResult, *, scale: int = 3, resample: str = "bicubic",
                     labels: bool = True) -> Image.Image:
    """Draw a :class:`SwapResult` as one picture.

    Columns: aligned A, aligned B, D(fA+pA), D(fA+pB), D(fB+pA), D(fB+pB);
    one row per pair of faces. Every tile is ``64 * scale`` pixels.

    Args:
        swaps: What :func:`swap_faces` returned.
        scale: Enlargement of the 64 px tiles (1 to 16).
        resample: "bicubic" (smooth) or "nearest" (the real pixels), or "bilinear" / "lanczos".
        labels: Draw the title, column titles and (for several rows) row titles.

    Returns:
        An RGB PIL image.
    """
    if not 1 <= int(scale) <= 16:
        raise ValueError(f"scale must be between 1 and 16, got {scale}")
    tile = 64 * int(scale)
    gap, block_gap, margin = max(2, tile // 32), max(8, tile // 8), max(8, tile // 16)
    n = len(swaps)
    fnt = font(max(11, tile // 11))
    small = font(max(10, tile // 14))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    row_titles = [f"A face {i}\nB face {j}" for i, j in swaps.pairs] if labels and n > 1 else []
    left = (max(text_size(probe, t, fnt)[0] for t in row_titles) + margin) if row_titles else 0
    header_h = max(text_size(probe, c, fnt)[1] for c in COLUMNS) + gap * 2 if labels else 0
    title = ""
    if labels:
        model = swaps.info.get("model_id") or "model"
        title = f"A: {shorten(swaps.names[0], 40)}    B: {shorten(swaps.names[1], 40)}    ({shorten(str(model), 40)})"
    title_h = text_size(probe, title, small)[1] + margin if title else 0
    span_h = text_size(probe, "reconstructions", small)[1] + gap if labels else 0
    width = margin * 2 + left + 6 * tile + 4 * gap + block_gap
    height = margin * 2 + title_h + span_h + header_h + n * tile + (n - 1) * gap
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    xs = [margin + left + k * (tile + gap) + (block_gap - gap if k >= 2 else 0) for k in range(6)]
    y0 = margin + title_h + span_h + header_h
    if labels:
        draw.text((margin, margin), title, fill=(0, 0, 0), font=small)
        # A bracket over the four reconstruction columns says what they are.
        ys = margin + title_h
        text = "decoder reconstructions D(normalize(face + pose))"
        tw, _ = text_size(draw, text, small)
        x_mid = (xs[2] + xs[5] + tile) // 2
        draw.text((x_mid - tw // 2, ys), text, fill=(80, 80, 80), font=small)
        draw.line([xs[2], ys + span_h - gap // 2, xs[5] + tile, ys + span_h - gap // 2], fill=(160, 160, 160), width=1)
        for x, col in zip(xs, COLUMNS, strict=True):
            cw, _ = text_size(draw, col, fnt)
            draw.multiline_text((x + (tile - cw) // 2, margin + title_h + span_h), col, fill=(0, 0, 0), font=fnt,
                                align="center", spacing=2)
    for r in range(n):
        y = y0 + r * (tile + gap)
        tiles = [swaps.aligned_a[r], swaps.aligned_b[r], *swaps.reconstructions[r]]
        for x, t in zip(xs, tiles, strict=True):
            canvas.paste(resize_tile(t, tile, resample), (x, y))
        if row_titles:
            th = text_size(draw, row_titles[r], fnt)[1]
            draw.multiline_text((margin, y + (tile - th) // 2), row_titles[r], fill=(0, 0, 0), font=fnt, spacing=2)
    return canvas


def swap_grid(a: Any, b: Any, model: PCLModel | str | os.PathLike | None = None, *, output: str | None = None,
              scale: int = 3, resample: str = "bicubic", labels: bool = True, **options: Any) -> Image.Image:
    """The swap grid of two images in one call: :func:`swap_faces`, then :func:`render_swap_grid`.

    Args:
        a: Image A (path, bytes, PIL image, array or tensor).
        b: Image B.
        model: A model with its decoder, or a name / Hub id / folder (None: the default model).
        output: If given, also save the picture there (format from the extension: .png, .jpg, .webp).
        scale: Enlargement of the 64 px tiles.
        resample: "bicubic" or "nearest" (or "bilinear", "lanczos").
        labels: Draw titles.
        **options: More :func:`swap_faces` options: ``faces_a``, ``faces_b``,
            ``device``, ``detect``, ``det_threshold``, ``names``.

    Returns:
        The picture, an RGB PIL image.

    Example:
        >>> import facepcl.viz
        >>> facepcl.viz.swap_grid("a.jpg", "b.jpg", output="grid.png")  # doctest: +SKIP
    """
    image = swap_faces(a, b, model, **options).grid(scale=scale, resample=resample, labels=labels)
    if output is not None:
        save_image(image, output, "swap grid")
    return image


def _name(source: Any, default: str) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.path.basename(os.fspath(source)) or default
    return default


def _pick(which: Sequence[int] | str, count: int, label: str, name: str) -> list[int]:
    if isinstance(which, str):
        if which != "all":
            raise ValueError(f"faces_{label.lower()} must be a list of face indices or 'all', got {which!r}")
        return list(range(count))
    picked = [int(i) for i in which]
    if not picked:
        raise ValueError(f"no face of image {label} chosen; pass face indices (0 = highest detector score) or 'all'")
    bad = [i for i in picked if not 0 <= i < count]
    if bad:
        raise ValueError(f"image {label} ({name}) has {count} face{'s' * (count != 1)} (indices 0 to {count - 1}); "
                         f"face {bad[0]} does not exist")
    return picked
