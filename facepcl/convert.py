"""Convert the authors' PCL checkpoint (``best.pth``) to the facepcl format.

The official checkpoint is ``{'epoch': int, 'state_dict': OrderedDict}``
with every key prefixed ``module.``; a bare state dict, or one without the
prefix, is accepted too. It is read with ``torch.load(weights_only=True)``,
so no pickled code ever runs. Every key and shape is checked against the
official layout before anything is written.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch

from .config import COMPONENTS, PCLConfig
from .errors import CheckpointError, OutputError
from .model import PCLModel
from .model._keymap import OFFICIAL_WRAPPER, component_of, official_to_ours, ours_to_official

OFFICIAL_SOURCE = ("Official PCL checkpoint by Liu et al. (CVPR 2023), github.com/DreamMr/PCL, trained on "
                   "VoxCeleb1 aligned face tracks; converted with `facepcl convert`.")
OFFICIAL_LICENSE = "unknown (the authors published no licence for code or weights)"


def official_layout() -> dict[str, tuple[int, ...]]:
    """Official key (without ``module.``) -> shape, for the full pretraining model at 64 px."""
    model = PCLModel(PCLConfig(components=list(COMPONENTS)))
    return {ours_to_official(k): tuple(v.shape) for k, v in model.state_dict().items()}


def read_official_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """Read and check an official checkpoint, returning our state dict.

    Args:
        path: The ``.pth`` file.

    Returns:
        ``(state_dict, info)``: tensors under facepcl key names, and
        ``{"epoch": int | None, "components": [...]}``.

    Raises:
        CheckpointError: The file is missing, truncated, holds pickled code,
            or is not a PCL pretraining checkpoint (the message says what
            was found and what was expected).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file; pass the path of the official checkpoint (best.pth)")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the file is empty; download the checkpoint again")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        if "Unsupported global" in str(e) or "GLOBAL" in str(e):
            why = ("it contains pickled Python objects other than tensors, which facepcl never executes; "
                   "an official PCL checkpoint holds only tensors and an epoch number")
        elif isinstance(e, pickle.UnpicklingError) and _starts_like_pickle(path) and "truncated" not in str(e):
            why = ("it is pickled data that the safe tensor-only loader refuses (a raw Python pickle, or objects "
                   "other than tensors), which facepcl never executes; an official PCL checkpoint is a PyTorch "
                   "file of tensors and an epoch number")
        else:
            why = "it is truncated, corrupt or not a PyTorch checkpoint; download it again"
        raise CheckpointError(f"{path}: cannot read it ({type(e).__name__}: {str(e)[:300]}): {why}") from e

    epoch = None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        epoch = obj.get("epoch")
        sd = obj["state_dict"]
    elif isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        sd = obj
    else:
        found = f"a dict with keys {sorted(map(str, obj))[:8]}" if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{path}: found {found}; expected an official PCL checkpoint "
                              "{'epoch': int, 'state_dict': {...}} or a bare state dict of tensors")

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


def _starts_like_pickle(path: Path) -> bool:
    """Whether a file begins with a pickle protocol marker (a raw pickle, not torch.save's zip archive)."""
    with open(path, "rb") as f:
        return f.read(1) == b"\x80"


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
                       source: str = OFFICIAL_SOURCE, overwrite: bool = False) -> Path:
    """Convert an official PCL checkpoint to a facepcl model folder.

    Args:
        checkpoint: The official ``.pth`` file.
        out_dir: Folder to write ``config.json``, ``model.safetensors`` and
            ``README.md`` into.
        name: Model name written to the config.
        license: Licence written to the config and model card.
        source: Provenance written to the config and model card.
        overwrite: Replace a model already in ``out_dir`` (refused otherwise).

    Returns:
        The output folder; load it with ``facepcl.load(out_dir)``.

    Raises:
        CheckpointError: The checkpoint is not an official PCL checkpoint.
        OutputError: ``out_dir`` is a file, already holds a model, or cannot be written.
    """
    check_output_folder(out_dir, overwrite)
    state, info = read_official_checkpoint(checkpoint)
    epoch = f" (epoch {info['epoch']})" if info["epoch"] is not None else ""
    config = PCLConfig(components=info["components"], name=name, license=license,
                       source=f"{source} File: {Path(checkpoint).name}{epoch}.")
    model = PCLModel(config)
    model.load_state_dict(state, strict=True)
    from .hub import save_pretrained

    try:
        return save_pretrained(model, out_dir)
    except OSError as e:
        raise OutputError(f"cannot write the model to {out_dir} ({e.strerror or e}); check that the folder is "
                          "writable and the disk has room") from e
