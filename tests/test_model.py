"""The PCL network: shapes, parameter counts and the reference's computation."""

from __future__ import annotations

import pytest
import torch

from facepcl import PCLConfig, PCLModel
from facepcl.config import feature_dim
from facepcl.model import ChannelAttention

ALL = ["encoder", "face_head", "pose_head", "decoder"]


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(("size", "dim"), [(64, 2048), (100, 6272), (256, 32768)])
def test_feature_shapes(size: int, dim: int) -> None:
    model = PCLModel().eval()
    with torch.no_grad():
        feats = model(torch.rand(2, 3, size, size))
    assert feature_dim(size) == dim
    for f in feats:
        assert f.shape == (2, dim)
        assert torch.isfinite(f).all()
    # the three outputs are different features, not copies
    assert not torch.equal(feats.face, feats.pose)
    assert not torch.equal(feats.face, feats.trunk)


def test_non_square_and_odd_sizes() -> None:
    model = PCLModel().eval()
    with torch.no_grad():
        feats = model(torch.rand(1, 3, 48, 80))
    assert feats.trunk.shape == (1, 128 * 3 * 5) == (1, feature_dim(48, 80))


def test_parameter_counts_match_reference() -> None:
    model = PCLModel(PCLConfig(components=ALL))
    # pcl-reference.md: trunk 1.88 M, each branch 0.30 M, encoder 2.47 M, decoder 4.30 M
    assert round(n_params(model.encoder.trunk) / 1e6, 2) == 1.88
    assert round(n_params(model.encoder.face_branch) / 1e6, 2) == 0.30
    assert round(n_params(model.encoder.pose_branch) / 1e6, 2) == 0.30
    assert round(n_params(model.encoder) / 1e6, 2) == 2.47
    assert round(n_params(model.decoder) / 1e6, 2) == 4.30
    assert n_params(model.face_head) == 2048 * 2048 + 2048 + 512 * 2048 + 512 + 2 * 512


def test_components_are_optional() -> None:
    enc = PCLModel()
    assert enc.decoder is None
    assert enc.face_head is None
    assert enc.pose_head is None
    with pytest.raises(RuntimeError, match="decoder"):
        enc.reconstruct(torch.zeros(1, 2048), torch.zeros(1, 2048))
    with pytest.raises(RuntimeError, match="face_head"):
        enc.project_face(torch.zeros(2, 2048))


def test_reconstruct_uses_normalised_sum() -> None:
    torch.manual_seed(0)
    model = PCLModel(PCLConfig(components=ALL)).eval()
    face, pose = torch.randn(3, 2048), torch.randn(3, 2048)
    with torch.no_grad():
        out = model.reconstruct(face, pose)
        # D's input is the L2-normalised SUM, so scaling both codes changes nothing
        again = model.reconstruct(5 * face, 5 * pose)
        direct = model.decoder(torch.nn.functional.normalize(face + pose, dim=1))
    assert out.shape == (3, 3, 64, 64)
    assert out.abs().max() <= 1
    torch.testing.assert_close(out, again, atol=1e-6, rtol=0)
    torch.testing.assert_close(out, direct, atol=0, rtol=0)


def test_projection_heads_shape() -> None:
    model = PCLModel(PCLConfig(components=ALL)).train()
    z = model.project_pose(torch.randn(4, 2048))
    assert z.shape == (4, 512)
    # BatchNorm1d in training mode: zero mean per feature over the batch
    torch.testing.assert_close(z.mean(0), torch.zeros(512), atol=1e-5, rtol=0)


def test_channel_attention_formula() -> None:
    torch.manual_seed(1)
    att = ChannelAttention(8)
    x = torch.randn(2, 8, 3, 5)
    b, c, n = 2, 8, 15
    theta = torch.softmax(att.theta(x).view(b, c, n), dim=2)  # softmax over positions
    phi = att.phi(x).view(b, c, n)
    gy = torch.softmax(att.g(x).view(b, c, n), dim=1)  # softmax over channels
    expected = x + (phi @ theta.transpose(1, 2) @ gy).view(b, c, 3, 5)
    expected = torch.where(expected > 0, expected, 0.1 * expected)
    torch.testing.assert_close(att(x), expected)


def test_channel_attention_on_channels_last_input_is_the_same_function_without_copies(monkeypatch) -> None:
    # The fast path runs channels_last; its attention works on the (B, N, C) views instead of copying to NCHW.
    torch.manual_seed(2)
    att = ChannelAttention(8).double()
    x = torch.randn(2, 8, 3, 5, dtype=torch.float64, requires_grad=True)
    xl = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    y, yl = att(x), att(xl)
    assert yl.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(yl, y, rtol=1e-12, atol=1e-12)
    (g,) = torch.autograd.grad(y.square().sum(), x)
    (gl,) = torch.autograd.grad(yl.square().sum(), xl)
    torch.testing.assert_close(gl, g, rtol=1e-12, atol=1e-12)
    # NCHW input never takes the channels_last formulation: the exact path stays the reference's computation
    monkeypatch.setattr(ChannelAttention, "_forward_channels_last", lambda self, x: pytest.fail("NCHW input"))
    att(torch.randn(2, 8, 1, 1, dtype=torch.float64))
    att(x)


def test_encoder_init_matches_reference_scheme() -> None:
    torch.manual_seed(0)
    model = PCLModel()
    conv = model.encoder.trunk.stage4[0]  # 3x3, 256 out: std sqrt(2 / (9 * 256))
    assert conv.bias.abs().max() == 0
    assert abs(conv.weight.std().item() - (2 / (9 * 256)) ** 0.5) < 0.002
