"""Which runtime runs the fast encoder: eager torch, ONNX Runtime float32 or ONNX Runtime int8, chosen by measurement.

The candidates (:data:`ENCODER_RUNTIMES`, the ``encoder_runtime=`` option of
:class:`~facepcl.FaceEmbedder`, ``facepcl embed --encoder-runtime``):

- ``"torch"``: the :class:`~facepcl.runtime._accel.Plan` of :mod:`facepcl.runtime._accel`
  (bf16 where native, else float32; channels_last);
- ``"onnxruntime"``: the float32 encoder graph on ONNX Runtime's CPU
  provider (:func:`facepcl.runtime._onnx.encoder_onnx`: exported from the
  model and checked within 1e-4 of the exact path);
- ``"onnxruntime-int8"``: the int8 graph of :mod:`facepcl.runtime._int8`,
  only for a model whose folder holds a calibration (``int8.json``) of this
  very encoder and crop size that passed the faithfulness gate.

``"auto"`` (the default) picks, on a CPU in ``mode="fast"``, the fastest of
torch, ONNX Runtime float32 and (only where bf16 is not native:
:func:`~facepcl.runtime._accel.native_bf16`) int8, by timing each on a batch
of :data:`MEASURE_BATCH` random crops (:func:`measure`), once per CPU,
encoder and crop size: per process, and in ``facepcl_home()/encoders/choices``
keyed by the CPU's model and flags, the oneDNN ISA cap and the library
versions (not the thread count or an embedder's batch size), so that every
embedder of a model on one machine runs the same runtime and gives the same
codes (a resumed export must run what it started with). Everywhere else ``"auto"`` is torch: the exact
mode (the reference network itself), CUDA, and an explicit ``dtype`` or
``compile=True`` (torch options).

A forced runtime that cannot run raises (ValueError or
:class:`~facepcl.runtime._int8.StaleCalibrationError`) with the reason; it never
falls back. :attr:`EncoderRuntime.choice` records what runs and why.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._utils.atomic import atomic_write
from .._utils.digest import encoder_digest
from ..errors import OutputError
from ._accel import EncoderRunner, Plan, _weights_version, native_bf16
from ._int8 import StaleCalibrationError, check_calibration, int8_onnx, model_calibration
from ._onnx import OrtEncoder, encoder_onnx, encoders_dir

#: The values of the ``encoder_runtime=`` option.
ENCODER_RUNTIMES = ("auto", "torch", "onnxruntime", "onnxruntime-int8")
#: The batch the choice is measured at: one regime, facepcl's bulk batches, whatever an embedder's
#: ``batch_size``, so that every embedder of one model on one machine runs the same runtime.
MEASURE_BATCH = 32
#: Timed calls of each candidate (after one warm-up call), interleaved.
MEASURE_ROUNDS = 3
_CHOICES: dict[str, RuntimeChoice] = {}
_CHOICES_LOCK = threading.Lock()


def check_runtime(runtime: Any, where: str) -> None:
    """Raise ValueError naming ``where`` unless ``runtime`` is one of :data:`ENCODER_RUNTIMES`."""
    if runtime not in ENCODER_RUNTIMES:
        raise ValueError(f"{where}: encoder_runtime must be one of {ENCODER_RUNTIMES}, got {runtime!r}")


@dataclass(frozen=True)
class RuntimeChoice:
    """What runs the encoder, and why.

    Attributes:
        runtime: "torch", "onnxruntime" or "onnxruntime-int8".
        dtype: The compute dtype ("float32", "bfloat16", "float16" or "int8").
        chosen_by: "forced" (the option named it), "measurement" (fastest of
            the candidates) or "rule" (the only candidate: exact mode, CUDA, a
            torch ``dtype``/``compile`` option).
        seconds: Measured seconds per batch of each candidate (measurement only).
        batch: The batch it was measured at (measurement only).
        excluded: Why each left-out candidate was left out.
    """

    runtime: str
    dtype: str
    chosen_by: str
    seconds: dict[str, float] = field(default_factory=dict)
    batch: int | None = None
    excluded: dict[str, str] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)


def cpu_signature() -> dict[str, Any]:
    """What decides which runtime is fastest on this CPU: model name, flags, oneDNN ISA cap, versions."""
    import onnxruntime as ort

    from .._utils.version import __version__

    model, flags = "", ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and not model:
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = " ".join(sorted(value.split()))
                    break
    except OSError:
        pass
    model = model or platform.processor()
    return {"cpu": model, "flags": flags, "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", ""),
            "native_bf16": native_bf16("cpu"), "torch": torch.__version__,
            "onnxruntime": ort.__version__, "facepcl": __version__}


def measure(calls: Mapping[str, Callable[[], Any]], rounds: int = MEASURE_ROUNDS) -> dict[str, float]:
    """Median seconds of each call: one warm-up call each, then ``rounds`` interleaved rounds (A, B, A, B ...)."""
    times: dict[str, list[float]] = {k: [] for k in calls}
    with torch.inference_mode():
        for run in calls.values():
            run()
        for _ in range(rounds):
            for name, run in calls.items():
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


class EncoderRuntime:
    """The fast encoder as :class:`~facepcl.FaceEmbedder` runs it: a runtime resolved once, then called.

    Args:
        model: The :class:`~facepcl.PCLModel` (its ``encoder`` runs; its folder may hold ``int8.json``).
        device: Where it runs.
        plan: The torch plan (:func:`~facepcl.runtime._accel.encoder_plan`).
        runtime: One of :data:`ENCODER_RUNTIMES`.
        crop_size: Side S of the crops it encodes.
        torch_options: Whether ``dtype`` or ``compile`` was given (they name torch).

    Raises:
        ValueError: ``runtime`` is not one of :data:`ENCODER_RUNTIMES`, or
            names ONNX Runtime where only torch can run (exact mode, not a CPU,
            with a torch ``dtype`` or ``compile``).
    """

    def __init__(self, model: nn.Module, device: torch.device, plan: Plan, runtime: str = "auto", *,
                 crop_size: int, torch_options: bool = False) -> None:
        check_runtime(runtime, "FaceEmbedder")
        self.model = model
        self.device = torch.device(device)
        self.plan = plan
        self.requested = runtime
        self.crop_size = int(crop_size)
        self.batch = MEASURE_BATCH
        self._torch = EncoderRunner(model.encoder, self.device, plan)
        self._lock = threading.Lock()
        self._choice: RuntimeChoice | None = None
        self._run: Callable[[torch.Tensor], Any] | None = None
        self._version: tuple | None = None
        only_torch = self._torch_only(torch_options)
        if only_torch and runtime not in ("auto", "torch"):
            raise ValueError(f"FaceEmbedder: encoder_runtime={runtime!r} runs on ONNX Runtime on a CPU, but "
                             f"{only_torch}; use encoder_runtime='torch' (or 'auto'), or mode='fast' on a CPU "
                             "without dtype/compile")
        self._only_torch = only_torch

    def _torch_only(self, torch_options: bool) -> str:
        if self.plan.exact:
            return "mode='exact' runs the reference network in torch"
        if self.device.type != "cpu":
            return f"the encoder runs on {self.device}"
        if torch_options:
            return "dtype or compile options configure torch"
        return ""

    @property
    def channels_last(self) -> bool:
        """Whether the input should come in channels_last memory (torch's fast plan; ONNX Runtime takes NCHW)."""
        return self.plan.channels_last and self.choice.runtime == "torch"

    @property
    def choice(self) -> RuntimeChoice:
        """The runtime that runs (resolved, and measured if need be, on first use)."""
        self._resolve()
        assert self._choice is not None
        return self._choice

    @property
    def resolved(self) -> RuntimeChoice | None:
        """The choice when it is made or needs no measurement (torch only, or forced torch), else None."""
        if self._choice is None and (self._only_torch or self.requested == "torch"):
            self._resolve()
        return self._choice

    def describe(self) -> dict[str, Any]:
        """What ``accel["encoder"]`` records: the plan's fields and the runtime (:attr:`choice` says why).

        For ONNX Runtime, ``dtype`` is that of the graph and ``channels_last`` False.
        """
        choice = self.choice
        if choice.runtime == "torch":
            return {**self.plan.describe(), "runtime": "torch"}
        return {"dtype": choice.dtype, "channels_last": False, "compile": False, "runtime": choice.runtime}

    def __call__(self, x: torch.Tensor):
        """Encode ``(B, 3, S, S)`` float network input; returns ``PCLFeatures`` of ``(B, D)`` float32."""
        self._resolve()
        assert self._run is not None
        return self._run(x)

    # -- resolution ----------------------------------------------------------------------------------------

    def _resolve(self) -> None:
        version = None if self._only_torch else _weights_version(self.model.encoder)
        if self._choice is not None and version == self._version:
            return
        with self._lock:
            if self._choice is not None and version == self._version:
                return
            self._choice, self._run = self._decide()
            self._version = version

    def _decide(self) -> tuple[RuntimeChoice, Callable[[torch.Tensor], Any]]:
        torch_choice = RuntimeChoice("torch", self.plan.describe()["dtype"], "rule")
        if self._only_torch:
            return torch_choice, self._torch
        if self.requested == "torch":
            return RuntimeChoice("torch", self.plan.describe()["dtype"], "forced"), self._torch
        digest = encoder_digest(self.model.encoder)
        if self.requested == "onnxruntime":
            return RuntimeChoice("onnxruntime", "float32", "forced"), OrtEncoder(self._ort_fp32(digest))
        if self.requested == "onnxruntime-int8":
            return (RuntimeChoice("onnxruntime-int8", "int8", "forced"),
                    OrtEncoder(self._ort_int8(digest, forced=True)))  # type: ignore[arg-type]
        return self._auto(digest)

    def _ort_fp32(self, digest: str) -> Path:
        """The float32 graph (exported and checked on first use)."""
        return encoder_onnx(self.model, self.crop_size, digest)

    def _ort_int8(self, digest: str, forced: bool) -> Path | str:
        """The int8 graph, or (unless ``forced``, which raises instead) why there is none."""
        try:
            calibration, path = model_calibration(self.model)
            if calibration is None:
                where = f"no {path}" if path else "the model was not loaded from a folder"
                raise StaleCalibrationError(f"encoder_runtime='onnxruntime-int8' needs the model folder's int8 "
                                            f"calibration ({where}); make one with tools/calibrate_int8.py")
            check_calibration(calibration, digest, self.crop_size, str(path))
            if not calibration.passed:
                raise StaleCalibrationError(f"{path}: the int8 calibration failed its faithfulness gate on "
                                            f"held-out faces ({calibration.heldout}); the int8 encoder is not "
                                            "used: recalibrate (tools/calibrate_int8.py) or use another runtime")
            return int8_onnx(self.model, calibration, digest)
        except (StaleCalibrationError, RuntimeError, OutputError) as e:
            if forced:
                raise
            return str(e)

    def _auto(self, digest: str) -> tuple[RuntimeChoice, Callable[[torch.Tensor], Any]]:
        graphs: dict[str, Path] = {}  # the ONNX Runtime candidates; sessions are opened only to run them
        excluded: dict[str, str] = {}
        try:
            graphs["onnxruntime"] = self._ort_fp32(digest)
        except (RuntimeError, OutputError) as e:  # an unfaithful export or an unwritable cache: not a candidate
            excluded["onnxruntime"] = str(e)
        if native_bf16(self.device):
            excluded["onnxruntime-int8"] = "this CPU computes bf16 natively"
        elif "onnxruntime" in excluded:
            excluded["onnxruntime-int8"] = "the float32 graph it is built from is not available"
        else:
            int8 = self._ort_int8(digest, forced=False)  # its graph comes from the float32 one, already built
            if isinstance(int8, str):
                excluded["onnxruntime-int8"] = int8
            else:
                graphs["onnxruntime-int8"] = int8
        dtypes = {"torch": self.plan.describe()["dtype"], "onnxruntime": "float32", "onnxruntime-int8": "int8"}
        sig = {**cpu_signature(), "encoder_sha256": digest, "crop_size": self.crop_size, "batch": self.batch,
               "torch_plan": self.plan.describe(), "candidates": sorted(["torch", *graphs])}
        key = hashlib.sha256(json.dumps(sig, sort_keys=True, default=str).encode()).hexdigest()[:24]
        with _CHOICES_LOCK:
            choice = _CHOICES.get(key) or _read_choice(key)
            if choice is None:
                runners = {"torch": self._torch, **{k: OrtEncoder(g) for k, g in graphs.items()}}
                size = (self.batch, 3, self.crop_size, self.crop_size)
                x = torch.rand(size, generator=torch.Generator().manual_seed(0))
                inputs = {k: x for k in runners}
                if self.plan.channels_last:
                    inputs["torch"] = x.contiguous(memory_format=torch.channels_last)
                seconds = measure({k: functools.partial(run, inputs[k]) for k, run in runners.items()})
                best = min(seconds, key=seconds.__getitem__)
                choice = RuntimeChoice(best, dtypes[best], "measurement",
                                       {k: round(v, 5) for k, v in seconds.items()}, self.batch, excluded)
                _write_choice(key, sig, choice)
                _CHOICES[key] = choice
                return choice, runners[choice.runtime]
            _CHOICES[key] = choice
        return choice, self._torch if choice.runtime == "torch" else OrtEncoder(graphs[choice.runtime])


def _choices_dir() -> Path:
    return encoders_dir() / "choices"


def _read_choice(key: str) -> RuntimeChoice | None:
    try:
        raw = json.loads((_choices_dir() / f"{key}.json").read_text(encoding="utf-8"))
        return RuntimeChoice(**raw["choice"])
    except (OSError, ValueError, TypeError, KeyError):
        return None  # no choice made here yet (or an unreadable one): measure again


def _write_choice(key: str, signature: dict[str, Any], choice: RuntimeChoice) -> None:
    text = json.dumps({"signature": signature, "choice": choice.describe()}, indent=1, default=str) + "\n"
    with contextlib.suppress(OSError):  # a read-only cache: the choice holds for this process
        atomic_write(_choices_dir() / f"{key}.json", lambda p: Path(p).write_text(text, encoding="utf-8"))


def recorded_choices() -> list[dict[str, Any]]:
    """The choices ``"auto"`` made on this machine (``facepcl info``): encoder, crop size, batch, runtime, seconds."""
    out = []
    for path in sorted(_choices_dir().glob("*.json")):
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            sig, choice = raw["signature"], raw["choice"]
            out.append({"encoder_sha256": sig["encoder_sha256"], "crop_size": sig["crop_size"], "batch": sig["batch"],
                        "onednn_max_cpu_isa": sig["onednn_max_cpu_isa"],
                        "runtime": choice["runtime"], "seconds": choice["seconds"]})
        except (OSError, ValueError, TypeError, KeyError):
            continue  # a damaged record is measured again when needed; nothing to show
    return out


__all__ = ["ENCODER_RUNTIMES", "MEASURE_BATCH", "EncoderRuntime", "RuntimeChoice", "check_runtime", "cpu_signature",
           "measure", "recorded_choices"]
