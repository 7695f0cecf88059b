"""Heads on the Hub: push uploads the head folder (and the encoder when asked); load from a stand-in Hub."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import facepcl
from facepcl._utils.digest import encoder_digest
from facepcl.heads import HeadSpec, TaskHead, push_head_to_hub, save_head
from tests._fakehub import FakeHub


def _head(model) -> TaskHead:
    torch.manual_seed(5)
    spec = HeadSpec(name="fer", task="classification", features=["trunk"], input_size=32, in_dim=512, out_dim=2,
                    label_names=["no", "yes"], encoder={"encoder_sha256": encoder_digest(model)})
    return TaskHead(spec)


def test_push_head_uploads_head_folder_and_optionally_the_encoder(random_pcl_model, monkeypatch):
    import huggingface_hub

    calls = []

    class Api:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, private=None, exist_ok=False):
            assert exist_ok

        def upload_folder(self, repo_id, folder_path, revision, commit_message, create_pr):
            calls.append(sorted(str(p.relative_to(folder_path)) for p in Path(folder_path).rglob("*") if p.is_file()))
            return type("Info", (), {"commit_url": f"http://hub/{repo_id}/commit/1", "pr_url": None})()

    monkeypatch.setattr(huggingface_hub, "HfApi", Api)
    head = _head(random_pcl_model)
    assert push_head_to_hub(head, "org/pcl") == "http://hub/org/pcl/commit/1"
    assert calls[0] == ["head-fer/head.json", "head-fer/head.safetensors"]
    push_head_to_hub(head, "org/pcl-ft", model=random_pcl_model)
    assert calls[1] == ["README.md", "config.json", "head-fer/head.json", "head-fer/head.safetensors",
                        "model.safetensors"]


@pytest.mark.slow
def test_load_with_head_from_the_hub(random_pcl_model, tmp_path):
    random_pcl_model.save_pretrained(tmp_path / "repo")
    head = _head(random_pcl_model)
    save_head(head, tmp_path / "repo")
    files = {str(p.relative_to(tmp_path / "repo")): p.read_bytes() for p in (tmp_path / "repo").rglob("*")
             if p.is_file()}
    code = textwrap.dedent("""
        import json, torch
        from facepcl.heads import load_head, load_with_head, predict_crops
        m = load_with_head("org/pcl-tiny", head="fer", device="cpu")
        torch.manual_seed(0)
        p = predict_crops(m, torch.rand(2, 3, 32, 32))["fer"]
        h = load_head("org/pcl-tiny", "fer")
        print(json.dumps({"heads": sorted(m.task_heads), "scores": p.scores.tolist(),
                          "bias": h.net.fc.bias.tolist(), "rev": m.provenance["revision"]}))
    """)
    with FakeHub() as hub:
        sha = hub.repo("org/pcl-tiny").add_commit(files)
        env = {**os.environ, "HF_ENDPOINT": hub.endpoint, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0",
               "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
        env.pop("HF_HUB_CACHE", None)
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["heads"] == ["fer"]
    assert out["rev"] == sha
    assert out["bias"] == pytest.approx(head.net.fc.bias.tolist())
    torch.manual_seed(0)
    ref = facepcl.heads.predict_crops(random_pcl_model, torch.rand(2, 3, 32, 32), heads={"fer": head})["fer"].scores
    np.testing.assert_allclose(out["scores"], ref, rtol=1e-5, atol=1e-6)
