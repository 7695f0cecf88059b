"""Hub format: save/load round trips, strict loading, registry names, and downloads from a fake Hub."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import facepcl
from facepcl import ModelInfo, ModelLoadError, PCLConfig, PCLModel
from facepcl.registry import _REGISTRY
from tests._fakehub import FakeHub

ALL = ["encoder", "face_head", "pose_head", "decoder"]


def make_model(seed: int, components=ALL) -> PCLModel:
    torch.manual_seed(seed)
    model = PCLModel(PCLConfig(components=list(components), name=f"tiny-{seed}", license="Apache-2.0"))
    # non-trivial BatchNorm buffers, so the round trip covers them too
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2)
            m.num_batches_tracked.fill_(seed + 7)
    return model


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[Path, PCLModel]:
    model = make_model(1)
    folder = tmp_path_factory.mktemp("model")
    facepcl.save_pretrained(model, folder)
    return folder, model


def test_round_trip_is_bit_exact(saved) -> None:
    folder, model = saved
    loaded = facepcl.load(folder, components="all", device="cpu")
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert torch.equal(a[k], b[k]), k
    again = loaded.state_dict()
    folder2 = folder.parent / "again"
    loaded.save_pretrained(folder2)
    assert load_file(folder2 / "model.safetensors").keys() == load_file(folder / "model.safetensors").keys()
    for k, v in load_file(folder2 / "model.safetensors").items():
        assert torch.equal(v, again[k])


def test_bf16_round_trip_keeps_dtype(tmp_path) -> None:
    model = make_model(2, ["encoder"]).to(torch.bfloat16)
    facepcl.save_pretrained(model, tmp_path)
    loaded = facepcl.load(tmp_path, device="cpu", dtype="bf16")
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])
    assert next(loaded.parameters()).dtype == torch.bfloat16


def test_folder_contents_and_config(saved) -> None:
    folder, _ = saved
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["architecture"] == "pcl"
    assert cfg["feature_dim"] == 2048
    assert cfg["input_size"] == 64
    assert cfg["components"] == ALL
    pre = cfg["preprocess"]
    assert pre["crop_size"] == 64
    assert len(pre["template"]) == 5
    assert pre["color_order"] == "RGB"
    assert pre["value_range"] == [0.0, 1.0]
    assert pre["interpolation"] == "bilinear"
    assert cfg["detector"]["name"] == "retinaface_mobile0.25"
    assert cfg["license"] == "Apache-2.0"
    assert cfg["facepcl_version"] == facepcl.__version__
    card = (folder / "README.md").read_text()
    assert card.startswith("---\nlicense: apache-2.0\n")
    assert "library_name: facepcl" in card
    assert "tiny-1" in card
    assert "Apache-2.0" in card


def test_encoder_only_by_default(saved) -> None:
    folder, model = saved
    enc = facepcl.load(folder, device="cpu")
    assert enc.decoder is None
    assert enc.face_head is None
    assert enc.pose_head is None
    assert enc.provenance["components"] == ["encoder"]
    both = facepcl.load(folder, components=["decoder"], device="cpu")
    assert both.decoder is not None
    assert both.face_head is None
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(enc(x).face, model.eval()(x).face)


def _rewrite(folder: Path, tmp: Path, edit) -> Path:
    out = tmp / "edited"
    out.mkdir()
    (out / "config.json").write_text((folder / "config.json").read_text())
    state = load_file(folder / "model.safetensors")
    edit(state)
    save_file(state, out / "model.safetensors")
    return out


def test_missing_key_is_named(saved, tmp_path) -> None:
    out = _rewrite(saved[0], tmp_path, lambda s: s.pop("encoder.trunk.stage4.2.bias"))
    with pytest.raises(ModelLoadError, match=r"missing keys: encoder\.trunk\.stage4\.2\.bias"):
        facepcl.load(out, device="cpu")


def test_unexpected_key_is_named(saved, tmp_path) -> None:
    def edit(s):
        s["encoder.extra.weight"] = torch.zeros(3)
        s["classifier.weight"] = torch.zeros(3)

    out = _rewrite(saved[0], tmp_path, edit)
    with pytest.raises(ModelLoadError, match=r"classifier\.weight"):
        facepcl.load(out, device="cpu")
    s = load_file(out / "model.safetensors")
    s.pop("classifier.weight")
    save_file(s, out / "model.safetensors")
    with pytest.raises(ModelLoadError, match=r"unexpected keys: encoder\.extra\.weight"):
        facepcl.load(out, device="cpu")


def test_misshaped_key_is_named(saved, tmp_path) -> None:
    out = _rewrite(saved[0], tmp_path, lambda s: s.update({"decoder.fc.weight": torch.zeros(512, 100)}))
    with pytest.raises(ModelLoadError, match=r"decoder\.fc\.weight: file \(512, 100\) vs model \(512, 2048\)"):
        facepcl.load(out, components="all", device="cpu")


def test_corrupt_local_safetensors(saved, tmp_path) -> None:
    out = tmp_path / "corrupt"
    out.mkdir()
    (out / "config.json").write_text((saved[0] / "config.json").read_text())
    data = (saved[0] / "model.safetensors").read_bytes()
    (out / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="corrupt or truncated") as info:
        facepcl.load(out, device="cpu")
    assert str(out / "model.safetensors") in str(info.value)


def test_bad_config(saved, tmp_path) -> None:
    out = tmp_path / "badcfg"
    out.mkdir()
    (out / "model.safetensors").write_bytes((saved[0] / "model.safetensors").read_bytes())
    cfg = json.loads((saved[0] / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**cfg, "mystery": 1}))
    with pytest.raises(ModelLoadError, match=r"unknown keys \['mystery'\]"):
        facepcl.load(out, device="cpu")
    (out / "config.json").write_text(json.dumps({**cfg, "architecture": "resnet"}))
    with pytest.raises(ModelLoadError, match="not a facepcl model config"):
        facepcl.load(out, device="cpu")
    (out / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="cannot read the model config"):
        facepcl.load(out, device="cpu")


def test_missing_files_in_folder(tmp_path) -> None:
    with pytest.raises(ModelLoadError, match=r"has no config\.json"):
        facepcl.load(f"local-dir:{tmp_path}")


def test_unknown_name() -> None:
    with pytest.raises(ModelLoadError, match="not a registered name"):
        facepcl.load("no such model here")


def test_registry_names(saved, monkeypatch, tmp_path) -> None:
    names = [m.name for m in facepcl.list_models()]
    assert "pcl-demo" in names
    assert "pcl-vox-official" in names
    for m in facepcl.list_models():
        assert m.license
        assert m.source.split(":")[0] in ("package", "hf-hub", "local-dir")
    facepcl.register_model(ModelInfo(name="test-local", source=f"local-dir:{saved[0]}", license="Apache-2.0"))
    try:
        assert facepcl.load("test-local", device="cpu").provenance["kind"] == "local-dir"
        with pytest.raises(ValueError, match=r"already registered"):
            facepcl.register_model(ModelInfo(name="test-local", source="local-dir:/x"))
    finally:
        _REGISTRY.pop("test-local")
    monkeypatch.setenv("FACEPCL_HOME", str(tmp_path))
    with pytest.raises(ModelLoadError, match=r"facepcl convert best\.pth") as info:
        facepcl.load("pcl-vox-official")
    assert str(tmp_path) in str(info.value)


def test_official_name_resolves_after_convert(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("FACEPCL_HOME", str(tmp_path))
    make_model(5, ["encoder"]).save_pretrained(tmp_path / "models" / "pcl-vox-official")
    model = facepcl.load("pcl-vox-official", device="cpu")
    assert model.provenance["folder"] == str(tmp_path / "models" / "pcl-vox-official")


def test_device_and_dtype(saved) -> None:
    model = facepcl.load(saved[0], device="cpu", dtype=torch.float16)
    assert next(model.parameters()).dtype == torch.float16
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA device"):
            facepcl.load(saved[0], device="cuda")
    with pytest.raises(ValueError, match="unknown dtype"):
        facepcl.load(saved[0], dtype="int3")


def test_push_to_hub_uploads_the_saved_format(saved, monkeypatch) -> None:
    """push_to_hub creates the repo and uploads exactly what save_pretrained writes."""
    import huggingface_hub

    calls = {}

    class Api:
        def __init__(self, token=None):
            calls["token"] = token

        def create_repo(self, repo_id, private=None, exist_ok=False):
            calls["create"] = (repo_id, private, exist_ok)

        def upload_folder(self, repo_id, folder_path, revision, commit_message, create_pr):
            calls["files"] = {p.name: p.read_bytes() for p in Path(folder_path).iterdir()}
            calls["upload"] = (repo_id, revision, create_pr)
            return type("Info", (), {"commit_url": f"http://hub/{repo_id}/commit/abc", "pr_url": None})()

    monkeypatch.setattr(huggingface_hub, "HfApi", Api)
    url = facepcl.load(saved[0], components="all", device="cpu").push_to_hub("org/tiny", private=True, token="t")
    assert url == "http://hub/org/tiny/commit/abc"
    assert calls["create"] == ("org/tiny", True, True)
    assert calls["token"] == "t"
    assert sorted(calls["files"]) == ["README.md", "config.json", "model.safetensors"]
    from safetensors.torch import load as load_bytes

    uploaded = load_bytes(calls["files"]["model.safetensors"])
    original = load_file(saved[0] / "model.safetensors")
    assert uploaded.keys() == original.keys()
    assert all(torch.equal(uploaded[k], original[k]) for k in original)
    assert json.loads(calls["files"]["config.json"]) == json.loads((saved[0] / "config.json").read_text())


# --- downloads through huggingface_hub from a local stand-in for the Hub -----------------------------

SCRIPT_HEAD = textwrap.dedent("""
    import json, sys, torch, facepcl
    from safetensors.torch import load_file
    def digest(m):
        return float(sum(v.double().sum() for v in m.state_dict().values() if v.is_floating_point()))
""")


def run_py(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **env}
    return subprocess.run([sys.executable, "-c", SCRIPT_HEAD + textwrap.dedent(code)], env=full_env,
                          capture_output=True, text=True, timeout=300)


def digest(model: PCLModel) -> float:
    return float(sum(v.double().sum() for v in model.state_dict().values() if v.is_floating_point()))


@pytest.fixture()
def hub(tmp_path):
    with FakeHub() as h:
        env = {"HF_ENDPOINT": h.endpoint, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_DISABLE_XET": "1",
               "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_OFFLINE": "0"}
        env.pop("HF_HUB_CACHE", None)
        yield h, env


@pytest.mark.slow
def test_download_pinning_and_offline_reuse(hub, tmp_path) -> None:
    h, env = hub
    v1, v2 = make_model(11, ["encoder"]), make_model(12, ["encoder"])
    facepcl.save_pretrained(v1, tmp_path / "v1")
    facepcl.save_pretrained(v2, tmp_path / "v2")
    repo = h.repo("org/pcl-tiny")
    sha1 = repo.add_folder(tmp_path / "v1", ref="v1")
    sha2 = repo.add_folder(tmp_path / "v2", ref="main")

    proc = run_py("""
        out = {}
        m = facepcl.load("org/pcl-tiny", device="cpu")
        out["main"] = [digest(m), m.provenance["revision"]]
        m = facepcl.load("hf-hub:org/pcl-tiny", revision="v1", device="cpu")
        out["v1"] = [digest(m), m.provenance["revision"]]
        m = facepcl.load("org/pcl-tiny", revision=SHA1, device="cpu")
        out["sha"] = [digest(m), m.provenance["revision"]]
        print(json.dumps(out))
    """.replace("SHA1", repr(sha1)), env)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["main"] == [pytest.approx(digest(v2)), sha2]
    assert out["v1"] == [pytest.approx(digest(v1)), sha1]
    assert out["sha"] == [pytest.approx(digest(v1)), sha1]
    cache = tmp_path / "hf_home" / "hub" / "models--org--pcl-tiny"
    assert (cache / "snapshots" / sha1 / "model.safetensors").exists()

    # Offline after the first download: HF_HUB_OFFLINE=1, and the server must see no request at all; a model
    # never downloaded is a clear error (in the same process: one start-up less)
    seen = len(h.requests)
    proc = run_py("""
        m = facepcl.load("org/pcl-tiny", device="cpu"); a = digest(m)
        m = facepcl.load("org/pcl-tiny", revision="v1", device="cpu"); b = digest(m)
        try:
            facepcl.load("org/never-downloaded", device="cpu")
            error = None
        except Exception as e:
            error = f"{type(e).__name__}: {e}"
        print(json.dumps([a, b, error]))
    """, {**env, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr
    a, b, error = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [a, b] == [pytest.approx(digest(v2)), pytest.approx(digest(v1))]
    assert len(h.requests) == seen
    assert error is not None, "loading a never-downloaded model offline did not fail"
    assert error.startswith("ModelLoadError: ")
    assert "not in the local cache" in error
    assert "facepcl download org/never-downloaded" in error
    # local_files_only=True does the same without the environment variable
    proc = run_py("""
        print(json.dumps(digest(facepcl.load("org/pcl-tiny", local_files_only=True, device="cpu"))))
    """, env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == pytest.approx(digest(v2))
    assert len(h.requests) == seen


@pytest.mark.slow
def test_hub_errors(hub, tmp_path) -> None:
    h, env = hub
    model = make_model(13, ["encoder"])
    facepcl.save_pretrained(model, tmp_path / "m")
    files = {p.name: p.read_bytes() for p in (tmp_path / "m").iterdir()}
    h.repo("org/no-weights").add_commit({"config.json": files["config.json"]})
    corrupt = files["model.safetensors"][: len(files["model.safetensors"]) // 2]
    h.repo("org/corrupt").add_commit({"config.json": files["config.json"], "model.safetensors": corrupt})
    h.repo("org/good").add_commit(files)

    proc = run_py("""
        res = {}
        for name, kw in [("org/missing-repo", {}), ("org/no-weights", {}), ("org/corrupt", {}),
                         ("org/good", {"revision": "no-such-branch"})]:
            try:
                facepcl.load(name, device="cpu", **kw)
                res[name] = "loaded"
            except facepcl.ModelLoadError as e:
                res[name] = str(e)
        print(json.dumps(res))
    """, env)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "org/missing-repo was not found" in res["org/missing-repo"]
    assert "has no model.safetensors" in res["org/no-weights"]
    assert "corrupt or truncated" in res["org/corrupt"]
    assert "force_download=True" in res["org/corrupt"]
    assert "has no revision 'no-such-branch'" in res["org/good"]


@pytest.mark.slow
def test_cli_download_then_offline(hub, tmp_path) -> None:
    h, env = hub
    model = make_model(14, ["encoder"])
    facepcl.save_pretrained(model, tmp_path / "m")
    sha = h.repo("org/dl").add_folder(tmp_path / "m")
    proc = subprocess.run([sys.executable, "-m", "facepcl", "download", "org/dl"], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert sha in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "facepcl", "download", "org/absent"], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert "org/absent was not found" in proc.stderr
    proc = run_py("""
        print(json.dumps(digest(facepcl.load("org/dl", device="cpu"))))
    """, {**env, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == pytest.approx(digest(model))
