"""Pictures of what PCL learned: pose-swap grids and 2-D maps of embeddings.

- :func:`swap_grid` (``facepcl swap A.jpg B.jpg -o grid.png``): the decoder's
  reconstructions of face(A)+pose(A), face(A)+pose(B), face(B)+pose(A) and
  face(B)+pose(B), next to the aligned inputs. Needs a model with its decoder.
- :func:`plot_embeddings` (``facepcl plot OUT -o map.png``): the face, pose or
  trunk embeddings of a ``facepcl embed`` export in 2-D (PCA; t-SNE or UMAP
  when scikit-learn or umap-learn is installed), coloured by any column or
  label, with face thumbnails re-cropped from the source files.

- :func:`track_strips` (``facepcl plot --tracks``): for each face track of a
  video, thumbnails over time and its head angles and first pose component.

Rendering uses Pillow; maps use matplotlib instead when it is installed
(``pip install "facepcl[plot]"``), which adds .svg and .pdf output.
"""

from __future__ import annotations

import os
from typing import Any

from ._map import Colouring, EmbeddingMap, embedding_map
from ._project import Projection, available_methods, pca, project_2d
from ._render import Layout, choose_renderer, layout, render, save_map
from ._swap import SwapResult, decode_pairs, load_decoder_model, render_swap_grid, swap_faces, swap_grid
from ._tracks import track_strips

__all__ = [
    "Colouring",
    "EmbeddingMap",
    "Layout",
    "Projection",
    "SwapResult",
    "available_methods",
    "decode_pairs",
    "embedding_map",
    "layout",
    "load_decoder_model",
    "pca",
    "plot_embeddings",
    "project_2d",
    "render",
    "render_swap_grid",
    "swap_faces",
    "swap_grid",
    "track_strips",
]


def plot_embeddings(source: Any, output: str | os.PathLike | None = None, *, features: str = "face",
                    color_by: str | None = None, labels: str | os.PathLike | None = None, method: str = "auto",
                    thumbnails: bool = True, max_thumbnails: int = 150, thumb_size: int = 48,
                    size: tuple[int, int] = (1600, 1200), renderer: str = "auto", seed: int = 0,
                    normalize: bool = True, max_points: int | None = 10000, perplexity: float | None = None,
                    n_neighbors: int | None = None) -> tuple[EmbeddingMap, Layout]:
    """Draw a 2-D map of an export's embeddings, and save it if ``output`` is given.

    Args:
        source: The output folder of ``facepcl embed``, one of its ``.parquet`` files, or a ``pyarrow.Table``.
        output: Picture to write: .png, .jpg or .webp (and .svg, .pdf with matplotlib).
        features: "face" (F_f), "pose" (F_p) or "trunk" (F).
        color_by: Column to colour by (see :func:`embedding_map`).
        labels: CSV with a ``path`` column and label columns to colour by.
        method: "auto", "pca", "tsne" or "umap" (see :func:`project_2d`).
        thumbnails: Draw face thumbnails, re-cropped from the source files
            with the export's own alignment, where they are readable and do not overlap.
        max_thumbnails: At most this many thumbnails.
        thumb_size: Thumbnail side in pixels.
        size: Picture ``(width, height)`` in pixels.
        renderer: "auto" (matplotlib if installed, else Pillow), "matplotlib" or "pil".
        seed: Seed for sampling, projection and thumbnail choice.
        normalize: L2-normalise embeddings before projecting.
        max_points: Plot at most this many faces (seeded random sample; None: all).
        perplexity: t-SNE perplexity.
        n_neighbors: UMAP neighbours.

    Returns:
        ``(map, layout)``: the :class:`EmbeddingMap` (coordinates, colours,
        notes) and the :class:`Layout` (pixel positions, thumbnails, problems).

    Example:
        >>> from facepcl.viz import plot_embeddings
        >>> emap, lay = plot_embeddings("faces/", "map.png", features="pose", color_by="dirname")  # doctest: +SKIP
    """
    out = os.fspath(output) if output is not None else None
    chosen = choose_renderer(renderer, out)
    emap = embedding_map(source, features=features, color_by=color_by, labels=labels, method=method, seed=seed,
                         normalize=normalize, max_points=max_points, perplexity=perplexity, n_neighbors=n_neighbors)
    lay = layout(emap, size=size, thumbnails=thumbnails, max_thumbnails=max_thumbnails, thumb_size=thumb_size,
                 seed=seed)
    if out is not None:
        save_map(emap, out, lay, chosen)
    emap.notes.append(f"rendered with {chosen}")
    return emap, lay
