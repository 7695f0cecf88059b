"""The fast inference path: one place that prepares the encoder and the detector network for speed.

Two modes (:data:`MODES`). ``mode="exact"`` is the model's own float32
modules, eager, NCHW (``FaceEmbedder(mode="exact")``, ``facepcl embed
--mode exact``). ``mode="fast"``, the pipeline's default (and an option of
the evaluation feature extraction; ``dtype=`` and ``compile=True`` refine
it), runs a *copy* of the network:

- in bfloat16 weights and activations where the hardware computes bf16
  natively (CUDA with bf16, or a CPU whose oneDNN has AVX512-BF16 or AMX;
  :func:`native_bf16`), otherwise in float32;
- in channels_last memory format (oneDNN's and cuDNN's fast convolutions);
- with BatchNorm folded into the preceding convolutions (detector, which
  stays float32 unless the detector's ``dtype`` is given: see :func:`detector_plan`),
  which on a CPU runs on ONNX Runtime (:mod:`facepcl.detection._onnx`);
- when asked for (``compile=True``), compiled with ``torch.compile`` (inductor, with weight freezing
  on the CPU so that convolutions and their activations fuse), with the
  batch dimension marked dynamic so that one compilation serves every batch
  size (a batch of one is padded to two, the smallest size a dynamic
  dimension covers).

Reduced precision changes the numbers, not the answers: the tests check
that bf16 and compiled embeddings of real faces keep a cosine similarity of
at least 0.999 with the float32 ones, and that detection finds the same
faces with boxes within a pixel. Features always come back as float32.

The copy is a snapshot of the weights. :class:`EncoderRunner` notices when
the model's parameters change in place (training, ``load_state_dict``) and
prepares a new copy at the next call.
"""

from __future__ import annotations

import copy
import functools
import itertools
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .._utils.device import resolve_dtype

#: The values of every ``mode=`` option.
MODES = ("fast", "exact")


def check_mode(mode: Any, where: str) -> None:
    """Raise ValueError naming ``where`` unless ``mode`` is one of :data:`MODES`."""
    if mode not in MODES:
        raise ValueError(f"{where}: mode must be one of {MODES}, got {mode!r}")


@functools.lru_cache(maxsize=8)
def _cpu_bf16() -> bool:
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` computes bfloat16 natively (CUDA with bf16; CPU with AVX512-BF16 or AMX via oneDNN)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if dev.type == "cpu":
        return _cpu_bf16()
    return False


@dataclass(frozen=True)
class Plan:
    """How a network runs.

    Attributes:
        dtype: Compute dtype of weights and activations.
        channels_last: Convolutions in channels_last memory format.
        compile: ``torch.compile`` the network.
    """

    dtype: torch.dtype = torch.float32
    channels_last: bool = False
    compile: bool = False

    @property
    def exact(self) -> bool:
        """The default path: the model's own float32 module, eager, NCHW."""
        return self.dtype == torch.float32 and not self.channels_last and not self.compile

    def describe(self) -> dict[str, Any]:
        """What the result metadata records."""
        return {"dtype": str(self.dtype).removeprefix("torch."), "channels_last": self.channels_last,
                "compile": self.compile}


def fast_dtype(device: torch.device | str) -> torch.dtype:
    """The dtype the fast path uses on ``device``: bfloat16 where native, else float32."""
    return torch.bfloat16 if native_bf16(device) else torch.float32


def encoder_plan(device: torch.device | str, *, mode: str = "exact", dtype: str | torch.dtype | None = None,
                 compile: bool = False) -> Plan:
    """Resolve the encoder options of the pipeline into a :class:`Plan`.

    Args:
        device: Where the encoder runs.
        mode: "exact" or "fast": bf16 where native (unless ``dtype`` says
            otherwise) and channels_last.
        dtype: Compute dtype; None: float32, or in the fast mode bf16 where native.
        compile: ``torch.compile`` the encoder (not implied by the fast mode:
            one compilation per process, worth it only when the encoder
            dominates a long run, e.g. aligned crops without detection).

    Returns:
        The plan. Anything but float32-eager runs channels_last.

    Raises:
        ValueError: ``mode`` is not one of :data:`MODES`.
    """
    check_mode(mode, "encoder_plan")
    fast = mode == "fast"
    dt = resolve_dtype(dtype) if dtype is not None else (fast_dtype(device) if fast else torch.float32)
    return Plan(dt, channels_last=dt != torch.float32 or compile or fast, compile=bool(compile))


def detector_plan(device: torch.device | str, *, mode: str = "exact",
                  dtype: str | torch.dtype | None = None) -> Plan:
    """The detector's plan: exact unless ``mode="fast"`` or a reduced ``dtype`` is asked for.

    The fast mode keeps float32 and runs a BatchNorm-folded, channels_last copy:
    its landmarks match the exact network's to float rounding. bf16 only
    when asked for (``dtype="bf16"``): its landmarks move by up to about a
    pixel, which turns the aligned crops enough to take a trained model's
    embeddings below the fast path's 0.999 cosine promise.

    The detector is never compiled: its input shapes vary with the image
    sizes (docs/benchmarks.md compares it with the folded eager network).

    Raises:
        ValueError: ``mode`` is not one of :data:`MODES`.
    """
    check_mode(mode, "detector_plan")
    dt = resolve_dtype(dtype) if dtype is not None else torch.float32
    return Plan(dt, channels_last=dt != torch.float32 or mode == "fast", compile=False)


def _weights_version(module: nn.Module) -> tuple:
    # In-place updates (optimizer steps, load_state_dict, .copy_) bump a tensor's version counter.
    return tuple((id(t), t._version) for t in (*module.parameters(), *module.buffers()))


def _compile_count_backend(counter: list[int], freeze: bool):
    """Inductor, counting its compilations (tests check that batch sizes do not recompile)."""
    from torch._inductor import config as inductor_config
    from torch._inductor.compile_fx import compile_fx

    def backend(gm: torch.fx.GraphModule, example_inputs: list[Any]):
        counter[0] += 1
        if not freeze:
            return compile_fx(gm, example_inputs)
        # Freezing turns the weights into constants, so oneDNN prepacks them and fuses conv + activation.
        with inductor_config.patch(freezing=True):
            return compile_fx(gm, example_inputs)

    return backend


class EncoderRunner:
    """Runs a PCL encoder as a :class:`Plan` says; returns float32 features.

    The exact plan calls the encoder itself (no copy). Any other plan
    prepares a copy (cast, channels_last, maybe compiled) on first use and
    again whenever the encoder's weights have changed since.

    Args:
        encoder: The model's :class:`~facepcl.model.PCLEncoder` (float32 or
            already in a reduced dtype, on ``device``).
        device: Where it runs.
        plan: How it runs.
    """

    def __init__(self, encoder: nn.Module, device: torch.device, plan: Plan) -> None:
        self.encoder = encoder
        self.device = torch.device(device)
        self.plan = plan
        self.compilations = [0]
        self._module: Any = None
        self._version: tuple | None = None

    def _prepare(self) -> None:
        module = copy.deepcopy(self.encoder).to(self.device).eval().requires_grad_(False)
        if self.plan.dtype != torch.float32:
            module = module.to(self.plan.dtype)
        if self.plan.channels_last:
            module = module.to(memory_format=torch.channels_last)
        if self.plan.compile:
            backend = _compile_count_backend(self.compilations, freeze=self.device.type == "cpu")
            module = torch.compile(module, backend=backend, dynamic=None)
        self._module = module
        self._version = _weights_version(self.encoder)

    def __call__(self, x: torch.Tensor):
        """Encode ``(B, 3, H, W)`` float network input; returns ``PCLFeatures`` of ``(B, D)`` float32."""
        from ..model import PCLFeatures

        if self.plan.exact:
            param_dtype = next(self.encoder.parameters()).dtype
            feats = self.encoder(x.to(param_dtype))
            return PCLFeatures(*(f.float() for f in feats))
        if self._module is None or _weights_version(self.encoder) != self._version:
            self._prepare()
        n = x.shape[0]
        x = x.to(self.device, self.plan.dtype)
        if self.plan.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.plan.compile:
            if n == 1:
                x = torch.cat([x, x])  # a dynamic dimension covers sizes >= 2; size 1 would compile again
            torch._dynamo.mark_dynamic(x, 0)
        feats = self._module(x)
        return PCLFeatures(*(f[:n].float() for f in feats))


def fold_batchnorm(net: nn.Module) -> nn.Module:
    """A copy of ``net`` (eval mode) with every BatchNorm2d that directly follows a Conv2d in a
    ``nn.Sequential`` folded into that convolution (and replaced by an identity).

    The folded network computes the same function up to float rounding; it
    saves one pass over every activation.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    net = copy.deepcopy(net).eval()
    for seq in [m for m in net.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for a, b in itertools.pairwise(names):
            conv, bn = seq._modules[a], seq._modules[b]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
                seq._modules[a] = fuse_conv_bn_eval(conv, bn)
                seq._modules[b] = nn.Identity()
    return net


class _Float32(nn.Module):
    """Runs a (float32) module on float32 inputs, whatever dtype they come in."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x.float())


def flip_input_channels(net: nn.Module) -> nn.Module:
    """Reverse the input channels of ``net``'s first 3-channel convolution, in place (BGR <-> RGB input).

    Returns:
        ``net``.

    Raises:
        ValueError: ``net`` has no convolution with 3 input channels.
    """
    for m in net.modules():
        if isinstance(m, nn.Conv2d) and m.in_channels == 3 and m.groups == 1:
            with torch.no_grad():
                m.weight.copy_(m.weight.flip(1))
            return net
    raise ValueError("the network has no convolution with 3 input channels to flip")


def prepare_detector_net(net: nn.Module, device: torch.device, plan: Plan,
                         keep_float32: tuple[str, ...] = ()) -> nn.Module:
    """The detector network for ``plan``: ``net`` itself when exact, else a folded, cast, channels_last copy.

    Args:
        net: The network (float32, eval mode).
        device: Where it runs.
        plan: How it runs.
        keep_float32: Names of child ``nn.ModuleList`` s (or modules) that stay
            float32 in a reduced-precision plan, their inputs cast up: the
            output heads, so that the scores' softmax and the box regressions
            keep float32 resolution (bf16 has steps of 0.004 near a score of
            1, which makes many anchors tie and NMS pick among them at random).

    Returns:
        A module with the same call signature.
    """
    if plan.exact:
        return net
    fast = fold_batchnorm(net).to(device).requires_grad_(False)
    if plan.dtype != torch.float32:
        kept = {name: getattr(fast, name) for name in keep_float32}
        fast = fast.to(plan.dtype)
        for name, module in kept.items():
            module.float()
            if isinstance(module, nn.ModuleList):
                for i, m in enumerate(module):
                    module[i] = _Float32(m)
            else:
                setattr(fast, name, _Float32(module))
    if plan.channels_last:
        fast = fast.to(memory_format=torch.channels_last)
    return fast


__all__ = ["MODES", "EncoderRunner", "Plan", "check_mode", "detector_plan", "encoder_plan", "fast_dtype",
           "flip_input_channels", "fold_batchnorm", "native_bf16", "prepare_detector_net"]
