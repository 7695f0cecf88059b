"""The RetinaFace network (Deng et al., CVPR 2020) for both backbones, in plain torch.

The module tree and parameter names are the ones the public RetinaFace
weights use (the Pytorch_Retinaface layout, which facexlib keeps): ``body``
(the backbone up to its third returned stage), ``fpn``, ``ssh1``..``ssh3``
and the per-level heads ``ClassHead``, ``BboxHead``, ``LandmarkHead``. So
the same ``.pth``/``.safetensors`` files load with ``strict=True``, and the
arithmetic (operation for operation) is that network's:
``tests/test_detection.py`` checks it bit for bit against facexlib's module.

Written here so that detection needs neither facexlib nor torchvision (the
install is smaller by their dependencies, numba and llvmlite among them).

Backbones:

- ``"mobile0.25"``: MobileNetV1 at width 0.25, stages returned at strides 8,
  16, 32 (64, 128, 256 channels); FPN and SSH with 64 channels and leaky
  ReLUs of slope 0.1.
- ``"resnet50"``: ResNet-50 (torchvision's layout: stride on the 3x3
  convolution), ``layer2``..``layer4`` returned (512, 1024, 2048 channels);
  FPN and SSH with 256 channels and plain ReLUs.

``forward`` takes BGR-minus-mean images ``(B, 3, H, W)`` and returns
``(loc (B, A, 4), conf (B, A, 2) softmaxed, landmarks (B, A, 10))`` with
``A`` anchors (two per cell of each level, level by level, row-major).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: Backbone name -> (channels of the three returned stages, FPN/SSH channels).
BACKBONES: dict[str, tuple[tuple[int, int, int], int]] = {
    "mobile0.25": ((64, 128, 256), 64),
    "resnet50": ((512, 1024, 2048), 256),
}
_ANCHORS = 2  # anchors per cell and level


def _conv_bn(inp: int, out: int, stride: int = 1, leaky: float | None = 0.0, kernel: int = 3) -> nn.Sequential:
    """Convolution (no bias), BatchNorm, then a leaky ReLU of slope ``leaky`` (None: no activation)."""
    layers: list[nn.Module] = [nn.Conv2d(inp, out, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(out)]
    if leaky is not None:
        layers.append(nn.LeakyReLU(negative_slope=leaky, inplace=True))
    return nn.Sequential(*layers)


def _conv_dw(inp: int, out: int, stride: int, leaky: float = 0.1) -> nn.Sequential:
    """Depthwise 3x3 then pointwise 1x1, each with BatchNorm and a leaky ReLU (MobileNetV1's block)."""
    return nn.Sequential(
        nn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False),
        nn.BatchNorm2d(inp),
        nn.LeakyReLU(negative_slope=leaky, inplace=True),
        nn.Conv2d(inp, out, 1, 1, 0, bias=False),
        nn.BatchNorm2d(out),
        nn.LeakyReLU(negative_slope=leaky, inplace=True),
    )


class _MobileNetBody(nn.Module):
    """MobileNetV1 x0.25 up to its last stage; returns the outputs of the three stages."""

    def __init__(self) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(_conv_bn(3, 8, 2, leaky=0.1), _conv_dw(8, 16, 1), _conv_dw(16, 32, 2),
                                    _conv_dw(32, 32, 1), _conv_dw(32, 64, 2), _conv_dw(64, 64, 1))
        self.stage2 = nn.Sequential(_conv_dw(64, 128, 2), *(_conv_dw(128, 128, 1) for _ in range(5)))
        self.stage3 = nn.Sequential(_conv_dw(128, 256, 2), _conv_dw(256, 256, 1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        s1 = self.stage1(x)
        s2 = self.stage2(s1)
        return [s1, s2, self.stage3(s2)]


class _Bottleneck(nn.Module):
    """ResNet's bottleneck block (1x1, 3x3 with the stride, 1x1 expanding 4x) with its shortcut."""

    def __init__(self, inp: int, width: int, stride: int) -> None:
        super().__init__()
        out = width * 4
        self.conv1 = nn.Conv2d(inp, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or inp != out:
            self.downsample = nn.Sequential(nn.Conv2d(inp, out, 1, stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + (x if self.downsample is None else self.downsample(x)))


class _ResNet50Body(nn.Module):
    """ResNet-50 without its classifier; returns the outputs of ``layer2``, ``layer3`` and ``layer4``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inp = 64
        for i, (width, blocks) in enumerate(((64, 3), (128, 4), (256, 6), (512, 3)), start=1):
            stride = 1 if i == 1 else 2
            layer = [_Bottleneck(inp, width, stride)]
            inp = width * 4
            layer += [_Bottleneck(inp, width, 1) for _ in range(blocks - 1)]
            setattr(self, f"layer{i}", nn.Sequential(*layer))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer2(self.layer1(x))
        c3 = self.layer3(c2)
        return [c2, c3, self.layer4(c3)]


class _FPN(nn.Module):
    """Feature pyramid: 1x1 lateral convolutions, nearest upsampling, 3x3 merges (top-down)."""

    def __init__(self, inputs: tuple[int, int, int], out: int) -> None:
        super().__init__()
        leaky = 0.1 if out <= 64 else 0.0
        self.output1 = _conv_bn(inputs[0], out, leaky=leaky, kernel=1)
        self.output2 = _conv_bn(inputs[1], out, leaky=leaky, kernel=1)
        self.output3 = _conv_bn(inputs[2], out, leaky=leaky, kernel=1)
        self.merge1 = _conv_bn(out, out, leaky=leaky)
        self.merge2 = _conv_bn(out, out, leaky=leaky)

    def forward(self, x: list[torch.Tensor]) -> list[torch.Tensor]:
        o1, o2, o3 = self.output1(x[0]), self.output2(x[1]), self.output3(x[2])
        o2 = self.merge2(o2 + F.interpolate(o3, size=[o2.size(2), o2.size(3)], mode="nearest"))
        o1 = self.merge1(o1 + F.interpolate(o2, size=[o1.size(2), o1.size(3)], mode="nearest"))
        return [o1, o2, o3]


class _SSH(nn.Module):
    """The single-stage headless context module: 3x3, 5x5 and 7x7 receptive fields, concatenated, ReLU."""

    def __init__(self, inp: int, out: int) -> None:
        super().__init__()
        leaky = 0.1 if out <= 64 else 0.0
        self.conv3X3 = _conv_bn(inp, out // 2, leaky=None)
        self.conv5X5_1 = _conv_bn(inp, out // 4, leaky=leaky)
        self.conv5X5_2 = _conv_bn(out // 4, out // 4, leaky=None)
        self.conv7X7_2 = _conv_bn(out // 4, out // 4, leaky=leaky)
        self.conv7x7_3 = _conv_bn(out // 4, out // 4, leaky=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c5_1 = self.conv5X5_1(x)
        c7 = self.conv7x7_3(self.conv7X7_2(c5_1))
        return F.relu(torch.cat([self.conv3X3(x), self.conv5X5_2(c5_1), c7], dim=1))


class _Head(nn.Module):
    """A 1x1 convolution giving ``values`` numbers per anchor, reshaped to ``(B, H*W*anchors, values)``."""

    def __init__(self, inp: int, values: int) -> None:
        super().__init__()
        self.values = values
        self.conv1x1 = nn.Conv2d(inp, _ANCHORS * values, kernel_size=(1, 1), stride=1, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1x1(x).permute(0, 2, 3, 1).contiguous()
        return out.view(out.shape[0], -1, self.values)


class RetinaFace(nn.Module):
    """RetinaFace with the ``"mobile0.25"`` or ``"resnet50"`` backbone (see the module docstring).

    Args:
        backbone: A key of :data:`BACKBONES`.

    Raises:
        ValueError: Unknown backbone.
    """

    def __init__(self, backbone: str) -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"unknown RetinaFace backbone {backbone!r}; choose from {sorted(BACKBONES)}")
        inputs, out = BACKBONES[backbone]
        self.backbone = backbone
        self.body = _MobileNetBody() if backbone == "mobile0.25" else _ResNet50Body()
        self.fpn = _FPN(inputs, out)
        self.ssh1, self.ssh2, self.ssh3 = _SSH(out, out), _SSH(out, out), _SSH(out, out)
        self.ClassHead = nn.ModuleList(_Head(out, 2) for _ in range(3))
        self.BboxHead = nn.ModuleList(_Head(out, 4) for _ in range(3))
        self.LandmarkHead = nn.ModuleList(_Head(out, 10) for _ in range(3))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        fpn = self.fpn(self.body(x))
        feats = [self.ssh1(fpn[0]), self.ssh2(fpn[1]), self.ssh3(fpn[2])]
        loc = torch.cat([h(f) for h, f in zip(self.BboxHead, feats, strict=True)], dim=1)
        conf = torch.cat([h(f) for h, f in zip(self.ClassHead, feats, strict=True)], dim=1)
        landmarks = torch.cat([h(f) for h, f in zip(self.LandmarkHead, feats, strict=True)], dim=1)
        return loc, F.softmax(conf, dim=-1), landmarks


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou: float) -> torch.Tensor:
    """Greedy non-maximum suppression, the same rule and order as ``torchvision.ops.nms``.

    Boxes are visited by decreasing score (ties keep their input order); a box
    is dropped when its intersection over union with a kept box exceeds ``iou``.

    Args:
        boxes: ``(N, 4)`` float boxes ``x1, y1, x2, y2``.
        scores: ``(N,)`` scores.
        iou: Overlap threshold in [0, 1].

    Returns:
        ``(K,)`` int64 indices of the kept boxes, by decreasing score.
    """
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    b = boxes[order]
    x1, y1, x2, y2 = b.unbind(1)
    areas = (x2 - x1) * (y2 - y1)
    alive = torch.arange(b.shape[0], device=b.device)
    keep: list[torch.Tensor] = []
    # One kept box per step, its overlaps with the remaining boxes in torchvision's kernel's arithmetic.
    while alive.numel():
        i, rest = alive[0], alive[1:]
        keep.append(i)
        w = (torch.minimum(x2[i], x2[rest]) - torch.maximum(x1[i], x1[rest])).clamp(min=0)
        h = (torch.minimum(y2[i], y2[rest]) - torch.maximum(y1[i], y1[rest])).clamp(min=0)
        inter = w * h
        alive = rest[~(inter / (areas[i] + areas[rest] - inter) > iou)]  # NaN overlap (empty boxes) keeps, as there
    return order[torch.stack(keep)]
