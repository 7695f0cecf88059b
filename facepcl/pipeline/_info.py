"""How a FaceEmbedder describes itself: provenance for results and exports, the path that ran, its repr."""

from __future__ import annotations

import dataclasses
from typing import Any

from .._utils.digest import encoder_digest
from .._utils.version import __version__
from ..io import images


class EmbedderInfo:
    """Mixin of :class:`facepcl.pipeline.FaceEmbedder`: reads its attributes, changes nothing."""

    def info(self) -> dict[str, Any]:
        """Provenance recorded with every result."""
        prov = getattr(self.model, "provenance", None) or {}
        accel = self.accel_info()
        return {
            "model_id": prov.get("model_id"), "revision": prov.get("revision"),
            "config_hash": prov.get("config_hash") or self.model.config.hash(),
            "crop_size": self.crop_size, "template": self.template.tolist(), "detect": self.detect,
            "detector": self.detector_option("name") if self.detect else None,
            "on_no_face": self.on_no_face, "dtype": accel["encoder"]["dtype"],
            "accel": accel, "facepcl_version": __version__,
            "decode": {"min_side": self.decode_min_side,
                       "reduce_above_pixels": images.reduce_above(self.mode == "fast")},
        }

    def provenance(self) -> dict[str, Any]:
        """Everything that decides the embeddings, as JSON-ready values (what ``facepcl embed`` stores).

        Builds the detector when ``detect`` is True.

        Returns:
            ``model_id``, ``revision``, ``config_hash``, ``encoder_sha256``
            (:mod:`facepcl._utils.digest`), ``model_name``, ``model_license``,
            ``facepcl_version``, ``preprocess``, ``crop_size``,
            ``input_size``, ``feature_dim``, ``dtype``, ``accel``,
            ``encoder_runtime`` (:class:`~facepcl.runtime._encoders.RuntimeChoice`:
            the runtime, how it was chosen, the measured seconds),
            ``detect``, ``detector`` (the detector's
            :meth:`~facepcl.detection.FaceDetector.settings`, None without
            detection), ``decode`` (how huge JPEGs are decoded),
            ``on_no_face`` and ``max_faces``.
        """
        info = self.info()
        config = self.model.config
        detector = self.detector.settings() if self.detect else None
        return {
            "model_id": info["model_id"], "revision": info["revision"], "config_hash": info["config_hash"],
            "encoder_sha256": encoder_digest(self.model), "model_name": config.name, "model_license": config.license,
            "facepcl_version": info["facepcl_version"], "preprocess": dataclasses.asdict(self.preprocess),
            "crop_size": self.crop_size, "input_size": config.input_size, "feature_dim": self.dim,
            "dtype": info["dtype"], "accel": info["accel"], "encoder_runtime": self._encoder.choice.describe(),
            "detect": self.detect, "detector": detector,
            "decode": info["decode"], "on_no_face": self.on_no_face,
            "max_faces": detector["max_faces"] if detector else None,
        }

    def accel_info(self) -> dict[str, Any]:
        """Which path ran.

        Returns:
            ``{"mode", "exact", "encoder": {dtype, channels_last, compile, runtime},
            "detector": {dtype, channels_last, compile, runtime, canvas_step,
            rescue_threshold} or None}``; ``exact`` is True when both networks
            ran the exact path.
        """
        detector = None
        if self.detect:
            det = self.detector
            detector = {**det.plan.describe(), "runtime": det.runtime, "canvas_step": det.canvas_step,
                        "rescue_threshold": det.rescue_threshold}
        return {"mode": self.mode, "exact": self.plan.exact and (detector is None or det.plan.exact),
                "encoder": self._encoder.describe(), "detector": detector}

    def __repr__(self) -> str:
        prov = getattr(self.model, "provenance", None) or {}
        name = prov.get("model_id") or self.model.config.name
        plan = "exact" if self.plan.exact else "fast"
        if self._encoder.resolved is None:  # a repr never measures
            encoder = f"{plan} (encoder_runtime={self.encoder_runtime!r}, chosen at first use)"
        else:
            enc = self._encoder.describe()
            layout = ", channels_last" if enc["channels_last"] else ""
            encoder = f"{plan} ({enc['runtime']}, {enc['dtype']}{layout})"
        if self.detect:
            opt = self.detector_option
            detection = (f"detect=True, detector={opt('name')!r}, det_threshold={opt('det_threshold')}, "
                         f"max_faces={opt('max_faces')}, min_face_size={opt('min_face_size')}")
        else:
            detection = "detect=False"
        return (f"FaceEmbedder(model={name!r}, device={str(self.device)!r}, mode={self.mode!r}, encoder={encoder}, "
                f"crop_size={self.crop_size}, dim={self.dim}, {detection}, on_no_face={self.on_no_face!r})")
