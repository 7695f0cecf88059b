"""How a FaceEmbedder describes itself: provenance for results, the path that ran, its repr."""

from __future__ import annotations

import warnings
from typing import Any

from .._utils.version import __version__
from ..io import images


class EmbedderInfo:
    """Mixin of :class:`facepcl.pipeline.FaceEmbedder`: reads its attributes, changes nothing."""

    def info(self) -> dict[str, Any]:
        """Provenance recorded with every result."""
        prov = getattr(self.model, "provenance", None) or {}
        det = self._detector
        return {
            "model_id": prov.get("model_id"), "revision": prov.get("revision"),
            "config_hash": prov.get("config_hash") or self.model.config.hash(),
            "crop_size": self.crop_size, "template": self.template.tolist(), "detect": self.detects,
            "detector": None if not self.detects else (det.name if det else self._detector_name
                                                     or self.model.config.detector.name),
            "on_no_face": self.on_no_face, "dtype": str(self.dtype).removeprefix("torch."),
            "accel": self.accel_info(), "facepcl_version": __version__,
            "decode": {"min_side": self.decode_min_side, "reduce_above_pixels": images.REDUCE_ABOVE_PIXELS},
        }

    def accel_info(self) -> dict[str, Any]:
        """Which path ran.

        Returns:
            ``{"fast", "exact", "encoder": {dtype, channels_last, compile},
            "detector": {dtype, channels_last, compile, runtime, canvas_step,
            rescue_threshold} or None}``; ``exact`` is True when both networks
            ran the exact path.
        """
        detector = None
        if self.detects:
            det = self.detector
            detector = {**det.plan.describe(), "runtime": det.runtime, "canvas_step": det.canvas_step,
                        "rescue_threshold": det.rescue_threshold}
        return {"fast": self.fast, "exact": self.plan.exact and (detector is None or det.plan.exact),
                "encoder": self.plan.describe(), "detector": detector}

    def __repr__(self) -> str:
        prov = getattr(self.model, "provenance", None) or {}
        name = prov.get("model_id") or self.model.config.name
        plan = "exact" if self.plan.exact else "fast"
        encoder = f"{plan} ({str(self.dtype).removeprefix('torch.')}" + (", channels_last" if self.plan.channels_last
                                                                       else "") + ")"
        if self.detects:
            det = self._detector
            threshold = (det.det_threshold if det is not None else self.det_threshold
                         if self.det_threshold is not None else self.model.config.detector.det_threshold)
            detector = det.name if det is not None else self._detector_name or self.model.config.detector.name
            detection = f"detect=True, detector={detector!r}, det_threshold={threshold}"
        else:
            detection = "detect=False"
        return (f"FaceEmbedder(model={name!r}, device={str(self.device)!r}, encoder={encoder}, "
                f"crop_size={self.crop_size}, dim={self.dim}, {detection}, max_faces={self.max_faces}, "
                f"min_face_size={self.min_face_size}, on_no_face={self.on_no_face!r})")

    @property
    def align(self) -> bool:
        """Deprecated name of :attr:`detects`."""
        warnings.warn("FaceEmbedder.align is deprecated, use FaceEmbedder.detects", DeprecationWarning, stacklevel=2)
        return self.detects
