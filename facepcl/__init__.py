"""facepcl: pretrained facial features from PCL (Pose-disentangled Contrastive Learning, CVPR 2023).

``facepcl.load`` gets a model, ``facepcl.embed`` turns images into per-face
face (F_f), pose (F_p) and trunk (F) embeddings, ``facepcl.similarity``
compares them, ``facepcl.transforms`` turns an aligned crop into the encoder's input.
"""

from . import _threads  # noqa: F401  (first: OpenMP reads its wait policy when torch loads)
from ._load import load
from ._save import push_to_hub, save_pretrained
from ._similarity import similarity
from ._transforms import Transform, transforms
from ._version import __version__
from .align import align_faces
from .config import DetectorConfig, PCLConfig, PreprocessConfig
from .convert import convert_checkpoint
from .detection import FaceDetector
from .errors import CheckpointError, FacePCLError, ImageLoadError, ModelLoadError, NoFaceError
from .io import load_image
from .model import PCLFeatures, PCLModel
from .pipeline import EmbeddingResult, FaceEmbedder, embed
from .registry import ModelInfo, list_models, register_model
from .results import Failure
from .search import FaceIndex

__all__ = [
    "CheckpointError",
    "DetectorConfig",
    "EmbeddingResult",
    "FaceDetector",
    "FaceEmbedder",
    "FaceIndex",
    "FacePCLError",
    "Failure",
    "ImageLoadError",
    "ModelInfo",
    "ModelLoadError",
    "NoFaceError",
    "PCLConfig",
    "PCLFeatures",
    "PCLModel",
    "PreprocessConfig",
    "Transform",
    "__version__",
    "align_faces",
    "convert_checkpoint",
    "embed",
    "list_models",
    "load",
    "load_image",
    "push_to_hub",
    "register_model",
    "save_pretrained",
    "similarity",
    "transforms",
]
