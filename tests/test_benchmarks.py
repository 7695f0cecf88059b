"""The benchmark scripts run, measure every path they promise, and report ratios (tiny sizes: speed is not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _run(script: str, tmp_path: Path, *args: str) -> dict:
    out = tmp_path / f"{script}.json"
    proc = subprocess.run([sys.executable, str(BENCH / script), *args, "--rounds", "1", "--min-time", "0",
                           "--device", "cpu", "--json", str(out)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "vs reference" in proc.stdout
    assert "load average" in proc.stdout
    return json.loads(out.read_text())


@pytest.mark.slow
def test_encoder_benchmark_measures_every_path(tmp_path: Path) -> None:
    # --no-compile: the compiled encoder is tested in tests/test_accel.py (it costs 15 s to compile again here)
    result = _run("encoder.py", tmp_path, "--sizes", "64", "--batches", "2", "--no-compile")
    paths = {r["path"]: r for r in result["rows"]}
    assert set(paths) == {"reference", "fast", "onnxruntime", "onnxruntime-int8"}
    assert paths["onnxruntime-int8"]["dtype"] == "int8"
    assert paths["reference"]["ratio"] == pytest.approx(1.0)
    auto = result["auto"]["64"]  # what encoder_runtime="auto" picked, from its own measurement in this run
    assert auto["chosen_by"] == "measurement"
    assert auto["runtime"] == min(auto["seconds"], key=auto["seconds"].get)
    assert all(r["images_per_s"] > 0 for r in result["rows"])
    assert all(r["gflops"] > 0 for r in result["rows"])


@pytest.mark.slow
def test_training_benchmark_measures_reference_and_facepcl(tmp_path: Path) -> None:
    result = _run("train_step.py", tmp_path, "--batches", "4,4,2,4", "--no-fp32")
    paths = {r["path"]: r for r in result["rows"]}
    assert set(paths) == {"reference", "facepcl"}
    # Both compute the same iteration: the FLOP counts agree to within 1%.
    assert paths["facepcl"]["gflop"] == pytest.approx(paths["reference"]["gflop"], rel=0.01)


@pytest.mark.slow
def test_crops_benchmark_compares_pipeline_and_bare_encoder(tmp_path: Path) -> None:
    out = tmp_path / "crops.json"
    proc = subprocess.run([sys.executable, str(BENCH / "crops.py"), "--batch", "4", "--rounds", "1", "--min-time", "0",
                           "--device", "cpu", "--json", str(out)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert {r["path"] for r in rows} == {"exact", "default (fast)"}
    assert all(r["bare_images_per_s"] > 0 for r in rows)
    assert all(r["pipeline_images_per_s"] > 0 for r in rows)
    assert all(r["ratio"] > 0 for r in rows)
