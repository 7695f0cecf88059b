"""Checkpoints: atomic writes, full resume state, export to the facepcl Hub format.

A checkpoint (``OUTPUT_DIR/checkpoints/step-00001234.pt``) holds everything
a resumed run needs to continue exactly as an uninterrupted one: model,
optimizer, LR scheduler, grad scaler, DWA history, the running epoch sums,
the position (epoch, iteration, global step) and the RNG states of Python,
numpy and torch. It is written to a temporary file in the same folder and
renamed into place, so a crash never leaves half a checkpoint; the file
``latest`` names the newest one, and ``index.json`` records the size and
SHA-256 of every kept checkpoint (:func:`facepcl._utils.folders.file_record`).
Resuming verifies the newest checkpoint against that record and falls back
to the previous good one, with a warning naming the damaged one
(:meth:`CheckpointDir.load_latest`). Checkpoints hold only tensors and plain
Python values and are read with ``torch.load(weights_only=True)``.

A training holds :data:`LOCK_NAME` in its ``output_dir``
(:class:`facepcl._utils.folders.FolderLock`, see :func:`lock_output`), so
two trainings into one folder are refused.
"""

from __future__ import annotations

import json
import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._utils.atomic import atomic_write
from .._utils.folders import FolderLock, check_file, file_record
from .._utils.version import __version__
from ..errors import CheckpointError

FORMAT = "facepcl-train-1"
LATEST = "latest"
INDEX = "index.json"
LOCK_NAME = ".facepcl-train.lock"
log = logging.getLogger("facepcl.train")


def lock_output(output_dir: str | os.PathLike) -> FolderLock:
    """Hold the writer lock of a training's ``output_dir`` (release it when the training ends).

    Raises:
        FolderLockedError: Another training writes into the same folder (the message names it).
        OutputError: The folder cannot be created or written.
    """
    return FolderLock(output_dir, "training run", name=LOCK_NAME).acquire()


def atomic_write_text(path: Path, text: str) -> None:
    """Write a text file atomically (temporary file + rename)."""
    atomic_write(path, lambda p: Path(p).write_text(text, encoding="utf-8"))


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` atomically."""
    atomic_write(path, lambda p: torch.save(obj, p))


def rng_state() -> dict[str, Any]:
    """RNG states of Python, numpy (global) and torch (CPU and every CUDA device), as plain values."""
    version, state, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    out = {
        "python": {"version": version, "state": list(state), "gauss": gauss},
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


class CheckpointDir:
    """The checkpoints of one run.

    Args:
        folder: ``OUTPUT_DIR/checkpoints``.
        keep_last: Keep this many newest checkpoints (0: all).
    """

    def __init__(self, folder: str | os.PathLike, keep_last: int = 3) -> None:
        self.folder = Path(folder)
        self.keep_last = keep_last

    def path_for(self, global_step: int) -> Path:
        return self.folder / f"step-{global_step:08d}.pt"

    def all(self) -> list[Path]:
        """Existing checkpoints, oldest first."""
        return sorted(self.folder.glob("step-*.pt")) if self.folder.is_dir() else []

    def latest(self) -> Path | None:
        """The newest complete checkpoint (the one ``latest`` names, else the highest step)."""
        pointer = self.folder / LATEST
        if pointer.is_file():
            p = self.folder / pointer.read_text(encoding="utf-8").strip()
            if p.is_file():
                return p
        found = self.all()
        return found[-1] if found else None

    def records(self) -> dict[str, dict[str, Any]]:
        """``{file name: {"size", "sha256"}}`` of the checkpoints ``index.json`` records (empty if none)."""
        try:
            index = json.loads((self.folder / INDEX).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}  # no index (an older run), or a damaged one: the checkpoints are then checked by loading
        files = index.get("files") if isinstance(index, dict) else None
        return files if isinstance(files, dict) else {}

    def save(self, state: dict[str, Any], global_step: int) -> Path:
        """Write a checkpoint, record it in ``index.json``, point ``latest`` at it and prune old ones.

        Order: the checkpoint (atomic, fsynced), then the index with its size
        and SHA-256, then ``latest``; a crash in between leaves a checkpoint
        that is complete but unrecorded, which resuming checks by loading it.

        Raises:
            OSError: A write or fsync failed; ``latest`` still names the previous checkpoint.
        """
        path = self.path_for(global_step)
        atomic_save({"format": FORMAT, "facepcl_version": __version__, **state}, path)
        records = self.records()
        records[path.name] = file_record(path)
        if self.keep_last:
            for old in self.all()[:-self.keep_last]:
                if old != path:
                    records.pop(old.name, None)
        records = {k: v for k, v in records.items() if (self.folder / k).is_file()}
        atomic_write_text(self.folder / INDEX, json.dumps({"latest": path.name, "files": records}, indent=1) + "\n")
        atomic_write_text(self.folder / LATEST, path.name + "\n")
        if self.keep_last:
            for old in self.all()[:-self.keep_last]:
                if old != path:
                    old.unlink(missing_ok=True)
        return path

    def load_latest(self) -> tuple[Path, dict[str, Any]] | None:
        """The newest checkpoint that is intact, loaded; None when the folder holds none.

        Each candidate, newest first, is checked against its ``index.json``
        record (size and SHA-256) and loaded; one that fails is skipped with a
        warning naming it and the problem, and the previous one is tried.

        Raises:
            CheckpointError: Checkpoints exist but none is intact.
        """
        candidates = self.all()[::-1]
        newest = self.latest()
        if newest is not None and newest in candidates:  # what ``latest`` names first
            candidates.remove(newest)
            candidates.insert(0, newest)
        records = self.records()
        problems = []
        for path in candidates:
            problem = check_file(path, records[path.name]) if path.name in records else None
            if problem is None:
                try:
                    return path, load_checkpoint(path)
                except CheckpointError as e:
                    problem = str(e)
            problems.append(f"{path.name} ({problem})")
            log.warning("checkpoint %s is damaged (%s); falling back to the one before it", path, problem)
        if problems:
            raise CheckpointError(f"{self.folder}: no intact checkpoint to resume from: {'; '.join(problems)}; "
                                  "start a new output_dir, or set checkpoint.resume=never there")
        return None


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a training checkpoint (on the CPU).

    Raises:
        CheckpointError: The file is missing, unreadable or not a facepcl
            training checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: cannot read the checkpoint ({type(e).__name__}: {e}); it is corrupt or "
                              "not a facepcl training checkpoint; resume from an older one or start a new run") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a facepcl training checkpoint (format {FORMAT!r} expected); to load "
                              "official PCL weights use `facepcl convert`")
    return state


def export_model(model: torch.nn.Module, out_dir: str | os.PathLike, run_config: dict[str, Any],
                 position: dict[str, int]) -> Path:
    """Write a trained model in the Hub format (``config.json``, ``model.safetensors``, model card).

    Args:
        model: The :class:`facepcl.PCLModel` (all components; its BatchNorms
            may be the distributed variant, whose state is the same).
        out_dir: Target folder.
        run_config: The resolved run config as a dict (export settings and provenance).
        position: ``epoch``, ``iteration`` and ``global_step`` of the weights.

    Returns:
        The folder; ``facepcl.load(folder)`` reads it.
    """
    from ..config import PCLConfig, PreprocessConfig
    from ..hub import save_pretrained
    from ..model import PCLModel

    size = run_config["data"]["image_size"]
    exp = run_config["export"]
    preprocess = PreprocessConfig(**exp["preprocess"]) if exp.get("preprocess") else PreprocessConfig().resized(size)
    done = position["epoch"] - 1 if position["iteration"] == 0 else position["epoch"]
    provenance = (f"trained with `facepcl train` (facepcl {__version__}), seed {run_config['seed']}, "
                  f"{position['global_step']} iterations (epoch {done}); "
                  f"loss.pose_negatives={run_config['loss']['pose_negatives']}")
    source = f"{exp['source']}; {provenance}" if exp.get("source") else provenance
    m = run_config["model"]
    config = PCLConfig(input_size=size, components=["encoder", "face_head", "pose_head", "decoder"],
                       projection_hidden_dim=m["projection_hidden_dim"], projection_dim=m["projection_dim"],
                       decoder_dim=m["decoder_dim"], preprocess=preprocess, name=exp["name"],
                       license=exp["license"], source=source)
    plain = PCLModel(config)
    plain.load_state_dict(model.state_dict(), strict=True)
    return save_pretrained(plain, out_dir, config=config)


def export_checkpoint(checkpoint: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Export a training checkpoint to the Hub format so ``facepcl.load(out_dir)`` reads it.

    Args:
        checkpoint: A ``step-*.pt`` file written by ``facepcl train``.
        out_dir: Target folder.

    Returns:
        The folder.
    """
    from ..config import PCLConfig
    from ..model import PCLModel

    state = load_checkpoint(checkpoint)
    cfg = state["config"]
    m = cfg["model"]
    model = PCLModel(PCLConfig(input_size=cfg["data"]["image_size"],
                               components=["encoder", "face_head", "pose_head", "decoder"],
                               projection_hidden_dim=m["projection_hidden_dim"], projection_dim=m["projection_dim"],
                               decoder_dim=m["decoder_dim"]))
    model.load_state_dict(state["model"], strict=True)
    return export_model(model, out_dir, cfg, state["position"])
