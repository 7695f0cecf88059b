"""Convert the authors' PCL checkpoint (``best.pth``) to the facepcl format.

The official checkpoint is ``{'epoch': int, 'state_dict': OrderedDict}``
with every key prefixed ``module.``; a bare state dict, or one without the
prefix, is accepted too. It is read with ``torch.load(weights_only=True)``,
so no pickled code ever runs, in a child process bounded in time and
memory (a pickle can still be built to hang or exhaust its reader). Every
key, shape and value is checked against the official layout before anything
is written, and the output folder appears whole or not at all.
"""

from __future__ import annotations

import io
import os
import pickletools
import re
import secrets
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file

from ._utils.atomic import fsync_path
from ._utils.sandbox import ChildFailure, run_isolated
from ._utils.validate import check_weights
from .config import COMPONENTS, PCLConfig
from .errors import CheckpointError, ModelLoadError, OutputError
from .model import PCLModel
from .model._keymap import OFFICIAL_WRAPPER, component_of, official_to_ours, ours_to_official

OFFICIAL_SOURCE = ("Official PCL checkpoint by Liu et al. (CVPR 2023), github.com/DreamMr/PCL, trained on "
                   "VoxCeleb1 aligned face tracks; converted with `facepcl convert`.")
OFFICIAL_LICENSE = "unknown (the authors published no licence for code or weights)"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
#: Seconds the unpickling of a checkpoint may take (an official one takes about a second).
LOAD_TIMEOUT = 120.0


def official_layout() -> dict[str, tuple[int, ...]]:
    """Official key (without ``module.``) -> shape, for the full pretraining model at 64 px."""
    with torch.device("meta"):  # shapes only: nothing is allocated or initialised
        model = PCLModel(PCLConfig(components=list(COMPONENTS)))
    return {ours_to_official(k): tuple(v.shape) for k, v in model.state_dict().items()}


def read_official_checkpoint(path: str | os.PathLike, *, load_timeout: float = LOAD_TIMEOUT,
                             load_memory: int | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Read and check an official checkpoint, returning our state dict.

    The file is unpickled by ``torch.load(weights_only=True)`` in a child
    process (:func:`facepcl._utils.sandbox.run_isolated`) that is stopped
    after ``load_timeout`` seconds, may use at most ``load_memory`` bytes
    (Linux), and is killed on Ctrl-C; its tensors come back through a
    safetensors file.

    Args:
        path: The ``.pth`` file.
        load_timeout: Seconds the unpickling may take (an official checkpoint
            takes about one).
        load_memory: Bytes of memory the unpickling may use (None: 2 GiB plus
            eight times the file's size).

    Returns:
        ``(state_dict, info)``: tensors under facepcl key names, and
        ``{"epoch": int | None, "components": [...]}``.

    Raises:
        CheckpointError: The file is missing, truncated, holds pickled code,
            takes longer or more memory to unpickle than allowed, holds NaN,
            infinite or integer weights, or is not a PCL pretraining
            checkpoint (the message says what was found and what was expected).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file; pass the path of the official checkpoint (best.pth)")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path}: the file is empty; download the checkpoint again")
    budget = load_memory if load_memory is not None else (2 << 30) + 8 * size
    with tempfile.TemporaryDirectory(prefix="facepcl-convert-") as tmp:
        out = os.path.join(tmp, "state.safetensors")
        try:
            meta = run_isolated(_unpickle_checkpoint, (str(path), out), timeout=load_timeout, memory_limit=budget)
        except ChildFailure as e:
            raise CheckpointError(_diagnose(path, e, load_timeout, budget)) from None
        if "found" in meta:
            raise CheckpointError(f"{path}: found {meta['found']}; expected an official PCL checkpoint "
                                  "{'epoch': int, 'state_dict': {...}} or a bare state dict of tensors")
        stored = load_file(out)
    sd = {k: stored[k] for k in meta["keys"]}
    epoch = meta["epoch"]

    keys = [k[len(OFFICIAL_WRAPPER):] if k.startswith(OFFICIAL_WRAPPER) else k for k in sd]
    tensors = dict(zip(keys, sd.values(), strict=True))
    if len(tensors) != len(sd):
        raise CheckpointError(f"{path}: keys collide once the 'module.' prefix is removed")

    if any(k.startswith("linear_classifier.") for k in tensors):
        shape = tuple(tensors.get("linear_classifier.weight", torch.empty(0)).shape)
        raise CheckpointError(f"{path}: this is a linear-probe checkpoint written by the reference's linear "
                              f"evaluation (it has linear_classifier.weight {shape} next to a bare backbone); "
                              "expected the PCL pretraining checkpoint, whose keys start with "
                              "'module.encoder.', 'module.exp_fc.', 'module.pose_fc.' and 'module.decoder.'")

    layout = official_layout()
    unknown = sorted(k for k in tensors if k not in layout)
    if unknown:
        looks = ("these look like a bare backbone without the 'encoder.' prefix"
                 if any(k.startswith(("conv1.", "layer1.")) for k in unknown) else "they are not PCL keys")
        raise CheckpointError(f"{path}: {len(unknown)} keys are not part of the PCL layout ({looks}), e.g. "
                              f"{unknown[:6]}; expected keys such as 'module.encoder.conv1.0.weight' "
                              f"{layout['encoder.conv1.0.weight']} (see docs/architecture.md)")
    shapes = [f"{k}: found {tuple(v.shape)}, expected {layout[k]}"
              for k, v in tensors.items() if tuple(v.shape) != layout[k]]
    if shapes:
        raise CheckpointError(f"{path}: {len(shapes)} tensors have the wrong shape, e.g. {shapes[:4]}; this is "
                              "not the PCL network at 64 px")

    try:
        check_weights(sd, path)  # what facepcl.load would refuse later is refused now
    except ModelLoadError as e:
        raise CheckpointError(str(e)) from None
    state = {official_to_ours(k): v for k, v in tensors.items()}
    present = []
    for comp in COMPONENTS:
        need = {k for k in layout if component_of(official_to_ours(k)) == comp}
        have = {k for k in tensors if component_of(official_to_ours(k)) == comp}
        if have and have != need:
            raise CheckpointError(f"{path}: the {comp} is incomplete, missing {sorted(need - have)[:6]}"
                                  f" ({len(need - have)} keys)")
        if have:
            present.append(comp)
    if "encoder" not in present:
        raise CheckpointError(f"{path}: no encoder weights found (expected 'module.encoder.*' keys); "
                              f"found keys such as {sorted(tensors)[:6]}")
    return state, {"epoch": epoch, "components": present}


def _unpickle_checkpoint(path: str, out_file: str) -> dict:
    """In the child process: ``torch.load(weights_only=True)``, tensors to ``out_file``, the rest as plain values.

    Returns:
        ``{"keys": [...], "epoch": int | str | None}`` (the state dict's keys in
        order, its tensors written to ``out_file``), or ``{"found": "..."}``
        describing an object that is not a checkpoint. Only str, int and
        lists go back to the parent.
    """
    from safetensors.torch import save_file

    obj = torch.load(path, map_location="cpu", weights_only=True)
    epoch = None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        epoch, sd = obj.get("epoch"), obj["state_dict"]
    elif isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        sd = obj
    else:
        return {"found": f"a dict with keys {sorted(map(str, obj))[:8]}" if isinstance(obj, dict)
                else type(obj).__name__}
    odd = [str(k) for k, v in sd.items() if type(k) is not str or not isinstance(v, torch.Tensor)]
    if odd:
        return {"found": f"a state_dict whose entries {odd[:4]} are not named tensors"}
    tensors = {k: v.detach().contiguous() for k, v in sd.items()}
    try:
        save_file(tensors, out_file)
    except RuntimeError:  # tensors that share memory (views of one storage) are written as copies
        save_file({k: v.clone() for k, v in tensors.items()}, out_file)
    return {"keys": [str(k) for k in sd],
            "epoch": int(epoch) if type(epoch) is int else None if epoch is None else str(epoch)[:100]}


def _diagnose(path: Path, failure: ChildFailure, timeout: float, budget: int) -> str:
    """One line: what went wrong reading ``path``, and what to do."""
    head = f"{path}: cannot read it"
    if failure.kind == "timeout" and "start" in failure.detail:
        return (f"{head}: the process that reads it {failure.detail} (is the machine overloaded?); try again, or "
                "raise facepcl._utils.sandbox.START_TIMEOUT")
    if failure.kind == "timeout":
        return (f"{head}: unpickling {failure.detail}. An official checkpoint reads in about a second; a file that "
                "takes this long is a pickle built to hang its reader (a 'hash bomb') or not a checkpoint. If it is "
                "a genuine checkpoint on a slow disk, raise the limit: --load-timeout SECONDS (load_timeout=)")
    if failure.kind == "memory":
        limit = f"{budget / 2**30:.1f} GiB" if budget >= 2**30 else f"{budget / 2**20:.0f} MiB"
        return (f"{head}: unpickling needed more than the {limit} it may use and was stopped "
                f"({_torch_reason(failure.detail)}); a file that needs this much is built to exhaust memory or is "
                "not a checkpoint. If it is a genuine checkpoint, raise the limit: --load-memory GIB (load_memory=)")
    if failure.kind == "crashed":
        return f"{head}: the process that reads it died ({failure.detail}); the file is corrupt or built to crash it"
    message, shape = failure.detail, _file_shape(path)
    if "Unsupported global" in message or "GLOBAL" in message:
        why = ("it contains pickled Python objects other than tensors, which facepcl never executes; an official PCL "
               "checkpoint holds only tensors and an epoch number. Only if you trust the file's source, load it "
               "yourself with torch.load(weights_only=False), which can run arbitrary code, and torch.save its "
               "state_dict")
    elif shape == "pickle":
        why = ("it is pickled data that the safe tensor-only loader refuses (a raw Python pickle, or objects other "
               "than tensors), which facepcl never executes; an official PCL checkpoint is a PyTorch file of tensors "
               "and an epoch number")
    else:
        why = "it is truncated, corrupt or not a PyTorch checkpoint; download it again"
    return f"{head} ({_torch_reason(message)}): {why}"


def _torch_reason(message: str, limit: int = 300) -> str:
    """The specific reason in a torch.load error, on one line, without torch's advice.

    torch's weights-only errors wrap the reason in advice ("re-running with
    weights_only=False will likely succeed ...") whose trust caveat must not
    be shown cut off; facepcl gives its own advice instead, so only the
    reason's first sentence is kept.
    """
    kind, _, text = message.partition(": ")
    text = _ANSI.sub("", text)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    advice = ("Weights only load failed", "(1)", "(2)", "Check the documentation", "Please file an issue")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith(advice)]
    reason = " ".join(lines).split(". Please use", 1)[0].strip()
    if len(reason) > limit:
        reason = reason[:limit].rsplit(" ", 1)[0] + " ..."
    return f"{kind}: {reason}" if reason else kind


def _file_shape(path: Path, head: int = 1 << 20) -> str:
    """"zip" (torch.save's format), "pickle" (a raw pickle of any protocol, parsed without running it) or "other"."""
    with open(path, "rb") as f:
        data = f.read(head)
    if data.startswith(b"PK\x03\x04"):
        return "zip"
    ops = 0
    try:
        for op, _, _ in pickletools.genops(io.BytesIO(data)):
            ops += 1
            if op.name == "STOP":
                return "pickle"
    except ValueError:
        # Ends early (truncated), or bytes that are no pickle; a long pickle may go on past what was read.
        return "pickle" if ops and len(data) == head else "other"
    return "other"


def check_output_folder(out_dir: str | os.PathLike, overwrite: bool = False) -> None:
    """Refuse an output path that is a file, or a folder that already holds a model (unless ``overwrite``).

    Raises:
        OutputError: Naming the path and what to do.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out} is a file, not a folder; pass a folder path for the converted model")
    held = [n for n in ("config.json", "model.safetensors") if (out / n).exists()]
    if held and not overwrite:
        raise OutputError(f"{out} already holds a model ({', '.join(held)}); pass --overwrite (overwrite=True) "
                          "to replace it, or choose a new folder")


def convert_checkpoint(checkpoint: str | os.PathLike, out_dir: str | os.PathLike, *,
                       name: str = "pcl-vox-official", license: str = OFFICIAL_LICENSE,
                       source: str = OFFICIAL_SOURCE, overwrite: bool = False, load_timeout: float = LOAD_TIMEOUT,
                       load_memory: int | None = None) -> Path:
    """Convert an official PCL checkpoint to a facepcl model folder.

    Args:
        checkpoint: The official ``.pth`` file.
        out_dir: Folder to write ``config.json``, ``model.safetensors`` and
            ``README.md`` into.
        name: Model name written to the config.
        license: Licence written to the config and model card.
        source: Provenance written to the config and model card.
        overwrite: Replace a model already in ``out_dir`` (refused otherwise).
        load_timeout: Seconds the unpickling may take (see :func:`read_official_checkpoint`).
        load_memory: Bytes of memory the unpickling may use (see :func:`read_official_checkpoint`).

    Returns:
        The output folder; load it with ``facepcl.load(out_dir)``.

    Raises:
        CheckpointError: The checkpoint is not an official PCL checkpoint.
        OutputError: ``out_dir`` is a file, already holds a model, or cannot be
            written (a full disk); a failed write leaves no partial model there.
    """
    check_output_folder(out_dir, overwrite)
    state, info = read_official_checkpoint(checkpoint, load_timeout=load_timeout, load_memory=load_memory)
    epoch = f" (epoch {info['epoch']})" if info["epoch"] is not None else ""
    config = PCLConfig(components=info["components"], name=name, license=license,
                       source=f"{source} File: {Path(checkpoint).name}{epoch}.")
    model = PCLModel(config)
    model.load_state_dict(state, strict=True)
    return _write_model(model, Path(out_dir))


def _write_model(model: PCLModel, out: Path) -> Path:
    """Write the model into a hidden sibling folder, then move it into place: a failed write leaves nothing."""
    from .hub import save_pretrained

    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        save_pretrained(model, tmp)
        if not out.exists():
            os.rename(tmp, out)  # the folder appears whole
        else:  # an empty folder, or --overwrite: each file is replaced whole, the config last
            for name in sorted(os.listdir(tmp), key=lambda n: n == "config.json"):
                os.replace(tmp / name, out / name)
        fsync_path(str(out.parent), directory=True)
    except OSError as e:
        raise OutputError(f"{out}: cannot write the converted model ({e.strerror or e}); nothing was written "
                          "there. Check that the folder is writable and the disk has room, or choose another "
                          "folder") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
