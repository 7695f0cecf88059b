"""Load and save models in the facepcl Hub format.

A model is a folder (local, or a Hugging Face Hub repository) holding
``config.json`` (:class:`facepcl.config.PCLConfig`), ``model.safetensors``
(our key names, see :mod:`facepcl.model._keymap`) and a model card ``README.md``.
Downloads go through huggingface_hub, so ``HF_HOME``, ``HF_HUB_CACHE``,
``HF_HUB_OFFLINE``, ``HF_ENDPOINT`` and ``HF_TOKEN`` behave as it documents.
Loading is strict: missing, unexpected or mis-shaped keys are an error that
names them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from . import registry
from ._utils.constants import COMPONENTS
from ._utils.device import resolve_device, resolve_dtype
from ._utils.validate import check_model_reference, check_weights
from ._utils.version import __version__
from .config import PCLConfig
from .errors import ModelLoadError
from .model import PCLModel
from .model._keymap import component_of
from .model._save import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME, model_card_text, push_to_hub, save_pretrained

_COMMIT_RE = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model's files were found.

    Attributes:
        model_id: What the user asked for, normalised (registry name, Hub id or folder).
        kind: "package", "hf-hub" or "local-dir".
        folder: Local folder that holds ``config.json`` and ``model.safetensors``.
        revision: Hub commit the files came from (None for local folders).
        repo_id: Hub repository id (None for local folders).
    """

    model_id: str
    kind: str
    folder: Path
    revision: str | None
    repo_id: str | None = None

    @property
    def config_path(self) -> Path:
        return self.folder / CONFIG_NAME

    @property
    def weights_path(self) -> Path:
        return self.folder / WEIGHTS_NAME


def default_model_name() -> str:
    """The model used when none is named: ``$FACEPCL_MODEL``, else the bundled ``pcl-demo``."""
    return os.environ.get("FACEPCL_MODEL") or registry.DEFAULT_MODEL


def resolve(name_or_path: str | os.PathLike | None = None, *, revision: str | None = None,
            cache_dir: str | os.PathLike | None = None, local_files_only: bool | None = None,
            token: str | bool | None = None, force_download: bool = False) -> ResolvedModel:
    """Find (and download if needed) the files of a model.

    Args:
        name_or_path: Registered name (see :func:`facepcl.list_models`),
            ``hf-hub:ORG/NAME`` or ``ORG/NAME``, ``local-dir:PATH`` or a folder
            path. None: :func:`default_model_name`.
        revision: Hub branch, tag or commit; overrides the registry's pin.
        cache_dir: Hub cache folder (default: huggingface_hub's).
        local_files_only: Never touch the network; None follows
            huggingface_hub (``HF_HUB_OFFLINE``).
        token: Hub token for private repositories.
        force_download: Download again even if cached.

    Returns:
        A :class:`ResolvedModel`.
    """
    name = str(name_or_path) if name_or_path is not None else default_model_name()
    kind, _, rest = name.partition(":")
    if kind in ("hf-hub", "local-dir", "package") and rest:
        info = registry.ModelInfo(name=name, source=name)
        kind, where = info.location()
    elif (info := registry.get_model_info(name)) is not None:
        kind, where = info.location()
        revision = revision or info.revision
        if kind != "hf-hub" and not os.path.isdir(where):
            hint = f" To get it: {info.how_to_get}." if info.how_to_get else ""
            raise ModelLoadError(f"model {name!r} is registered at {where}, but that folder does not exist."
                                 f"{hint}")
    elif os.path.isdir(os.path.expanduser(name)):
        kind, where = "local-dir", os.path.expanduser(name)
    elif re.fullmatch(r"[\w.\-]+/[\w.\-]+", name) and not os.path.exists(name):
        check_model_reference(name)  # "./folder", "../etc": a missing folder, not a Hub id
        kind, where = "hf-hub", name
    else:
        known = ", ".join(m.name for m in registry.list_models())
        raise ModelLoadError(f"model {name!r} is not a registered name ({known}), an existing folder or a Hub "
                             "id of the form ORG/NAME; check the spelling or the path")
    if kind == "hf-hub":
        return _resolve_hub(name, where, revision, cache_dir, local_files_only, token, force_download)
    folder = Path(where)
    for fname in (CONFIG_NAME, WEIGHTS_NAME):
        if not (folder / fname).is_file():
            raise ModelLoadError(f"model folder {folder} has no {fname}; a facepcl model folder holds "
                                 f"{CONFIG_NAME} and {WEIGHTS_NAME} (write one with save_pretrained or "
                                 "`facepcl convert`)")
    return ResolvedModel(name, kind, folder, None)


def _resolve_hub(name: str, repo_id: str, revision: str | None, cache_dir, local_files_only, token,
                 force_download: bool) -> ResolvedModel:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    kwargs = {"repo_id": repo_id, "revision": revision, "cache_dir": cache_dir, "token": token,
              "force_download": force_download, "library_name": "facepcl", "library_version": __version__}
    if local_files_only is not None:
        kwargs["local_files_only"] = local_files_only
    at = f"{repo_id}@{revision or 'main'}"
    paths = {}
    for fname in (CONFIG_NAME, WEIGHTS_NAME):
        try:
            paths[fname] = Path(hf_hub_download(filename=fname, **kwargs))
        except GatedRepoError as e:
            raise ModelLoadError(f"Hub repository {repo_id} is gated: accept its terms on the Hub and pass "
                                 "token= (or set HF_TOKEN)") from e
        except RepositoryNotFoundError as e:
            raise ModelLoadError(f"Hub repository {repo_id} was not found (or is private): check the id, or "
                                 "pass token= for a private repository") from e
        except RevisionNotFoundError as e:
            raise ModelLoadError(f"Hub repository {repo_id} has no revision {revision!r}: pass an existing "
                                 "branch, tag or commit") from e
        except LocalEntryNotFoundError as e:
            raise ModelLoadError(f"{fname} of {at} is not in the local cache and the Hub cannot be reached "
                                 "(offline, HF_HUB_OFFLINE=1 or local_files_only=True): run `facepcl download "
                                 f"{repo_id}` once while online, or point to a local folder") from e
        except EntryNotFoundError as e:
            raise ModelLoadError(f"Hub repository {at} has no {fname}: it is not a facepcl model "
                                 f"(expected {CONFIG_NAME} and {WEIGHTS_NAME})") from e
    folder = paths[CONFIG_NAME].parent
    if paths[WEIGHTS_NAME].parent != folder:
        raise ModelLoadError(f"{at}: {CONFIG_NAME} and {WEIGHTS_NAME} resolved to different snapshots "
                             f"({folder} and {paths[WEIGHTS_NAME].parent}); pin a commit with revision=")
    commit = folder.name if _COMMIT_RE.fullmatch(folder.name) else None
    return ResolvedModel(name, "hf-hub", folder, commit, repo_id)


def _parse_components(components: str | Iterable[str] | None, config: PCLConfig) -> list[str]:
    if components is None:
        return ["encoder"]
    if components == "all":
        return list(config.components)
    comps = [components] if isinstance(components, str) else list(components)
    bad = sorted(set(comps) - set(COMPONENTS))
    if bad:
        raise ValueError(f"unknown components {bad}; choose from {list(COMPONENTS)} or 'all'")
    return [c for c in COMPONENTS if c in comps or c == "encoder"]


def load(name_or_path: str | os.PathLike | None = None, *, revision: str | None = None,
         device: str | torch.device | None = None, dtype: str | torch.dtype | None = None,
         cache_dir: str | os.PathLike | None = None, local_files_only: bool | None = None,
         components: str | Iterable[str] | None = None, token: str | bool | None = None,
         force_download: bool = False) -> PCLModel:
    """Load a PCL model (its network only) from the Hub, a local folder, or a registered name.

    :func:`facepcl.load` is this plus task heads (``head=``); heads build on
    this module, never the reverse.

    Args:
        name_or_path: See :func:`resolve`. None loads ``$FACEPCL_MODEL`` or
            the bundled ``pcl-demo`` model.
        revision: Hub branch, tag or commit to pin.
        device: Torch device; None picks CUDA when available, else CPU.
        dtype: Parameter dtype (float32 default; "bf16"/"fp16" cast after loading).
        cache_dir: Hub cache folder.
        local_files_only: Never touch the network (None: huggingface_hub's default).
        components: Which parts to load besides the encoder: any of
            "face_head", "pose_head", "decoder", or "all". Inference needs
            only the encoder, which is the default.
        token: Hub token.
        force_download: Download again even if cached.

    Returns:
        A :class:`facepcl.PCLModel` in eval mode, with ``model.provenance``
        (model id, kind, revision, repo id, folder, config hash, components).

    Raises:
        ModelLoadError: The model cannot be found, or its weights do not
            match the network (the message lists the offending keys).
    """
    resolved = resolve(name_or_path, revision=revision, cache_dir=cache_dir,
                       local_files_only=local_files_only, token=token, force_download=force_download)
    return load_folder(resolved, device=device, dtype=dtype, components=components)


def load_folder(resolved: ResolvedModel | str | os.PathLike, *, device=None, dtype=None,
                components: str | Iterable[str] | None = None) -> PCLModel:
    """Load a model from a folder already on disk (strictly); see :func:`load`."""
    if not isinstance(resolved, ResolvedModel):
        resolved = resolve(f"local-dir:{resolved}")
    try:
        config = PCLConfig.from_json_file(resolved.config_path)
    except ValueError as e:
        raise ModelLoadError(str(e)) from e
    wanted = _parse_components(components, config)
    absent = [c for c in wanted if c not in config.components]
    if absent:
        raise ModelLoadError(f"{resolved.model_id}: asked for {absent}, but this model holds only "
                             f"{config.components} (config.json 'components')")
    model_config = PCLConfig.from_dict({**config.to_dict(), "components": wanted})
    with torch.device("meta"):  # the network's shapes, without allocating it
        expected = {k: tuple(v.shape) for k, v in PCLModel(model_config).state_dict().items()}
    state = _read_weights(resolved.weights_path, config, wanted, expected)
    check_weights(state, resolved.weights_path)  # dtypes and finiteness, once, naming the tensor
    model = PCLModel(model_config)
    model.load_state_dict(state, strict=True)
    model.provenance = {
        "model_id": resolved.model_id, "kind": resolved.kind, "revision": resolved.revision,
        "repo_id": resolved.repo_id, "folder": str(resolved.folder), "config_hash": config.hash(), "components": wanted,
    }
    model.eval()
    return model.to(device=resolve_device(device), dtype=resolve_dtype(dtype))


def _read_weights(path: Path, config: PCLConfig, wanted: list[str],
                  expected: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """The tensors of the ``wanted`` components, read only once their names and shapes (from the file's
    header) match ``expected``, so a file that does not fit its config.json is refused before reading it."""
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
            stray = sorted(k for k in keys if component_of(k) not in config.components)
            if stray:
                raise ModelLoadError(f"{path}: unexpected keys that belong to no component listed in "
                                     f"config.json {config.components}: {_few(stray)}")
            keys = [k for k in keys if component_of(k) in wanted]
            _check_state(expected, {k: tuple(f.get_slice(k).get_shape()) for k in keys}, path)
            return {k: f.get_tensor(k) for k in keys}
    except ModelLoadError:
        raise
    except Exception as e:  # safetensors raises its own error types for corrupt or truncated files
        raise ModelLoadError(f"{path}: not a readable safetensors file ({type(e).__name__}: {e}); the file is "
                             "corrupt or truncated: delete it, or load again with force_download=True") from e


def _check_state(expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]], path: Path) -> None:
    """Raise ModelLoadError unless the file's tensor names and shapes (``found``) are the network's (``expected``)."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = sorted(f"{k}: file {found[k]} vs model {expected[k]}"
                    for k in set(found) & set(expected) if tuple(found[k]) != tuple(expected[k]))
    problems = []
    if missing:
        problems.append(f"missing keys: {_few(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_few(unexpected)}")
    if shapes:
        problems.append(f"mis-shaped keys: {_few(shapes)}")
    if problems:
        raise ModelLoadError(f"{path}: weights do not match the PCL network of its config.json; "
                             + "; ".join(problems))


def _few(items: list[str], n: int = 8) -> str:
    shown = ", ".join(items[:n])
    return shown + (f", ... ({len(items) - n} more)" if len(items) > n else "")


def download(name_or_path: str, *, revision: str | None = None, cache_dir=None, token=None,
             force_download: bool = False) -> ResolvedModel:
    """Fill the cache with a model's files for later offline use (``facepcl download``)."""
    return resolve(name_or_path, revision=revision, cache_dir=cache_dir, token=token,
                   force_download=force_download, local_files_only=False)


__all__ = ["CARD_NAME", "CONFIG_NAME", "WEIGHTS_NAME", "ResolvedModel", "default_model_name", "download", "load",
           "load_folder", "model_card_text", "push_to_hub", "resolve", "save_pretrained"]
