"""`facepcl info` and `facepcl models`: what they report matches the machine, the environment and the registry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy
import onnxruntime
import pyarrow
import torch

import facepcl
from facepcl import PCLConfig, PCLModel
from facepcl.cli import main
from facepcl.registry import list_models


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def test_info_json_describes_this_machine(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("FACEPCL_HOME", "HF_HUB_CACHE")}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1", FACEPCL_MODEL="some/model")
    proc = subprocess.run([sys.executable, "-m", "facepcl", "info", "--json"], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["facepcl"] == facepcl.__version__
    assert info["torch"] == torch.__version__
    assert info["numpy"] == numpy.__version__
    assert info["pyarrow"] == pyarrow.__version__
    assert info["onnxruntime"] == onnxruntime.__version__
    assert info["torch_cuda_build"] == torch.version.cuda
    assert info["cuda_available"] == torch.cuda.is_available()
    assert len(info["cuda_devices"]) == torch.cuda.device_count()
    flags = cpu_flags()
    assert info["cpu_bf16"] == bool({"avx512_bf16", "amx_bf16"} & flags)
    assert info["cpu_amx"] == ("amx_tile" in flags)
    # cache paths follow the environment of the call, never site-packages or the working directory
    assert info["hf_home"] == str(tmp_path / "hf")
    assert info["facepcl_home"] == str(tmp_path / "hf" / "facepcl")
    assert info["hf_hub_cache"] == str(tmp_path / "hf" / "hub")
    assert info["hf_hub_offline"] is True
    assert info["default_model"] == "some/model"


def test_info_text_lists_every_field(capsys, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FACEPCL_HOME", str(tmp_path / "fp"))
    assert main(["info"]) == 0
    lines = capsys.readouterr().out.splitlines()
    keys = [line.split()[0] for line in lines]
    assert keys[0] == "facepcl"
    assert len(keys) == len(set(keys)) >= 20
    assert "facepcl_home" in keys
    assert any(line.endswith(str(tmp_path / "fp")) for line in lines)
    # values start in one column
    assert len({len(line) - len(line[len(k):].lstrip()) for line, k in zip(lines, keys, strict=True)}) == 1


def test_models_lists_source_licence_and_state(capsys, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FACEPCL_HOME", str(tmp_path))
    monkeypatch.delenv("FACEPCL_MODEL", raising=False)
    proc = subprocess.run([sys.executable, "-m", "facepcl", "models"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "FACEPCL_HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for m in list_models():
        assert m.name in out
        assert f"source:   {m.source}" in out
        assert f"licence:  {m.license}" in out
    assert "pcl-demo (default)" in out
    official = out[out.index("pcl-vox-official"):]
    assert f"{tmp_path}/models/pcl-vox-official [not present]" in official
    assert "get it:" in official

    # once the converted weights are where the registry says, the model is available (and can be the default)
    PCLModel(PCLConfig(name="stand-in")).save_pretrained(str(tmp_path / "models" / "pcl-vox-official"))
    monkeypatch.setenv("FACEPCL_MODEL", "pcl-vox-official")
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    official = out[out.index("pcl-vox-official"):]
    assert official.startswith("pcl-vox-official (default)")
    assert "[available]" in official
    assert "get it:" not in official
    assert "pcl-demo (default)" not in out
