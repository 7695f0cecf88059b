"""An official-layout PCL checkpoint and a straightforward forward pass over its raw tensors.

The key names and shapes are written out here from pcl-reference.md, not
derived from facepcl, so the conversion is checked against an independent
statement of the layout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

ENCODER_CONVS = {
    # name: (out, in, k)
    "conv1.0": (64, 3, 7), "conv1.2": (64, 64, 3),
    "layer1.0": (64, 64, 3), "layer1.3": (64, 64, 3),
    "layer2_1.0": (128, 64, 3), "layer2_1.3": (128, 128, 3),
    "resblock1.conv1": (128, 128, 3), "resblock1.conv2": (128, 128, 3),
    "resblock2.conv1": (128, 128, 3), "resblock2.conv2": (128, 128, 3),
    "layer2_2.0": (128, 128, 3), "layer2_2.2": (128, 128, 3),
    "layer3_1.0": (256, 128, 3), "layer3_1.2": (128, 256, 3),
    "layer3_2_exp.0": (128, 128, 3), "layer3_2_exp.2": (128, 128, 3),
    "layer3_2_pose.0": (128, 128, 3), "layer3_2_pose.2": (128, 128, 3),
}
ATTENTION = {"layer1.2": 64, "layer2_1.2": 128}
DECODER_CONVS = {2: (256, 512), 6: (256, 256), 10: (256, 256), 14: (256, 256), 18: (128, 256), 22: (3, 128)}
DECODER_BNS = {3: 256, 7: 256, 11: 256, 15: 256, 19: 128}


def official_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors under every official key (with ``module.``), with distinct values per tensor."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}

    def rnd(*shape: int, scale: float = 0.05) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale

    for name, (o, i, k) in ENCODER_CONVS.items():
        sd[f"module.encoder.{name}.weight"] = rnd(o, i, k, k, scale=(2 / (k * k * o)) ** 0.5)
        sd[f"module.encoder.{name}.bias"] = rnd(o, scale=0.01)
    for name, c in ATTENTION.items():
        for part in ("g", "theta", "phi"):
            sd[f"module.encoder.{name}.{part}.weight"] = rnd(c, c, 1, 1, scale=0.1)
            sd[f"module.encoder.{name}.{part}.bias"] = rnd(c, scale=0.01)
    for head in ("exp_fc", "pose_fc"):
        sd[f"module.{head}.0.weight"] = rnd(2048, 2048, scale=0.02)
        sd[f"module.{head}.0.bias"] = rnd(2048, scale=0.01)
        sd[f"module.{head}.2.weight"] = rnd(512, 2048, scale=0.02)
        sd[f"module.{head}.2.bias"] = rnd(512, scale=0.01)
        _bn(sd, f"module.{head}.3", 512, rnd)
    sd["module.decoder.fc.weight"] = rnd(512, 2048, scale=0.02)
    sd["module.decoder.fc.bias"] = rnd(512, scale=0.01)
    for idx, (o, i) in DECODER_CONVS.items():
        sd[f"module.decoder.model.{idx}.weight"] = rnd(o, i, 3, 3, scale=0.05)
        sd[f"module.decoder.model.{idx}.bias"] = rnd(o, scale=0.01)
    for idx, c in DECODER_BNS.items():
        _bn(sd, f"module.decoder.model.{idx}", c, rnd)
    return sd


def _bn(sd: dict, prefix: str, c: int, rnd) -> None:
    sd[f"{prefix}.weight"] = 1 + rnd(c, scale=0.1)
    sd[f"{prefix}.bias"] = rnd(c, scale=0.1)
    sd[f"{prefix}.running_mean"] = rnd(c, scale=0.1)
    sd[f"{prefix}.running_var"] = 1 + rnd(c, scale=0.1).abs()
    sd[f"{prefix}.num_batches_tracked"] = torch.tensor(1234)


def _conv(sd: dict, name: str, x: torch.Tensor, stride: int = 1) -> torch.Tensor:
    w = sd[f"module.encoder.{name}.weight"]
    return F.conv2d(x, w, sd[f"module.encoder.{name}.bias"], stride=stride, padding=w.shape[-1] // 2)


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x > 0, x, 0.1 * x)


def _attention(sd: dict, name: str, x: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    proj = {p: F.conv2d(x, sd[f"module.encoder.{name}.{p}.weight"], sd[f"module.encoder.{name}.{p}.bias"])
            .reshape(b, c, h * w) for p in ("g", "theta", "phi")}
    theta = torch.softmax(proj["theta"], dim=-1).permute(0, 2, 1)
    sim = torch.bmm(proj["phi"], theta)
    gy = torch.softmax(proj["g"], dim=1)
    return _lrelu(x + torch.bmm(sim, gy).reshape(b, c, h, w))


def reference_encoder(sd: dict, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Trunk, exp (face) and pose features, flattened, computed directly from the official tensors."""
    x = _lrelu(_conv(sd, "conv1.2", _lrelu(_conv(sd, "conv1.0", x, 2))))
    x = _lrelu(_conv(sd, "layer1.0", x))
    x = _lrelu(_conv(sd, "layer1.3", _attention(sd, "layer1.2", x)))
    x = _lrelu(_conv(sd, "layer2_1.0", x, 2))
    x = _lrelu(_conv(sd, "layer2_1.3", _attention(sd, "layer2_1.2", x)))
    for rb in ("resblock1", "resblock2"):
        x = _lrelu(_conv(sd, f"{rb}.conv2", _lrelu(_conv(sd, f"{rb}.conv1", x))) + x)
    x = _lrelu(_conv(sd, "layer2_2.2", _lrelu(_conv(sd, "layer2_2.0", x, 2))))
    f = _lrelu(_conv(sd, "layer3_1.2", _lrelu(_conv(sd, "layer3_1.0", x, 2))))
    exp = _lrelu(_conv(sd, "layer3_2_exp.2", _lrelu(_conv(sd, "layer3_2_exp.0", f))))
    pose = _lrelu(_conv(sd, "layer3_2_pose.2", _lrelu(_conv(sd, "layer3_2_pose.0", f))))
    return f.flatten(1), exp.flatten(1), pose.flatten(1)


def reference_projection(sd: dict, head: str, x: torch.Tensor) -> torch.Tensor:
    """exp_fc / pose_fc in eval mode (BatchNorm with running statistics)."""
    p = f"module.{head}"
    h = torch.relu(F.linear(x, sd[f"{p}.0.weight"], sd[f"{p}.0.bias"]))
    h = F.linear(h, sd[f"{p}.2.weight"], sd[f"{p}.2.bias"])
    return F.batch_norm(h, sd[f"{p}.3.running_mean"], sd[f"{p}.3.running_var"], sd[f"{p}.3.weight"],
                        sd[f"{p}.3.bias"], training=False, eps=1e-5)


def reference_decoder(sd: dict, code: torch.Tensor) -> torch.Tensor:
    """The decoder (Generator) in eval mode on an already normalised code."""
    x = F.linear(code, sd["module.decoder.fc.weight"], sd["module.decoder.fc.bias"])[:, :, None, None]
    x = torch.relu(x)
    for idx in sorted(DECODER_CONVS):
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        x = F.conv2d(x, sd[f"module.decoder.model.{idx}.weight"], sd[f"module.decoder.model.{idx}.bias"],
                     padding=1)
        if idx + 1 in DECODER_BNS:
            p = f"module.decoder.model.{idx + 1}"
            x = F.batch_norm(x, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"],
                             sd[f"{p}.bias"], training=False, eps=1e-5)
            x = torch.relu(x)
    return torch.tanh(x)
