"""Reference-style baselines that the benchmarks measure facepcl against, written here.

Nothing in this file is imported from the authors' code (which has no
licence) or copied from it; it re-creates, from the facts recorded in
``pcl-reference.md``, how the reference computes, so that the benchmarks can
compare against it in the same process:

- :func:`reference_encoder_forward`: the PCL encoder in float32, eager,
  NCHW (the layers are facepcl's, which are the reference's layer for layer;
  the reference's attention additionally copies a transposed tensor, which
  this baseline skips, so if anything the baseline is a little faster than
  the reference);
- :class:`ReferenceStyleTraining`: one PCL iteration as the reference makes
  it: three separate forward/backward/Adam steps, float32, eager, NCHW, the
  whole encoder (trunk and both branches) on every call, the encoder called
  separately on frames and flips and on pose anchors and negatives, the
  face-loss negatives built by expanding a ``(2N, 2N-2, D)`` tensor, the
  orthogonality term through the ``D x D`` cross-correlation matrix,
  ``torch.optim.Adam`` with its plain per-tensor loop (not fused, not
  foreach), and the default allocator;
- :class:`NaiveFacexlibPipeline`: what a user would write with facexlib:
  read each image with OpenCV, detect with facexlib's ``RetinaFace.detect_faces``
  (one image per call, float32), warp each face with OpenCV's similarity
  estimate, and embed one face at a time in float32.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from facepcl.model import PCLModel


@torch.no_grad()
def reference_encoder_forward(model: PCLModel, x: torch.Tensor):
    """The encoder as the reference runs it at evaluation: float32, eager, NCHW, ``torch.no_grad``."""
    return model.encoder(x)


class ReferenceStyleTraining:
    """One PCL pretraining iteration computed the way the reference computes it.

    Args:
        model: A float32 :class:`~facepcl.PCLModel` with all four components,
            NCHW (contiguous), in train mode.
        lr: Adam learning rate.
        weight_decay: Adam weight decay (L2).
        temperature: Contrastive temperature.
        beta_alpha: Beta(a, a) mixing of negatives.
        seed: numpy seed of the mixing draws.
    """

    def __init__(self, model: PCLModel, lr: float = 1e-4, weight_decay: float = 1e-3, temperature: float = 0.07,
                 beta_alpha: float = 1.6, seed: int = 0) -> None:
        self.model = model
        self.opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay, foreach=False, fused=False)
        self.t = temperature
        self.alpha = beta_alpha
        self.rng = np.random.default_rng(seed)

    def _step(self, loss: torch.Tensor) -> float:
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return float(loss.detach())  # the reference logs loss.item() every step

    def iteration(self, inputs: dict[str, dict[str, torch.Tensor]]) -> list[float]:
        """The three steps on ``facepcl.train.augment.make_inputs`` tensors (made NCHW-contiguous here)."""
        rec, face, pose = inputs["rec"], inputs["face"], inputs["pose"]
        n = rec["s"].shape[0]
        noisy = rec["noisy"].contiguous()
        return [self.rec(noisy[:n], noisy[n:], rec["s"].contiguous(), rec["s_flip"].contiguous()),
                self.face(face["views"].contiguous()),
                self.pose(pose["anchors"].contiguous(), pose["negatives"].contiguous())]

    @staticmethod
    def _cross_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a = a - a.mean(dim=0, keepdim=True)
        b = b - b.mean(dim=0, keepdim=True)
        a = a / (a.norm(dim=1, keepdim=True).detach() + 1e-6)
        b = b / (b.norm(dim=1, keepdim=True).detach() + 1e-6)
        return (a.t() @ b).pow(2).mean()  # the D x D matrix

    def rec(self, noisy: torch.Tensor, noisy_flip: torch.Tensor, s: torch.Tensor, s_flip: torch.Tensor) -> float:
        """Step (a): reconstruction + orthogonality on ``(n, 3, 64, 64)`` frames."""
        m = self.model
        _, ff, fp = m.encoder(noisy)
        _, hf, hp = m.encoder(noisy_flip)
        dec = m.decoder
        r0 = dec(F.normalize(ff + hp, dim=1))
        r1 = dec(F.normalize(hf + fp, dim=1))
        r2 = dec(F.normalize(ff + fp, dim=1))
        r3 = dec(F.normalize(hf + hp, dim=1))
        rec = F.l1_loss(r1, s) + F.l1_loss(r0, s_flip) + F.l1_loss(r2, s) + F.l1_loss(r3, s_flip)
        orth = self._cross_correlation(ff, fp) + self._cross_correlation(hf, hp)
        return self._step(rec + orth)

    def _mix(self, neg: torch.Tensor) -> torch.Tensor:
        rows, slots = neg.shape[:2]
        lam = torch.from_numpy(self.rng.beta(self.alpha, self.alpha, (rows, slots))).float()
        lam = lam.to(neg.device)[:, :, None]
        perm = torch.randperm(slots, device=neg.device)
        return lam * neg + (1 - lam) * neg[:, perm]

    def _logits(self, z: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        b = z.shape[0]
        unit = F.normalize(z, dim=1)
        q, k = unit.chunk(2)
        pos = torch.cat([(q * k).sum(1), (k * q).sum(1)])[:, None]
        neg = torch.bmm(unit[:, None, :], F.normalize(neg, dim=2).transpose(1, 2)).view(b, -1)
        return torch.cat([pos, neg], dim=1) / self.t

    def face(self, views: torch.Tensor) -> float:
        """Step (b): face contrastive on ``(2N, 3, 64, 64)`` views (first views, then second views)."""
        m = self.model
        _, f, _ = m.encoder(views)
        z = m.face_head(f)
        b, d = z.shape
        frame = torch.arange(b, device=z.device) % (b // 2)
        others = frame[None, :] != frame[:, None]  # (2N, 2N): not the anchor's own frame
        neg = z.expand(b, b, d)[others].view(b, b - 2, d)  # the (2N, 2N-2, D) tensor
        logits = self._logits(z, self._mix(neg))
        return self._step(F.cross_entropy(logits, torch.zeros(b, dtype=torch.long, device=z.device)))

    def pose(self, anchors: torch.Tensor, negatives: torch.Tensor) -> float:
        """Step (c): pose contrastive on ``(2B, 3, 64, 64)`` anchors and ``(B*M, 3, 64, 64)`` flipped negatives."""
        m = self.model
        _, _, pa = m.encoder(anchors)
        za = m.pose_head(pa)
        _, _, pn = m.encoder(negatives)
        zn = m.pose_head(pn)
        b = anchors.shape[0] // 2
        groups = self._mix(zn.view(b, -1, zn.shape[1])).repeat(2, 1, 1)
        logits = self._logits(za, groups)
        return self._step(F.cross_entropy(logits, torch.zeros(2 * b, dtype=torch.long, device=za.device)))


def _similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    m, _ = cv2.estimateAffinePartial2D(src.astype(np.float32), dst.astype(np.float32), method=cv2.LMEDS)
    return m


class NaiveFacexlibPipeline:
    """Image files -> per-face embeddings, one image and one face at a time, as a facexlib user writes it.

    Detection runs at the same resolution as facepcl's (the image shrunk so
    its longer side is at most ``max_size``), so both sides do the same
    detection work; called on the full photo, facexlib's ``detect_faces``
    would be many times slower on large photos.

    Args:
        model: The PCL model (its float32 encoder is used as is, NCHW, on ``device``).
        template: ``(5, 2)`` template points of the model's crop, in pixels.
        crop_size: Crop side.
        max_size: Longer side detection works at.
        conf_threshold: Detector score threshold.
        nms_threshold: Detector NMS IoU.
        device: Where detector and encoder run.
    """

    def __init__(self, model: PCLModel, template: np.ndarray, crop_size: int = 64, max_size: int = 640,
                 conf_threshold: float = 0.8, nms_threshold: float = 0.4, device: torch.device | str = "cpu") -> None:
        import warnings

        from facexlib.detection.retinaface import RetinaFace
        from safetensors.torch import load_file

        from facepcl._utils.paths import BUNDLED_WEIGHTS

        # facexlib's RetinaFace network with the weights facepcl bundles (facexlib would download them).
        self.device = torch.device(device)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchvision's notices about facexlib's model constructors
            self.net = RetinaFace(network_name="mobile0.25", device=torch.device("cpu")).eval()
        self.net.load_state_dict(load_file(str(BUNDLED_WEIGHTS / "retinaface_mobile0.25.safetensors")), strict=True)
        self.net = self.net.to(self.device)
        self.net.device = self.device  # facexlib keeps its device and mean in plain attributes
        self.net.mean_tensor = self.net.mean_tensor.to(self.device)
        self.model = model
        self.template = np.asarray(template, np.float32)
        self.size = crop_size
        self.max_size = max_size
        self.conf, self.nms = conf_threshold, nms_threshold

    @torch.no_grad()
    def __call__(self, path: str) -> list[np.ndarray]:
        """Face features (``(2048,)`` float32 each) of every face in the image file ``path``."""
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        h, w = bgr.shape[:2]
        s = min(1.0, self.max_size / max(h, w))
        small = bgr if s == 1.0 else cv2.resize(bgr, (round(w * s), round(h * s)), interpolation=cv2.INTER_LINEAR)
        dets = self.net.detect_faces(small, conf_threshold=self.conf, nms_threshold=self.nms)
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        out = []
        for det in dets:
            kps = det[5:15].reshape(5, 2) / s
            crop = cv2.warpAffine(rgb, _similarity(kps, self.template), (self.size, self.size))
            x = torch.from_numpy(crop).to(self.device).permute(2, 0, 1)[None].float() / 255.0
            out.append(self.model.encoder(x).face[0].cpu().numpy())
        return out
