"""Head modules, the head.json/head.safetensors format (strict like the model format), attaching and predicting."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import facepcl
from facepcl.errors import ModelLoadError
from facepcl.heads import (
    BNLinearHead,
    HeadSpec,
    LinearHead,
    MLPHead,
    TaskHead,
    attach_head,
    list_heads,
    load_head,
    load_with_head,
    predict_crops,
    save_head,
)


def _spec(**kw) -> HeadSpec:
    base = {"name": "fer", "task": "classification", "features": ["trunk"], "input_size": 32, "in_dim": 512,
            "out_dim": 3, "label_names": ["a", "b", "c"]}
    return HeadSpec(**{**base, **kw})


def test_linear_head_init_matches_the_reference_probe():
    torch.manual_seed(0)
    h = LinearHead(6272, 7)
    assert h.fc.weight.shape == (7, 6272)
    assert abs(h.fc.weight.std().item() - 0.01) < 5e-4
    assert abs(h.fc.weight.mean().item()) < 5e-4
    assert torch.count_nonzero(h.fc.bias) == 0


def test_bn_linear_and_mlp_shapes():
    bn = BNLinearHead(32768, 3)
    assert isinstance(bn.bn, torch.nn.BatchNorm1d)
    assert bn.bn.num_features == 32768
    assert bn.fc.out_features == 3
    mlp = MLPHead(64, 5, hidden_dims=(32, 16), dropout=0.1).eval()
    assert mlp(torch.randn(4, 64)).shape == (4, 5)
    with pytest.raises(ValueError, match="hidden layer"):
        MLPHead(64, 5, hidden_dims=())


def test_spec_rejects_bad_fields():
    with pytest.raises(ValueError, match="task"):
        _spec(task="dance")
    with pytest.raises(ValueError, match="3 label names for out_dim 4"):
        _spec(out_dim=4)
    with pytest.raises(ValueError, match="features"):
        _spec(features=["trunk", "trunk"])
    with pytest.raises(ValueError, match=r"unknown keys \['colour'\], missing keys \['in_dim'\]"):
        d = _spec().to_dict()
        d["colour"] = "red"
        del d["in_dim"]
        HeadSpec.from_dict(d)


def test_save_load_round_trip_bit_exact(tmp_path):
    torch.manual_seed(1)
    head = TaskHead(_spec(kind="mlp", hidden_dims=[16], metrics={"accuracy": 0.5}, license="CC-BY-NC-4.0"))
    head.net.layers[1].running_mean.normal_()  # BatchNorm statistics travel too
    folder = save_head(head, tmp_path)
    assert folder.name == "head-fer"
    assert (folder / "head.json").is_file()
    assert json.loads((folder / "head.json").read_text())["format"] == "facepcl-head"
    assert json.loads((folder / "head.json").read_text())["license"] == "CC-BY-NC-4.0"
    loaded = load_head(tmp_path, device="cpu")
    assert loaded.spec.to_dict() == head.spec.to_dict()
    for (k, a), (k2, b) in zip(head.net.state_dict().items(), loaded.net.state_dict().items(), strict=True):
        assert k == k2
        assert torch.equal(a, b)
    assert not loaded.training
    assert list_heads(tmp_path) == ["fer"]
    assert load_head(folder).spec.name == "fer"  # the head folder itself


def test_load_is_strict_and_names_keys(tmp_path):
    head = TaskHead(_spec())
    folder = save_head(head, tmp_path)
    w = folder / "head.safetensors"
    state = load_file(w)
    save_file({**state, "fc.extra": torch.zeros(1)}, w)
    with pytest.raises(ModelLoadError, match=r"unexpected keys: fc\.extra"):
        load_head(folder)
    save_file({"fc.weight": state["fc.weight"]}, w)
    with pytest.raises(ModelLoadError, match=r"missing keys: fc\.bias"):
        load_head(folder)
    save_file({"fc.weight": torch.zeros(3, 10), "fc.bias": state["fc.bias"]}, w)
    with pytest.raises(ModelLoadError, match=r"mis-shaped keys: fc\.weight: file \(3, 10\) vs head \(3, 512\)"):
        load_head(folder)
    w.write_bytes(b"\x00" * 10)
    with pytest.raises(ModelLoadError, match="not a readable safetensors file"):
        load_head(folder)


def test_load_head_source_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="holds no head"):
        load_head(tmp_path)
    save_head(TaskHead(_spec()), tmp_path)
    save_head(TaskHead(_spec(name="other")), tmp_path)
    with pytest.raises(ModelLoadError, match=r"holds heads \['fer', 'other'\]; name the one"):
        load_head(tmp_path)
    with pytest.raises(ModelLoadError, match="has no head 'pose'"):
        load_head(tmp_path, "pose")
    assert load_head(tmp_path, "other").spec.name == "other"


def _trained_like(model, task="classification", **kw):
    from facepcl._utils.digest import encoder_digest

    spec = _spec(task=task, encoder={"encoder_sha256": encoder_digest(model), "model_id": "test"}, **kw)
    return TaskHead(spec).eval()


def test_attach_checks_encoder_and_predicts(random_pcl_model, tmp_path):
    model = random_pcl_model
    head = _trained_like(model)
    attach_head(model, head)
    assert set(model.task_heads) == {"fer"}
    assert "task_heads" not in dict(model.named_modules())  # not saved with the encoder
    crops = torch.rand(2, 3, 64, 64)
    out = predict_crops(model, crops)["fer"]
    assert out.scores.shape == (2, 3)
    assert np.allclose(out.scores.sum(1), 1.0, atol=1e-5)
    # the head saw the crops resized to its 32 px input: same as running it by hand
    from facepcl.preprocess import to_input

    with torch.no_grad():
        feats = model.encoder(to_input(crops, 32, "bilinear", model.config.preprocess))
        ref = torch.softmax(head(feats), 1).numpy()
    np.testing.assert_allclose(out.scores, ref, rtol=1e-5, atol=1e-6)
    assert list(out.labels) == [["a", "b", "c"][i] for i in ref.argmax(1)]
    other = _other_model()
    with pytest.raises(ModelLoadError, match="was trained on encoder weights"):
        attach_head(other, head)
    attach_head(other, head, check_encoder=False)


def _other_model():
    torch.manual_seed(99)
    return facepcl.PCLModel(facepcl.PCLConfig()).eval()


def test_postprocess_per_task(random_pcl_model):
    x = torch.tensor([[2.0, -2.0, 0.0]])
    ml = TaskHead(_spec(task="multilabel"))
    ml.net.fc.weight.data = torch.eye(3, 512)
    ml.net.fc.bias.data.zero_()
    feats = torch.zeros(1, 512)
    feats[0, :3] = x
    p = ml.predict(feats)
    np.testing.assert_allclose(p.scores, torch.sigmoid(x).numpy(), rtol=1e-6)
    assert p.labels.tolist() == [[True, False, True]]  # sigmoid(0) = 0.5 counts as present
    reg = TaskHead(_spec(task="regression", out_dim=3, label_names=["yaw", "pitch", "roll"]))
    reg.net.fc.weight.data = torch.eye(3, 512)
    reg.net.fc.bias.data.zero_()
    assert reg.predict(feats).scores.tolist() == [[2.0, -2.0, 0.0]]
    assert reg.predict(feats).labels is None
    ver = TaskHead(_spec(task="verification", out_dim=3, label_names=[]))
    emb = ver.predict(torch.randn(4, 512)).scores
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)


def test_load_with_head_from_a_saved_model_folder(tmp_path, random_pcl_model):
    random_pcl_model.save_pretrained(tmp_path)
    save_head(_trained_like(random_pcl_model), tmp_path)
    model = load_with_head(tmp_path, head="fer", device="cpu")
    assert set(model.task_heads) == {"fer"}
    crops = np.random.default_rng(0).integers(0, 256, (2, 40, 40, 3), dtype=np.uint8)  # EmbeddingResult.crops
    out = predict_crops(model, crops)
    ref = predict_crops(model, torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255)
    assert out["fer"].scores.shape == (2, 3)
    np.testing.assert_allclose(out["fer"].scores, ref["fer"].scores)
    with pytest.raises(ValueError, match="crops must be"):
        predict_crops(model, np.zeros((2, 40, 40), np.uint8))
    with pytest.raises(ModelLoadError, match="has no head 'pose'"):
        load_with_head(tmp_path, head="pose", device="cpu")


def test_inference_imports_no_training_code():
    import subprocess
    import sys

    code = ("import sys, facepcl.heads as h; h.attach_head; h.predict_crops; h.load_head; "
            "print(sorted(m for m in sys.modules if m.startswith('facepcl') and "
            "m.endswith(('_train', '_finetune', 'protocols'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
