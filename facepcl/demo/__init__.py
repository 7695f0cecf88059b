"""``facepcl demo``: a local web page (Gradio) to try a model on photos.

Upload or drop a photo to see the detected faces with boxes and landmarks,
their aligned crops, per-face embeddings to download, a pose-swap grid
between two chosen faces (models with a decoder), task-head predictions
(models with heads) and, with an index, each face's nearest neighbours.
Needs the ``demo`` extra: ``pip install "facepcl[demo]"``.
"""

from ._analyze import Analysis, DemoModel, draw_faces
from ._app import build_demo

__all__ = ["Analysis", "DemoModel", "build_demo", "draw_faces"]
