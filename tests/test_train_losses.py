"""PCL pretraining losses against naive per-sample implementations and analytic values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from facepcl.train.losses import (
    FaceContrastiveLoss,
    MixingDraw,
    OrthogonalityLoss,
    PoseContrastiveLoss,
    ReconstructionLoss,
    draw_mixing,
)

T = 0.07


# ----------------------------------------------------------------------------- naive implementations
def naive_face_loss(z: torch.Tensor, lam: torch.Tensor, perm: torch.Tensor, t: float) -> torch.Tensor:
    """The face loss written the long way: one anchor, one negative at a time."""
    n2 = z.shape[0]
    n = n2 // 2
    per_anchor = []
    for i in range(n2):
        pair = (i + n) % n2
        negs = [z[j] for j in range(n2) if j not in (i, pair)]
        a = z[i] / z[i].norm()
        logits = [a @ (z[pair] / z[pair].norm())]
        for k in range(len(negs)):
            mixed = lam[i, k] * negs[k] + (1 - lam[i, k]) * negs[int(perm[k])]
            logits.append(a @ (mixed / mixed.norm()))
        logits = torch.stack(logits) / t
        per_anchor.append(-torch.log_softmax(logits, dim=0)[0])
    return torch.stack(per_anchor).mean()


def naive_pose_loss(anchors: torch.Tensor, negatives: torch.Tensor, lam: torch.Tensor, perm: torch.Tensor,
                    t: float, mode: str) -> torch.Tensor:
    b, m = negatives.shape[:2]
    if mode == "reference":
        rows = [negatives[frame, k] for k in range(m) for frame in range(b)]  # view-major
        groups = [[rows[g * m + k] for k in range(m)] for g in range(b)]
    else:
        groups = [[negatives[g, k] for k in range(m)] for g in range(b)]
    per_anchor = []
    for v in range(2):
        for i in range(b):
            a = anchors[v * b + i]
            other = anchors[(1 - v) * b + i]
            a = a / a.norm()
            logits = [a @ (other / other.norm())]
            for k in range(m):
                mixed = lam[i, k] * groups[i][k] + (1 - lam[i, k]) * groups[i][int(perm[k])]
                logits.append(a @ (mixed / mixed.norm()))
            per_anchor.append(-torch.log_softmax(torch.stack(logits) / t, dim=0)[0])
    return torch.stack(per_anchor).mean()


def naive_orthogonality(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    def prep(x):
        x = x - x.mean(0, keepdim=True)
        return x / (x.norm(dim=1, keepdim=True).detach() + eps)

    a, b = prep(a), prep(b)
    total = torch.zeros((), dtype=a.dtype)
    for j in range(a.shape[1]):
        for k in range(b.shape[1]):
            total = total + (a[:, j] * b[:, k]).sum() ** 2
    return total / (a.shape[1] * b.shape[1])


# ----------------------------------------------------------------------------- face contrastive
@pytest.mark.parametrize("frames", [2, 3, 5])
def test_face_loss_matches_naive_loop_with_gradients(frames: int) -> None:
    g = torch.Generator().manual_seed(frames)
    z = torch.randn(2 * frames, 16, generator=g, dtype=torch.float64, requires_grad=True)
    mix = draw_mixing(2 * frames, 2 * frames - 2, 1.6, np.random.default_rng(frames))
    loss = FaceContrastiveLoss(T)(z, mix)
    (grad,) = torch.autograd.grad(loss, z)
    z2 = z.detach().clone().requires_grad_(True)
    ref = naive_face_loss(z2, mix.lam.double(), mix.perm, T)
    (grad_ref,) = torch.autograd.grad(ref, z2)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)
    torch.testing.assert_close(grad.double(), grad_ref, rtol=1e-5, atol=1e-7)


def test_face_loss_uses_the_mixing_it_is_given() -> None:
    z = torch.randn(8, 12, generator=torch.Generator().manual_seed(0))
    loss = FaceContrastiveLoss(T)
    a = loss(z, draw_mixing(8, 6, 1.6, np.random.default_rng(1)))
    b = loss(z, draw_mixing(8, 6, 1.6, np.random.default_rng(2)))
    same = loss(z, draw_mixing(8, 6, 1.6, np.random.default_rng(1)))
    assert a.item() == same.item()
    assert a.item() != b.item()
    # a seeded rng gives the same draw as the explicit one
    assert loss(z, rng=np.random.default_rng(1)).item() == a.item()


def test_face_loss_analytic_identical_embeddings() -> None:
    # every cosine is 1, so the loss is log(1 + K) with K = 2N - 2 negatives
    n = 4
    z = torch.ones(2 * n, 7)
    loss = FaceContrastiveLoss(T)(z, rng=np.random.default_rng(0))
    assert loss.item() == pytest.approx(math.log(2 * n - 1), rel=1e-6)


def test_face_loss_analytic_orthogonal_frames() -> None:
    # two frames; both views of frame 0 are e1, of frame 1 are e2: whatever the mixing, each anchor sees
    # its positive at cosine 1 and two negatives at cosine 0
    e1, e2 = torch.eye(3, dtype=torch.float64)[:2]
    z = torch.stack([e1, 2 * e2, 3 * e1, e2])
    loss = FaceContrastiveLoss(T)(z, rng=np.random.default_rng(5))
    assert loss.item() == pytest.approx(math.log(1 + 2 * math.exp(-1 / T)), rel=1e-6)


def test_face_loss_mixing_changes_result_only_through_negatives() -> None:
    # lam = 1 everywhere means no mixing: plain NT-Xent with the 2N - 2 other embeddings
    z = torch.randn(6, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    ones = MixingDraw(torch.ones(6, 4), torch.tensor([2, 0, 3, 1]))
    unit = torch.nn.functional.normalize(z, dim=1)
    sim = unit @ unit.T / T
    sim.fill_diagonal_(float("-inf"))
    target = (torch.arange(6) + 3) % 6
    ntxent = torch.nn.functional.cross_entropy(sim, target)
    assert FaceContrastiveLoss(T)(z, ones).item() == pytest.approx(ntxent.item(), rel=1e-6)


def test_face_loss_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="2n"):
        FaceContrastiveLoss()(torch.randn(5, 4))
    with pytest.raises(ValueError, match="lam"):
        FaceContrastiveLoss()(torch.randn(6, 4), draw_mixing(4, 2, 1.6, np.random.default_rng(0)))


# ----------------------------------------------------------------------------- pose contrastive
@pytest.mark.parametrize("mode", ["per_sample", "reference"])
@pytest.mark.parametrize(("b", "m"), [(1, 3), (3, 4), (4, 6)])
def test_pose_loss_matches_naive_loop_with_gradients(mode: str, b: int, m: int) -> None:
    g = torch.Generator().manual_seed(b * 10 + m)
    anchors = torch.randn(2 * b, 8, generator=g, dtype=torch.float64, requires_grad=True)
    negatives = torch.randn(b, m, 8, generator=g, dtype=torch.float64, requires_grad=True)
    mix = draw_mixing(b, m, 1.6, np.random.default_rng(b + m))
    loss = PoseContrastiveLoss(T, negatives=mode)(anchors, negatives, mix)
    grads = torch.autograd.grad(loss, (anchors, negatives))
    a2 = anchors.detach().clone().requires_grad_(True)
    n2 = negatives.detach().clone().requires_grad_(True)
    ref = naive_pose_loss(a2, n2, mix.lam.double(), mix.perm, T, mode)
    grads_ref = torch.autograd.grad(ref, (a2, n2))
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)
    for got, want in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-7)


def test_pose_loss_modes_differ_and_per_sample_uses_own_flips() -> None:
    # With each frame's flips equal to a distinct direction, per-sample grouping gives anchor b only its
    # own direction; the reference grouping hands it other frames' flips.
    b, m = 3, 3
    anchors = torch.eye(6)[:3].repeat(2, 1)  # frame i: both views e_i
    negatives = torch.eye(6)[:3][:, None, :].expand(b, m, 6).clone()  # flips of frame i point along e_i too
    mix = draw_mixing(b, m, 1.6, np.random.default_rng(0))
    per_sample = PoseContrastiveLoss(T, negatives="per_sample")(anchors, negatives, mix)
    reference = PoseContrastiveLoss(T, negatives="reference")(anchors, negatives, mix)
    # per sample: every negative has cosine 1 with the anchor -> log(1 + M)
    assert per_sample.item() == pytest.approx(math.log(1 + m), rel=1e-6)
    # reference with B = M = 3: group g = rows 3g..3g+2 of the view-major layout = flip g of frames 0, 1, 2
    # (one of them the anchor's own frame), so the loss is lower than per sample
    assert reference.item() < per_sample.item() - 1.0


def test_pose_loss_analytic_orthogonal_negatives() -> None:
    b, m = 2, 5
    anchors = torch.tensor([[1.0, 0, 0]], dtype=torch.float64).repeat(2 * b, 1)
    negatives = torch.tensor([0.0, 1.0, 0], dtype=torch.float64).expand(b, m, 3).clone()
    loss = PoseContrastiveLoss(T)(anchors, negatives, rng=np.random.default_rng(1))
    assert loss.item() == pytest.approx(math.log(1 + m * math.exp(-1 / T)), rel=1e-6)


def test_pose_loss_lam_is_shared_by_the_two_views() -> None:
    # lam has one row per frame: changing a frame's row changes both of its views' logits
    b, m = 2, 4
    g = torch.Generator().manual_seed(9)
    anchors, negatives = torch.randn(2 * b, 6, generator=g), torch.randn(b, m, 6, generator=g)
    mix = draw_mixing(b, m, 1.6, np.random.default_rng(0))
    _, logits = PoseContrastiveLoss(T)(anchors, negatives, mix, return_logits=True)
    lam = mix.lam.clone()
    lam[1] = 0.5
    _, logits2 = PoseContrastiveLoss(T)(anchors, negatives, MixingDraw(lam, mix.perm), return_logits=True)
    changed = (logits2 != logits).any(dim=1)
    assert changed.tolist() == [False, True, False, True]


# ----------------------------------------------------------------------------- reconstruction
def test_reconstruction_terms_and_targets() -> None:
    g = torch.Generator().manual_seed(0)
    s = torch.rand(3, 3, 8, 8, generator=g)
    s_flip = s.flip(-1)
    recon = [s + 0.1, s_flip - 0.2, s + 0.3, s_flip.clone()]
    total, terms = ReconstructionLoss()(recon, s, s_flip)
    torch.testing.assert_close(terms, torch.tensor([0.1, 0.2, 0.3, 0.0]))
    assert total.item() == pytest.approx(0.6, rel=1e-6)
    # the second and fourth terms compare with the FLIPPED frame
    _, terms = ReconstructionLoss()([s, s, s, s], s, s_flip)
    assert terms[0] == 0
    assert terms[2] == 0
    assert terms[1] == terms[3] == (s - s_flip).abs().mean()


def test_reconstruction_rejects_shape_mismatch() -> None:
    s = torch.rand(2, 3, 8, 8)
    with pytest.raises(ValueError, match="shape"):
        ReconstructionLoss()([s, s, s, s[:, :, :4]], s, s)


# ----------------------------------------------------------------------------- orthogonality
def test_orthogonality_matches_naive_loop() -> None:
    g = torch.Generator().manual_seed(1)
    a = torch.randn(6, 5, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, 7, generator=g, dtype=torch.float64, requires_grad=True)
    loss = OrthogonalityLoss()(a, b)
    ref = naive_orthogonality(a, b)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-9)
    ga = torch.autograd.grad(loss, (a, b))
    gr = torch.autograd.grad(ref, (a, b))
    for x, y in zip(ga, gr, strict=True):
        torch.testing.assert_close(x, y)


def test_orthogonality_analytic_values() -> None:
    # centred rows [1, 0] and [-1, 0] (unit norm): a^T a = [[2, 0], [0, 0]] -> mean of squares 4 / 4 = 1
    a = torch.tensor([[2.0, 5.0], [0.0, 5.0]])
    assert OrthogonalityLoss(eps=0.0)(a, a).item() == pytest.approx(1.0)
    # features on disjoint coordinates whose batch variations are orthogonal: 0
    x = torch.tensor([[1.0, 0.0, 0.0, 0.0], [-1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    y = torch.tensor([[0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, -2.0, 0.0]])
    assert OrthogonalityLoss()(x, y).item() == pytest.approx(0.0, abs=1e-12)
    # row scaling does not matter (rows are normalised after centring)
    g = torch.Generator().manual_seed(2)
    p, q = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    base = OrthogonalityLoss(eps=0.0)(p, q)
    assert OrthogonalityLoss(eps=0.0)(p, 10 * q).item() == pytest.approx(base.item(), rel=1e-5)


def test_orthogonality_row_norm_is_detached() -> None:
    # The reference detaches the norm: the gradient is that of x / c with c constant.
    a = torch.tensor([[1.0, 2.0], [3.0, -1.0], [0.5, 0.5]], requires_grad=True)
    b = torch.tensor([[0.0, 1.0], [2.0, 1.0], [1.0, -1.0]])
    (g,) = torch.autograd.grad(OrthogonalityLoss()(a, b), a)
    ac = (a - a.mean(0)).detach()
    scale = ac.norm(dim=1, keepdim=True) + 1e-6
    a_var = a.detach().clone().requires_grad_(True)
    bc = b - b.mean(0)
    bn = bc / (bc.norm(dim=1, keepdim=True) + 1e-6)
    an = (a_var - a_var.mean(0)) / scale
    (g_ref,) = torch.autograd.grad(((an.T @ bn) ** 2).mean(), a_var)
    torch.testing.assert_close(g, g_ref)
