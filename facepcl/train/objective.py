"""The PCL objective: the network plus its losses, one forward per training step.

:class:`PCLObjective` is what DistributedDataParallel wraps. ``forward(stage,
...)`` runs one of the three steps of an iteration and returns its loss
(unweighted) and detached metrics:

- ``"rec"`` (a): encoder on the noisy frames and their noisy flips, the four
  swap reconstructions, L1 + orthogonality;
- ``"face"`` (b): trunk + face branch + face head on the 2N face views, the
  face contrastive loss;
- ``"pose"`` (c): trunk + pose branch on the 2B anchor views and the B*M
  flipped negatives, the pose head on each group separately (as the
  reference calls it twice, so BatchNorm sees them as two batches), the pose
  contrastive loss.

Networks run under autocast (when mixed precision is on); the losses run in
float32. Under torch.distributed every per-sample mean is weighted by the
rank's share of the global batch (:func:`facepcl.train.distributed.share`),
so batches split unevenly over the processes give the global objective;
the metrics (``rec``, ``face_acc``, ...) are weighted the same way, so their
mean over ranks is the global value.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from ..model import PCLModel
from . import distributed as D
from .config import RunConfig
from .losses import FaceContrastiveLoss, MixingDraw, OrthogonalityLoss, PoseContrastiveLoss, ReconstructionLoss

_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class PCLObjective(nn.Module):
    """Network + losses of PCL pretraining.

    Args:
        model: A :class:`facepcl.PCLModel` with all four components.
        cfg: Run config (loss settings).
        gather_distributed: Compute the contrastive and orthogonality losses
            over the global batch under torch.distributed.
        precision: "fp32", "bf16" or "fp16" (autocast dtype of the networks).
        device_type: "cpu" or "cuda" (for autocast).
    """

    def __init__(self, model: PCLModel, cfg: RunConfig, *, gather_distributed: bool = False,
                 precision: str = "fp32", device_type: str = "cpu") -> None:
        super().__init__()
        missing = [c for c in ("face_head", "pose_head", "decoder") if getattr(model, c) is None]
        if missing:
            raise ValueError(f"pretraining needs the full model; this one lacks {missing}")
        self.model = model
        self.rec_loss = ReconstructionLoss()
        self.orth_loss = OrthogonalityLoss(gather_distributed=gather_distributed)
        self.face_loss = FaceContrastiveLoss(cfg.loss.temperature, cfg.loss.beta_alpha, gather_distributed)
        self.pose_loss = PoseContrastiveLoss(cfg.loss.temperature, cfg.loss.beta_alpha, cfg.loss.pose_negatives,
                                             gather_distributed)
        self.include_orthogonality = cfg.loss.orthogonality
        self.precision = precision
        self.device_type = device_type

    def _autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=_AUTOCAST_DTYPES[self.precision])

    def forward(self, stage: str, **inputs) -> dict[str, torch.Tensor]:
        """Run one step; see :meth:`rec`, :meth:`face` and :meth:`pose` for the inputs."""
        if stage == "rec":
            return self.rec(**inputs)
        if stage == "face":
            return self.face(**inputs)
        if stage == "pose":
            return self.pose(**inputs)
        raise ValueError(f"unknown stage {stage!r}; expected rec, face or pose")

    def rec(self, noisy: torch.Tensor, s: torch.Tensor, s_flip: torch.Tensor,
            keep_images: int = 0) -> dict[str, torch.Tensor]:
        """Step (a): reconstruction + orthogonality.

        Args:
            noisy: ``(2n, 3, 64, 64)``: the noisy frames, then their noisy flips.
            s: ``(n, 3, 64, 64)`` clean frames in [0, 1].
            s_flip: ``(n, 3, 64, 64)`` their horizontal flips.
            keep_images: Also return a ``(k, 3, 64, 320)`` strip of the first
                k samples: s, s^, D(F_f^+F_p), D(F_f+F_p^), D(F_f+F_p), as the
                reference logs them.

        Returns:
            ``loss`` (L_rec + L_orth, or L_rec alone when the config leaves
            L_orth out), ``rec``, ``rec_terms`` (4,), ``orth``, maybe ``images``.
        """
        n = s.shape[0]
        m = self.model
        with self._autocast():
            feats = m.encoder(noisy)
            ff, fp = feats.face[:n], feats.pose[:n]
            hf, hp = feats.face[n:], feats.pose[n:]
            # Four decoder calls, as the reference makes them: BatchNorm sees four batches.
            recon = [m.reconstruct(hf, fp), m.reconstruct(ff, hp), m.reconstruct(ff, fp), m.reconstruct(hf, hp)]
        rec, terms = self.rec_loss(recon, s, s_flip)
        # Per-sample means weighted by this rank's share of the global batch; L_orth is global on every rank.
        weight = D.share(n, s.device)
        rec, terms = rec * weight, terms * weight
        orth = self.orth_loss(ff, fp) + self.orth_loss(hf, hp)
        out = {"loss": rec + orth if self.include_orthogonality else rec, "rec": rec.detach(),
               "rec_terms": terms.detach(), "orth": orth.detach()}
        if keep_images:
            k = min(keep_images, n)
            parts = [s[:k], s_flip[:k], recon[0][:k], recon[1][:k], recon[2][:k]]
            out["images"] = torch.cat([p.detach().float() for p in parts], dim=3)
        return out

    def face(self, views: torch.Tensor, mixing: MixingDraw | None = None) -> dict[str, torch.Tensor]:
        """Step (b): face contrastive.

        Args:
            views: ``(2n, 3, 64, 64)``: first views of n frames, then their second views.
            mixing: Beta mixing of the global problem (see :class:`FaceContrastiveLoss`).

        Returns:
            ``loss`` (unweighted), ``face`` (detached) and ``face_acc`` (top-1).
        """
        enc = self.model.encoder
        with self._autocast():
            z = self.model.project_face(enc.face_branch(enc.trunk(views)).flatten(1))
        loss, logits = self.face_loss(z, mixing, return_logits=True)
        return {"loss": loss, "face": loss.detach(), "face_acc": _top1(logits) * D.share(views.shape[0], z.device)}

    def pose(self, anchors: torch.Tensor, negatives: torch.Tensor,
             mixing: MixingDraw | None = None) -> dict[str, torch.Tensor]:
        """Step (c): pose contrastive.

        Args:
            anchors: ``(2b, 3, 64, 64)``: first views of b frames, then their second views.
            negatives: ``(b * M, 3, 64, 64)``: the M flipped copies of frame 0,
                then those of frame 1, ...
            mixing: Beta mixing of the global problem (see :class:`PoseContrastiveLoss`).

        Returns:
            ``loss`` (unweighted), ``pose`` (detached) and ``pose_acc`` (top-1).
        """
        b2 = anchors.shape[0]
        b = b2 // 2
        if negatives.shape[0] % b:
            raise ValueError(f"{negatives.shape[0]} negatives do not split into {b} frames")
        enc = self.model.encoder
        with self._autocast():
            # No BatchNorm in the encoder: one call on both sets is the same as two.
            p = enc.pose_branch(enc.trunk(torch.cat([anchors, negatives]))).flatten(1)
            za = self.model.project_pose(p[:b2])
            zn = self.model.project_pose(p[b2:])
        loss, logits = self.pose_loss(za, zn.view(b, negatives.shape[0] // b, -1), mixing, return_logits=True)
        return {"loss": loss, "pose": loss.detach(), "pose_acc": _top1(logits) * D.share(b, za.device)}


def _top1(logits: torch.Tensor) -> torch.Tensor:
    return (logits.detach().argmax(dim=1) == 0).float().mean()
