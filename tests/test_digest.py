"""One encoder digest (``encoder_sha256``) for exports, heads and evaluation records."""

from __future__ import annotations

import json

import pytest
import torch

from facepcl import hub
from facepcl._utils.digest import FIELD, encoder_digest, recorded_digest
from facepcl.config import feature_dim
from facepcl.errors import ModelLoadError
from facepcl.heads import HeadSpec, TaskHead, attach_head, load_head, save_head


def test_digest_pins_the_encoder_tensors(random_pcl_model, random_model_dir):
    digest = encoder_digest(random_pcl_model)
    assert len(digest) == 64
    assert digest == encoder_digest(random_pcl_model.encoder)
    assert encoder_digest(hub.load(random_model_dir, device="cpu")) == digest  # file round trip: same tensors
    with torch.no_grad():
        next(random_pcl_model.encoder.parameters()).view(-1)[0] += 1e-3
    assert encoder_digest(random_pcl_model) != digest
    assert encoder_digest(random_pcl_model.to(torch.float64)) != encoder_digest(random_pcl_model.to(torch.float32))


def test_embedder_provenance_records_the_encoder_digest(random_model_dir):
    from facepcl import FaceEmbedder

    meta = FaceEmbedder(str(random_model_dir), device="cpu", detect=False).provenance()
    assert meta[FIELD] == encoder_digest(hub.load(random_model_dir, device="cpu"))
    assert "weights_sha256" not in meta


def test_a_head_file_pins_its_encoder(random_pcl_model, tmp_path):
    spec = HeadSpec(name="fer", task="classification", features=["trunk"], input_size=64, in_dim=feature_dim(64),
                    out_dim=3, encoder={FIELD: encoder_digest(random_pcl_model), "model_id": "test"})
    folder = save_head(TaskHead(spec), tmp_path)
    data = json.loads((folder / "head.json").read_text())
    assert data["encoder"][FIELD] == spec.encoder[FIELD]
    head = load_head(folder, device="cpu")
    assert head.spec.encoder == {FIELD: spec.encoder[FIELD], "model_id": "test"}
    assert recorded_digest(data["encoder"]) == spec.encoder[FIELD]
    assert recorded_digest({"weights_sha256": spec.encoder[FIELD]}) is None  # one field name only
    attach_head(random_pcl_model, head)  # same encoder: accepted
    with torch.no_grad():
        next(random_pcl_model.encoder.parameters()).view(-1)[0] += 1.0
    with pytest.raises(ModelLoadError, match="trained on encoder weights"):
        attach_head(random_pcl_model, head)
