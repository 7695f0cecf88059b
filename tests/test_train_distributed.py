"""Data parallelism: 2 gloo processes with half the batch each, and 3 with uneven shares of the same batch,
give the loss and gradients of 1 process with the whole batch (gathered negatives with gradients, global
BatchNorm, DDP averaging of share-weighted losses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from facepcl import PCLConfig, PCLModel
from facepcl.train import distributed as D
from facepcl.train.config import load_config
from facepcl.train.losses import draw_mixing
from facepcl.train.objective import PCLObjective

from ._threads import torch_threads
from ._train_helpers import TINY, make_video_tree

M = 3  # negatives per pose frame
# One global batch (frames of the rec and face steps, pose frames), so that one single-process reference
# serves both layouts; processes: even halves (rec/face 2+2, pose 2+2), then uneven thirds (2+1+1 each).
# (float64 convolutions are slow on a CPU: every frame here costs seconds.)
N, B = 4, 4
LAYOUTS = {"2-even": 2, "3-uneven": 3}
ALL = ["encoder", "face_head", "pose_head", "decoder"]
CASES = ("rec", "face", "pose:per_sample", "pose:reference")


def _model() -> PCLModel:
    # float64, so that the comparison is sharp: the two runs add the same numbers in different orders
    torch.manual_seed(0)
    return PCLModel(PCLConfig(components=ALL, projection_hidden_dim=64, projection_dim=32, decoder_dim=32)).double()


def _global_inputs(n: int, b: int) -> dict:
    g = torch.Generator().manual_seed(1)
    kw = {"generator": g, "dtype": torch.float64}
    s = torch.rand(n, 3, 64, 64, **kw)
    return {
        "rec": {"noisy": torch.cat([s, s.flip(-1)]) + 0.4 * torch.randn(2 * n, 3, 64, 64, **kw),
                "s": s, "s_flip": s.flip(-1)},
        "face": {"views": torch.rand(2 * n, 3, 64, 64, **kw),
                 "mixing": draw_mixing(2 * n, 2 * n - 2, 1.6, np.random.default_rng(2))},
        "pose": {"anchors": torch.rand(2 * b, 3, 64, 64, **kw),
                 "negatives": torch.rand(b * M, 3, 64, 64, **kw),
                 "mixing": draw_mixing(b, M, 1.6, np.random.default_rng(3))},
    }


def _two_views(x: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """This rank's share of a [first views; second views] tensor."""
    half = x.shape[0] // 2
    o, c = D.split(half, world, rank)
    return torch.cat([x[o:o + c], x[half + o:half + o + c]])


def _local(inputs: dict, case: str, rank: int, world: int) -> dict:
    if case == "rec":
        r = inputs["rec"]
        o, c = D.split(r["s"].shape[0], world, rank)
        return {"noisy": _two_views(r["noisy"], rank, world), "s": r["s"][o:o + c], "s_flip": r["s_flip"][o:o + c]}
    if case == "face":
        return {"views": _two_views(inputs["face"]["views"], rank, world), "mixing": inputs["face"]["mixing"]}
    p = inputs["pose"]
    o, c = D.split(p["anchors"].shape[0] // 2, world, rank)
    return {"anchors": _two_views(p["anchors"], rank, world),
            "negatives": p["negatives"][o * M:(o + c) * M], "mixing": p["mixing"]}


def _run_cases(objective: torch.nn.Module, runner: torch.nn.Module, model: PCLModel, inputs: dict,
               rank: int, world: int) -> dict:
    out = {}
    for case in CASES:
        stage, _, mode = case.partition(":")
        if mode:
            objective.pose_loss.negatives = mode
        model.zero_grad(set_to_none=True)
        result = runner(stage, **_local(inputs, case, rank, world))
        result["loss"].backward()
        out[case] = {"loss": D.all_reduce_mean(result["loss"].detach()).item(),
                     "grads": {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}}
    out["buffers"] = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    return out


def _single_process(n: int, b: int) -> dict:
    cfg = load_config(None, ["data.root=x"])
    model = _model()
    objective = PCLObjective(model, cfg)
    return _run_cases(objective, objective, model, _global_inputs(n, b), 0, 1)


def _worker(rank: int, world: int, tmp: str, n: int, b: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/rendezvous", rank=rank, world_size=world)
    try:
        D.setup_feature_group()
        cfg = load_config(None, ["data.root=x"])
        model = D.convert_batchnorm(_model())
        objective = PCLObjective(model, cfg, gather_distributed=True)
        runner = D.wrap_ddp(objective, torch.device("cpu"))
        out = _run_cases(objective, runner, model, _global_inputs(n, b), rank, world)
        if rank == 0:
            torch.save(out, f"{tmp}/result.pt")
    finally:
        D.shutdown()


@pytest.fixture(scope="module")
def one_process() -> dict:
    """Loss, gradients and BatchNorm buffers of one process with the whole batch."""
    return _single_process(N, B)


def test_layouts_are_even_and_uneven() -> None:
    shares = {layout: [D.split(N, world, r)[1] for r in range(world)] for layout, world in LAYOUTS.items()}
    assert shares == {"2-even": [2, 2], "3-uneven": [2, 1, 1]}
    assert [D.split(B, 3, r)[1] for r in range(3)] == [2, 1, 1]


@pytest.mark.slow
@pytest.mark.parametrize("layout", LAYOUTS)
def test_processes_give_the_loss_and_gradients_of_one(one_process, tmp_path, layout: str) -> None:
    world = LAYOUTS[layout]
    mp.spawn(_worker, args=(world, str(tmp_path), N, B), nprocs=world, join=True)
    many = torch.load(tmp_path / "result.pt", weights_only=True)
    one = one_process
    for case in CASES:
        assert many[case]["loss"] == pytest.approx(one[case]["loss"], rel=1e-12), case
        assert many[case]["grads"].keys() == one[case]["grads"].keys(), case
        for name, g in one[case]["grads"].items():
            # atol covers the parameters whose exact gradient is 0 (biases before BatchNorm, the attention's
            # theta bias under its softmax); they come out as rounding noise below 1e-12
            torch.testing.assert_close(many[case]["grads"][name], g, rtol=1e-9, atol=1e-11,
                                       msg=lambda m, c=case, n=name: f"{c} {n}: {m}")
    for name, buf in one["buffers"].items():
        torch.testing.assert_close(many["buffers"][name], buf, rtol=1e-9, atol=1e-12)
    # the face and pose steps touch the heads, the rec step the decoder: the check covers every part
    assert any(k.startswith("face_head") for k in one["face"]["grads"])
    assert any(k.startswith("decoder") for k in one["rec"]["grads"])


def test_split_cuts_any_batch_into_contiguous_blocks() -> None:
    assert [D.split(10, 3, r) for r in range(3)] == [(0, 4), (4, 3), (7, 3)]
    assert [D.split(10, 8, r) for r in range(8)] == [(0, 2), (2, 2), (4, 1), (5, 1), (6, 1), (7, 1), (8, 1), (9, 1)]
    assert [D.split(4, 2, r) for r in range(2)] == [(0, 2), (2, 2)]


def test_helpers_are_identities_in_one_process() -> None:
    x = torch.randn(3, 4, requires_grad=True)
    assert D.all_gather_with_grad(x) is x
    assert D.all_reduce_sum_with_grad(x) is x
    bn = D.convert_batchnorm(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4)))
    assert isinstance(bn[1], D.GlobalBatchNorm)
    ref = torch.nn.BatchNorm1d(4)
    ref.load_state_dict(bn[1].state_dict())
    y = torch.randn(6, 4)
    torch.testing.assert_close(bn[1](y), ref(y))


@pytest.mark.slow
def test_torchrun_run_matches_one_process(tmp_path) -> None:
    """``torchrun -m facepcl.train`` with 2 gloo processes logs the same losses as one process."""
    root = make_video_tree(tmp_path / "data", identities=4, videos=1, frames=2)
    args = ["smoke", f"data.root={root}", *TINY, "batch.rec=2", "batch.face=2", "batch.pose=2",
            "train.max_steps=2", "data.samples_per_epoch=4", "export.enabled=false",
            # Adam turns float32 rounding noise in near-zero gradients into full-size steps of random sign;
            # a small learning rate keeps that from hiding the comparison after the first update
            "optim.lr=1e-6"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "facepcl.train", *args, f"output_dir={tmp_path / 'two'}"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the one-process reference runs in this process (one thread, as each torchrun process): no second start-up
    from facepcl.train import main

    with torch_threads():  # the run sets train.threads; the test process gets its own count back
        assert main([*args, f"output_dir={tmp_path / 'one'}", "train.threads=1"]) == 0

    def rows(folder: Path) -> list[dict]:
        return [json.loads(ln) for ln in (folder / "metrics.jsonl").read_text().splitlines()]

    a, b = rows(tmp_path / "one"), rows(tmp_path / "two")
    assert len(a) == len(b) == 2
    for ra, rb in zip(a, b, strict=True):
        for k in ("loss", "rec", "orth", "face", "pose", "w_face", "lr"):
            assert rb[k] == pytest.approx(ra[k], rel=1e-3, abs=1e-9), (ra["step"], k)
    # the first iteration runs on the same weights, data and mixing: close to float32 rounding
    assert b[0]["rec"] == pytest.approx(a[0]["rec"], rel=1e-5)
    assert b[0]["face"] == pytest.approx(a[0]["face"], rel=1e-5)
