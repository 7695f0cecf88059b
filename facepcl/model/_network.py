"""The PCL network: trunk, face and pose branches, projection heads, decoder.

Layer for layer the network of Liu et al., "Pose-disentangled Contrastive
Learning for Self-supervised Facial Representation" (CVPR 2023), as the
authors' code builds it (see ``docs/architecture.md`` for the table and
:mod:`facepcl.model._keymap` for the one-to-one mapping onto the official
checkpoint's key names). "face" here is the reference's "exp" (the
pose-unrelated branch).

Inputs are RGB images in [0, 1], shape ``(B, 3, H, W)``. The encoder is fully
convolutional: each of its four stride-2 convolutions maps n pixels to
ceil(n/2), so every feature map is ``128 x ceil(H/16) x ceil(W/16)``.
"""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..config import PCLConfig

_SLOPE = 0.1  # every activation of the encoder is LeakyReLU(0.1)


class PCLFeatures(NamedTuple):
    """Flattened encoder outputs, each ``(B, 128 * ceil(H/16) * ceil(W/16))``.

    Attributes:
        trunk: F, the shared trunk feature (the one the paper's linear probes use).
        face: F_f, the pose-unrelated face feature.
        pose: F_p, the pose feature.
    """

    trunk: torch.Tensor
    face: torch.Tensor
    pose: torch.Tensor


def _conv(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride, k // 2, bias=True)


def _act() -> nn.LeakyReLU:
    return nn.LeakyReLU(_SLOPE)


class ChannelAttention(nn.Module):
    """Channel self-attention of the PCL/FaceCycle trunk.

    With ``N = H*W``: ``theta = softmax_N(theta(x))``, ``phi = phi(x)``,
    ``sim = phi @ theta^T`` (B x C x C), ``gy = softmax_C(g(x))``;
    output ``LeakyReLU(0.1)(x + sim @ gy)``.

    Args:
        channels: C, input and output channels.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.g = nn.Conv2d(channels, channels, 1)
        self.theta = nn.Conv2d(channels, channels, 1)
        self.phi = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``, in the memory format of ``x``."""
        b, c, h, w = x.shape
        if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
            return self._forward_channels_last(x)
        theta = torch.softmax(self.theta(x).reshape(b, c, h * w), dim=-1)
        phi = self.phi(x).reshape(b, c, h * w)
        gy = torch.softmax(self.g(x).reshape(b, c, h * w), dim=1)
        similarity = torch.bmm(phi, theta.transpose(1, 2))
        attention = torch.bmm(similarity, gy).reshape(b, c, h, w)
        return F.leaky_relu(x + attention, _SLOPE)

    def _forward_channels_last(self, x: torch.Tensor) -> torch.Tensor:
        # The same function on the transposed (B, N, C) views that a channels_last tensor already is: the
        # NCHW formulation's reshapes would copy every map (a tenth of the fast path's time at 64 px).
        b, c, h, w = x.shape

        def tokens(y: torch.Tensor) -> torch.Tensor:
            return y.permute(0, 2, 3, 1).reshape(b, h * w, c)

        theta = torch.softmax(tokens(self.theta(x)), dim=1)
        phi = tokens(self.phi(x))
        gy = torch.softmax(tokens(self.g(x)), dim=2)
        similarity = torch.bmm(phi.transpose(1, 2), theta)  # (B, C, C), as phi @ theta^T above
        attention = torch.bmm(gy, similarity.transpose(1, 2))  # (B, N, C): (similarity @ gy)^T
        return F.leaky_relu(x + attention.reshape(b, h, w, c).permute(0, 3, 1, 2), _SLOPE)


class ResBlock(nn.Module):
    """Two 3x3 convolutions with an identity shortcut: ``act(x + conv2(act(conv1(x))))``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = _conv(channels, channels)
        self.conv2 = _conv(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(F.leaky_relu(self.conv1(x), _SLOPE))
        return F.leaky_relu(out + x, _SLOPE)


def _pair(cin: int, cmid: int, cout: int, stride: int = 1, attention: bool = False) -> nn.Sequential:
    # Indices match the reference's nn.Sequential so keys map by prefix alone.
    layers: list[nn.Module] = [_conv(cin, cmid, 3, stride), _act()]
    if attention:
        layers.append(ChannelAttention(cmid))
    layers += [_conv(cmid, cout), _act()]
    return nn.Sequential(*layers)


class PCLTrunk(nn.Module):
    """The shared trunk: ``(B, 3, H, W) -> F`` of shape ``(B, 128, ceil(H/16), ceil(W/16))``."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(_conv(3, 64, 7, 2), _act(), _conv(64, 64), _act())
        self.stage1 = _pair(64, 64, 64, attention=True)
        self.stage2 = _pair(64, 128, 128, stride=2, attention=True)
        self.res1 = ResBlock(128)
        self.res2 = ResBlock(128)
        self.stage3 = _pair(128, 128, 128, stride=2)
        self.stage4 = _pair(128, 256, 128, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage1(self.stem(x))
        x = self.res2(self.res1(self.stage2(x)))
        return self.stage4(self.stage3(x))


class PCLEncoder(nn.Module):
    """Trunk plus the face (F_f) and pose (F_p) branches.

    Weights are initialised as the reference does: convolutions from
    N(0, 2 / (k*k*C_out)), biases zero.
    """

    def __init__(self) -> None:
        super().__init__()
        self.trunk = PCLTrunk()
        self.face_branch = _pair(128, 128, 128)
        self.pose_branch = _pair(128, 128, 128)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> PCLFeatures:
        """Encode images.

        Args:
            x: ``(B, 3, H, W)`` RGB in [0, 1].

        Returns:
            :class:`PCLFeatures` with ``trunk``, ``face`` and ``pose``, each
            ``(B, 128 * ceil(H/16) * ceil(W/16))``.
        """
        f = self.trunk(x)
        return PCLFeatures(f.flatten(1), self.face_branch(f).flatten(1), self.pose_branch(f).flatten(1))


class ProjectionHead(nn.Sequential):
    """Contrastive projection: Linear -> ReLU -> Linear -> BatchNorm1d (``(B, D) -> (B, 512)``)."""

    def __init__(self, in_dim: int = 2048, hidden_dim: int = 2048, out_dim: int = 512) -> None:
        super().__init__(nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, out_dim),
                         nn.BatchNorm1d(out_dim))


class Decoder(nn.Module):
    """Image decoder D: ``(B, D) -> (B, 3, 64, 64)``.

    Linear(D -> 512) viewed as 512x1x1, then six stages of
    [bilinear x2, conv 3x3, BatchNorm2d, ReLU] with channels
    512->256->256->256->256->128->3; the last stage has no BatchNorm and ends
    in Tanh. The output is compared with images in [0, 1] during training.
    """

    def __init__(self, in_dim: int = 2048, width: int = 512) -> None:
        super().__init__()
        self.fc = nn.Linear(in_dim, width)
        chans = [width, width // 2, width // 2, width // 2, width // 2, width // 4]
        layers: list[nn.Module] = [nn.ReLU()]
        for cin, cout in itertools.pairwise(chans):
            layers += [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                       nn.Conv2d(cin, cout, 3, 1, 1), nn.BatchNorm2d(cout), nn.ReLU()]
        layers += [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                   nn.Conv2d(chans[-1], 3, 3, 1, 1), nn.Tanh()]
        self.layers = nn.Sequential(*layers)

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        """``(B, D) -> (B, 3, 64, 64)``."""
        return self.layers(self.fc(code)[:, :, None, None])


class PCLModel(nn.Module):
    """A PCL model: the encoder, plus the projection heads and decoder when present.

    Args:
        config: Model configuration; ``config.components`` says which of
            ``face_head``, ``pose_head`` and ``decoder`` are built.

    Example:
        >>> model = PCLModel(PCLConfig(components=["encoder", "decoder"]))
        >>> feats = model(torch.rand(2, 3, 64, 64))
        >>> feats.face.shape
        torch.Size([2, 2048])
    """

    def __init__(self, config: PCLConfig | None = None) -> None:
        super().__init__()
        self.config = config or PCLConfig()
        dim, comps = self.config.feature_dim, self.config.components
        self.encoder = PCLEncoder()
        heads = {"hidden_dim": self.config.projection_hidden_dim, "out_dim": self.config.projection_dim}
        self.face_head = ProjectionHead(dim, **heads) if "face_head" in comps else None
        self.pose_head = ProjectionHead(dim, **heads) if "pose_head" in comps else None
        self.decoder = Decoder(dim, self.config.decoder_dim) if "decoder" in comps else None

    def forward(self, images: torch.Tensor) -> PCLFeatures:
        """Encode ``(B, 3, H, W)`` RGB images in [0, 1]; see :meth:`PCLEncoder.forward`."""
        return self.encoder(images)

    def reconstruct(self, face: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        """Decode a face code and a pose code, as PCL does: ``D(normalize(face + pose))``.

        Args:
            face: ``(B, D)`` face features F_f.
            pose: ``(B, D)`` pose features F_p (possibly of other images).

        Returns:
            ``(B, 3, 64, 64)`` images, nominally in [0, 1].
        """
        if self.decoder is None:
            raise RuntimeError("this model was loaded without its decoder; load it with "
                               "facepcl.load(..., components=('encoder', 'decoder'))")
        return self.decoder(F.normalize(face + pose, dim=1))

    def project_face(self, face: torch.Tensor) -> torch.Tensor:
        """Face projection head: ``(B, D) -> (B, 512)``."""
        return _need(self.face_head, "face_head")(face)

    def project_pose(self, pose: torch.Tensor) -> torch.Tensor:
        """Pose projection head: ``(B, D) -> (B, 512)``."""
        return _need(self.pose_head, "pose_head")(pose)

    def save_pretrained(self, save_directory: str, **kwargs) -> None:
        """Write ``config.json``, ``model.safetensors`` and a model card; see :func:`facepcl.save_pretrained`."""
        from ._save import save_pretrained

        save_pretrained(self, save_directory, **kwargs)

    def push_to_hub(self, repo_id: str, **kwargs) -> str:
        """Upload to the Hugging Face Hub; see :func:`facepcl.push_to_hub`."""
        from ._save import push_to_hub

        return push_to_hub(self, repo_id, **kwargs)


def _need(module: nn.Module | None, name: str) -> nn.Module:
    if module is None:
        raise RuntimeError(f"this model was loaded without its {name}; load it with "
                           f"facepcl.load(..., components=('encoder', '{name}'))")
    return module
